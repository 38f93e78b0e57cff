"""The torch backend's convolution and pooling: torch's own kernels, called after softgrad's checks.

Forward: ``torch.nn.functional.conv2d``/``max_pool2d``/``avg_pool2d``. Backward, without autograd (the
backend's arrays never require grad): ``aten.convolution_backward`` (the input, weight and bias gradients
in one call, each only where asked for), ``aten.max_pool2d_with_indices_backward`` on the indices of a
recomputed forward, and ``aten.avg_pool2d_backward``. The arguments are checked by
:mod:`softgrad.numerics.conv_args` first, so an error reads as on every other backend.
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics import conv_args


def conv2d(be: Any, x, weight, bias, options: dict[str, Any]):
    conv_args.check_arrays(be, "conv2d", x=x, weight=weight, bias=bias)
    geometry = conv_args.conv_geometry("conv2d", x, weight, options)
    conv_args.check_bias("conv2d", x, bias, geometry.out_channels)
    window = geometry.window
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
    return be.torch.ops.aten.convolution_backward(
        dy, x, weight, [geometry.out_channels] if need_bias else None, list(window.stride),
        list(window.padding), list(window.dilation), False, [0, 0], geometry.groups, [need_dx, True, need_bias])


def _window(be: Any, op: str, x, pool: tuple) -> conv_args.Window:
    conv_args.check_arrays(be, op, x=x)
    return conv_args.pool_window(op, conv_args.check_image(op, "x", x), *pool)


def pool(be: Any, op: str, x, pool: tuple):
    window = _window(be, op, x, pool)
    function = getattr(be.torch.nn.functional, op)
    return function(x, window.kernel, window.stride, window.padding)


def max_pool_backward(be: Any, x, dy, pool: tuple):
    op = "max_pool2d_backward"
    window = _window(be, op, x, pool)
    conv_args.check_arrays(be, op, dy=dy)
    conv_args.check_grad(op, x, dy, (*conv_args.shape_of(x)[:2], *window.out))
    aten = be.torch.ops.aten
    geometry = (list(window.kernel), list(window.stride), list(window.padding), [1, 1], False)
    _, indices = aten.max_pool2d_with_indices(x, *geometry)
    return aten.max_pool2d_with_indices_backward(dy, x, *geometry, indices)


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
