"""The JAX backend's convolution and pooling: XLA's own kernels, compiled once per geometry.

``lax.conv_general_dilated`` (NCHW/OIHW) and ``lax.reduce_window``; each backward is the ``jax.vjp`` of its
forward (the convolution's transposes, XLA's select-and-scatter for max pooling, which keeps the first
maximum of a window on ties, as torch's CPU kernel does). The geometry is static, the arrays traced, so a
layer compiles once per shape. The backend checks the arguments (:mod:`softgrad.numerics.conv_args`) first.
"""

from __future__ import annotations

import functools

import numpy as np
from softgrad.numerics.conv_args import ConvGeometry, Window


@functools.cache
def _jax():
    import jax

    return jax


@functools.cache
def _jit(function, static: tuple[str, ...]):
    return _jax().jit(function, static_argnames=static)


def _conv(x, weight, *, window: Window, groups: int):
    lax = _jax().lax
    return lax.conv_general_dilated(
        x, weight, window.stride, [(p, p) for p in window.padding], rhs_dilation=window.dilation,
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups,
        precision=lax.Precision.HIGHEST)  # no TF32 on a GPU: the results match torch's float32


def _conv_forward(x, weight, bias, *, window: Window, groups: int):
    y = _conv(x, weight, window=window, groups=groups)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def _conv_backward(x, weight, dy, *, window: Window, groups: int, need_dx: bool, need_bias: bool):
    jax = _jax()
    if need_dx:
        _, pull = jax.vjp(lambda a, w: _conv(a, w, window=window, groups=groups), x, weight)
        dx, dweight = pull(dy)
    else:
        _, pull = jax.vjp(lambda w: _conv(x, w, window=window, groups=groups), weight)
        dx, (dweight,) = None, pull(dy)
    dbias = dy.sum(axis=(0, 2, 3)) if need_bias else None
    return dx, dweight, dbias


def conv2d(x, weight, bias, geometry: ConvGeometry):
    return _jit(_conv_forward, ("window", "groups"))(x, weight, bias, window=geometry.window,
                                                    groups=geometry.groups)


def conv2d_backward(x, weight, dy, geometry: ConvGeometry, need_dx: bool, need_bias: bool):
    return _jit(_conv_backward, ("window", "groups", "need_dx", "need_bias"))(
        x, weight, dy, window=geometry.window, groups=geometry.groups, need_dx=need_dx, need_bias=need_bias)


def _pool(x, *, window: Window, kind: str):
    jax = _jax()
    lax, jnp = jax.lax, jax.numpy
    dims, strides = (1, 1, *window.kernel), (1, 1, *window.stride)
    pads = ((0, 0), (0, 0), *((p, p) for p in window.padding))
    # NumPy constants: JAX recognises a max (add) with a concrete -inf (0) start as the differentiable
    # reduce_window_max (_sum) primitive; a traced start is not differentiable
    if kind == "max":
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, strides, pads)
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, strides, pads)
    return total / jnp.array(window.taps, x.dtype)


def _pool_backward(x, dy, *, window: Window, kind: str):
    _, pull = _jax().vjp(lambda a: _pool(a, window=window, kind=kind), x)
    return pull(dy)[0]


def _avg_pool_backward(dy, *, window: Window, x_shape: tuple[int, ...]):
    zeros = _jax().numpy.zeros(x_shape, dy.dtype)  # the pooling is linear: any primal gives the same pullback
    return _pool_backward(zeros, dy, window=window, kind="avg")


def pool(x, window: Window, kind: str):
    return _jit(_pool, ("window", "kind"))(x, window=window, kind=kind)


def max_pool_backward(x, dy, window: Window):
    return _jit(_pool_backward, ("window", "kind"))(x, dy, window=window, kind="max")


def avg_pool_backward(x_shape: tuple[int, ...], dy, window: Window):
    return _jit(_avg_pool_backward, ("window", "x_shape"))(dy, window=window, x_shape=tuple(x_shape))
