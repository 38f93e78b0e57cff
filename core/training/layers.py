"""Layers: each forward beside its hand-written backward, calling only documented ``be.*`` members
(the Backend protocol and its hooks, :mod:`softgrad.numerics.hooks`).

A forward returns its output and what its backward needs (the cache); a
backward takes the cache and the gradient of the loss with respect to the
output, and returns the gradient with respect to the input (and, for the
dense layer, its parameters).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from softgrad.numerics.hooks import BackendHooks
from softgrad.numerics.protocol import Array, Backend

# ---- dense: y = x W + b ---------------------------------------------------------------


def dense_forward(be: Backend, x: Array, weight: Array, bias: Array) -> Array:
    return be.affine(x, weight, bias)


def dense_relu_forward(be: BackendHooks, x: Array, weight: Array, bias: Array) -> Array:
    """``relu(x W + b)``, the bias and the ReLU fused where the backend can (the hook ``be.affine_relu``); its backward is
    :meth:`ReLU.backward` then :func:`dense_backward`."""
    return be.affine_relu(x, weight, bias)


def dense_backward(be: Backend, x: Array, weight: Array, dy: Array, need_dx: bool = True, dbias: Array | None = None):
    """``(dx, dW, db)``: ``dW = x^T dy``, ``db = sum_rows dy`` (unless given, as
    :meth:`ReLU.bias_backward` gives it), ``dx = dy W^T``."""
    dweight = be.matmul(x.T, dy)
    if dbias is None:
        dbias = be.sum(dy, axis=0)
    dx = be.matmul(dy, weight.T) if need_dx else None
    return dx, dweight, dbias


# ---- activations: each caches its output, which is all its backward needs ---------------


class ReLU:
    name = "relu"

    def forward(self, be: Backend, z: Array) -> Array:
        return be.maximum(z, 0.0)

    def backward(self, be: BackendHooks, h: Array, dh: Array) -> Array:
        # dh is the fresh product dy W^T, free to overwrite (the hook); the subgradient at 0 is 0, as in PyTorch
        return be.relu_backward_inplace(h, dh)

    def bias_backward(self, be: BackendHooks, h: Array, dh: Array) -> tuple[Array, Array]:
        """``(backward(h, dh), its column sums)``: the sums are the bias gradient of the dense layer
        before the ReLU, in the same pass where the backend can (``be.relu_bias_backward``)."""
        return be.relu_bias_backward(h, dh)


class LeakyReLU:
    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        if not 0.0 < negative_slope < 1.0:
            raise ValueError(f"leaky_relu: negative_slope must lie in (0, 1), got {negative_slope}")
        self.negative_slope = float(negative_slope)  # a NumPy float64 would promote float32 activations

    def forward(self, be: Backend, z: Array) -> Array:
        return be.maximum(z, self.negative_slope * z)  # equals z where z > 0, slope * z elsewhere

    def backward(self, be: Backend, h: Array, dh: Array) -> Array:
        # h > 0 exactly where z > 0, since the slope is positive
        return be.where(h > 0, dh, self.negative_slope * dh)


class Sigmoid:
    name = "sigmoid"

    def forward(self, be: Backend, z: Array) -> Array:
        # through tanh, which neither overflows nor loses precision for large |z|
        return (be.tanh(z * 0.5) + 1.0) * 0.5

    def backward(self, be: Backend, h: Array, dh: Array) -> Array:
        return dh * h * (1.0 - h)


class Tanh:
    name = "tanh"

    def forward(self, be: Backend, z: Array) -> Array:
        return be.tanh(z)

    def backward(self, be: Backend, h: Array, dh: Array) -> Array:
        return dh * (1.0 - h * h)


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def make_activation(name: str) -> Any:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


# ---- initialisation ----------------------------------------------------------------------


def init_dense(rng: np.random.Generator, fan_in: int, fan_out: int, scheme: str, dtype) -> tuple:
    """Weights ``(fan_in, fan_out)`` and zero biases, on the host.

    ``"he"``: normal with std ``sqrt(2 / fan_in)`` (He et al. 2015), for the
    ReLU family. ``"glorot"``: uniform on ``+-sqrt(6 / (fan_in + fan_out))``
    (Glorot & Bengio 2010), for sigmoid, tanh and the output layer.
    """
    if scheme == "he":
        weight = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
    elif scheme == "glorot":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    else:
        raise ValueError(f"unknown initialisation {scheme!r}; use 'he' or 'glorot'")
    return weight.astype(dtype), np.zeros(fan_out, dtype=dtype)
