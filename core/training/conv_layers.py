"""Convolutional layers: each forward beside its hand-written backward, calling only ``be.*`` members (the
Backend protocol and its hooks: ``be.conv2d``, ``be.conv2d_backward``, ``be.max_pool2d``, ...), as
:mod:`softgrad.training.layers` does for the dense layer.

Arrays are NCHW. A forward returns its output and what its backward needs (the cache); a backward takes the
cache and the gradient of the loss with respect to the output, and returns the gradient with respect to the
input (None where it is not needed) and the layer's parameter gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

from softgrad.numerics.hooks import BackendHooks as Backend  # the conv and pooling operations are hooks
from softgrad.numerics.protocol import Array


@dataclass(frozen=True)
class ConvOptions:
    """A convolution's geometry, as ``torch.nn.Conv2d`` takes it (square kernels, one value per option)."""

    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def keywords(self) -> dict[str, int]:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}


# ---- convolution: y = conv2d(x, W) + b ---------------------------------------------------------


def conv_forward(be: Backend, x: Array, weight: Array, bias: Array, options: ConvOptions) -> Array:
    return be.conv2d(x, weight, bias, **options.keywords())


def conv_backward(be: Backend, x: Array, weight: Array, dy: Array, options: ConvOptions,
                  need_dx: bool = True) -> tuple[Array | None, Array, Array]:
    """``(dx, dW, db)``: the input gradient (None unless ``need_dx``), the weight gradient (the correlation of
    ``x`` with ``dy``) and the bias gradient (``dy`` summed over N, H, W)."""
    dx, dweight, dbias = be.conv2d_backward(x, weight, dy, need_dx=need_dx, need_bias=True, **options.keywords())
    return dx, dweight, dbias


# ---- pooling ------------------------------------------------------------------------------------


def max_pool_forward(be: Backend, x: Array, kernel: int, stride: int | None) -> Array:
    return be.max_pool2d(x, kernel, stride)


def max_pool_backward(be: Backend, x: Array, dy: Array, kernel: int, stride: int | None) -> Array:
    """The gradient goes to each window's maximum (the first in row-major order on ties, as torch's CPU
    kernel); the backend recomputes the argmax from ``x``."""
    return be.max_pool2d_backward(x, dy, kernel, stride)


def avg_pool_forward(be: Backend, x: Array, kernel: int, stride: int | None) -> Array:
    return be.avg_pool2d(x, kernel, stride)


def avg_pool_backward(be: Backend, x_shape: tuple[int, ...], dy: Array, kernel: int, stride: int | None) -> Array:
    """Each window's gradient shared evenly among its ``kernel * kernel`` inputs."""
    return be.avg_pool2d_backward(tuple(x_shape), dy, kernel, stride)


# ---- flatten: (N, C, H, W) -> (N, C*H*W), in torch's x.flatten(1) order ----------------------------


def flatten_forward(be: Backend, x: Array) -> Array:
    n = x.shape[0]
    features = 1
    for size in x.shape[1:]:
        features *= int(size)
    return be.reshape(x, (n, features))


def flatten_backward(be: Backend, x_shape: tuple[int, ...], dy: Array) -> Array:
    return be.reshape(dy, tuple(x_shape))


# ---- images in: flat rows (N, H*W) or (N, H*W*C) to NCHW --------------------------------------------


def rows_to_images(be: Backend, x: Array, input_shape: tuple[int, ...]) -> Array:
    """The training loop's flat rows as NCHW images: grey ``(H, W)`` rows reshape to ``(N, 1, H, W)``; colour
    ``(H, W, C)`` rows (HWC-flattened, as the data sets give CIFAR-10) reshape to NHWC and permute to NCHW."""
    n = x.shape[0]
    if len(input_shape) == 2:
        return be.reshape(x, (n, 1, *input_shape))
    return be.permute_dims(be.reshape(x, (n, *input_shape)), (0, 3, 1, 2))


__all__ = ["ConvOptions", "avg_pool_backward", "avg_pool_forward", "conv_backward", "conv_forward",
           "flatten_backward", "flatten_forward", "max_pool_backward", "max_pool_forward", "rows_to_images"]
