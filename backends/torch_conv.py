"""The torch backend's convolution and pooling: torch's own kernels, called after softgrad's checks.

Forward: ``torch.nn.functional.conv2d``/``max_pool2d``/``avg_pool2d``. Backward, without autograd (the
backend's arrays never require grad): ``aten.convolution_backward`` (the input, weight and bias gradients
in one call, each only where asked for), ``aten.max_pool2d_with_indices_backward`` and
``aten.avg_pool2d_backward``. The max-pool backward needs the forward's winners: it reuses those of the last
forward on the very same tensor when torch's version counter says the tensor has not been written since
(measured: recomputing them was 2 ms of a 2.6 ms backward at LeNet's first pool, batch 64, one thread), and
recomputes them otherwise, so the result is the same either way. On a GPU, float32 convolutions run in full
float32 (cuDNN's default is TF32, about three decimal digits), as on every other backend and as the conformance
kit checks them; that switch is unverified here, where there is no GPU. The arguments are checked by
:mod:`softgrad.numerics.conv_args` first, so an error reads as on every other backend.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from softgrad.numerics import conv_args

_KEPT = 16  # winners kept per backend: a few networks' pooling layers


def _full_float32(be: Any, x) -> contextlib.AbstractContextManager:
    """cuDNN without TF32 for the call (its other settings as they are); nothing to change on the CPU."""
    if not x.is_cuda:
        return contextlib.nullcontext()
    cudnn = be.torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, benchmark_limit=cudnn.benchmark_limit,
                       deterministic=cudnn.deterministic, allow_tf32=False, fp32_precision=cudnn.fp32_precision,
                       depthwise_kernel=getattr(cudnn, "depthwise_kernel", "auto"))


def conv2d(be: Any, x, weight, bias, options: dict[str, Any]):
    conv_args.check_arrays(be, "conv2d", x=x, weight=weight, bias=bias)
    geometry = conv_args.conv_geometry("conv2d", x, weight, options)
    conv_args.check_bias("conv2d", x, bias, geometry.out_channels)
    window = geometry.window
    with _full_float32(be, x):
        return be.torch.nn.functional.conv2d(x, weight, bias, window.stride, window.padding, window.dilation,
                                             geometry.groups)


def conv2d_backward(be: Any, arrays: tuple, options: dict[str, Any], needs: tuple[bool, bool]):
    op = "conv2d_backward"
    x, weight, dy = arrays
    conv_args.check_arrays(be, op, x=x, weight=weight, dy=dy)
    geometry = conv_args.conv_geometry(op, x, weight, options)
    conv_args.check_grad(op, x, dy, geometry.out_shape)
    need_dx, need_bias = needs
    window = geometry.window
    with _full_float32(be, x):
        return be.torch.ops.aten.convolution_backward(
            dy, x, weight, [geometry.out_channels] if need_bias else None, list(window.stride),
            list(window.padding), list(window.dilation), False, [0, 0], geometry.groups,
            [need_dx, True, need_bias])


def _window(be: Any, op: str, x, pool: tuple) -> conv_args.Window:
    conv_args.check_arrays(be, op, x=x)
    return conv_args.pool_window(op, conv_args.check_image(op, "x", x), *pool)


def pool(be: Any, op: str, x, pool: tuple):
    window = _window(be, op, x, pool)
    if op == "max_pool2d":
        y, winners = be.torch.ops.aten.max_pool2d_with_indices(x, *_max_pool_geometry(window))
        _remember(be, x, window, winners)
        return y
    return be.torch.nn.functional.avg_pool2d(x, window.kernel, window.stride, window.padding)


def _max_pool_geometry(window: conv_args.Window) -> tuple:
    return list(window.kernel), list(window.stride), list(window.padding), [1, 1], False


def _remember(be: Any, x, window: conv_args.Window, winners) -> None:
    kept = be.__dict__.setdefault("_max_pool_winners", {})
    if len(kept) >= _KEPT:
        kept.pop(next(iter(kept)))  # the oldest
    kept[id(x)] = (weakref.ref(x), x._version, window, winners)


def _recall(be: Any, x, window: conv_args.Window):
    """The winners of the last forward on ``x`` itself with this window, if ``x`` was not written since."""
    entry = be.__dict__.get("_max_pool_winners", {}).get(id(x))
    if entry is None or entry[0]() is not x or entry[1] != x._version or entry[2] != window:
        return None
    return entry[3]


def max_pool_backward(be: Any, x, dy, pool: tuple):
    op = "max_pool2d_backward"
    window = _window(be, op, x, pool)
    conv_args.check_arrays(be, op, dy=dy)
    conv_args.check_grad(op, x, dy, (*conv_args.shape_of(x)[:2], *window.out))
    aten = be.torch.ops.aten
    winners = _recall(be, x, window)
    if winners is None:
        winners = aten.max_pool2d_with_indices(x, *_max_pool_geometry(window))[1]
    return aten.max_pool2d_with_indices_backward(dy, x, *_max_pool_geometry(window), winners)


def avg_pool_backward(be: Any, x_shape, dy, pool: tuple):
    op = "avg_pool2d_backward"
    shape = conv_args.check_x_shape(op, x_shape)
    window = conv_args.pool_window(op, shape, *pool)
    conv_args.check_arrays(be, op, dy=dy)
    conv_args.check_image(op, "dy", dy)
    conv_args.check_grad(op, dy, dy, (*shape[:2], *window.out))
    like = dy.new_empty(shape)  # only its shape and layout are read
    return be.torch.ops.aten.avg_pool2d_backward(dy, like, list(window.kernel), list(window.stride),
                                                 list(window.padding), False, True, None)
