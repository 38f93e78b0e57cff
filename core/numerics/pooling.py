"""max_pool2d, avg_pool2d and their backward, written once on the array API (strided windows).

The defaults of the hooks of those names (:class:`softgrad.numerics.hooks.BackendHooks` documents them).
Max pooling pads with ``-inf`` (padded entries never win) and its backward recomputes the argmax of each
window from ``x``; ``argmax`` returns the first maximum, which is torch's tie rule (the first entry of the
window in row-major order). Average pooling counts the padding (torch's ``count_include_pad=True``).
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics import conv_args as args
from softgrad.numerics.windows import col2im, crop, pad, window_slices

Array = Any


def _padded_size(shape: tuple[int, ...], window: args.Window) -> tuple[int, int]:
    return shape[2] + 2 * window.padding[0], shape[3] + 2 * window.padding[1]


def _max_windows(be: Any, op: str, x: Array, kernel_size: Any, stride: Any, padding: Any):
    args.check_arrays(be, op, x=x)
    shape = args.check_image(op, "x", x)
    window = args.pool_window(op, shape, kernel_size, stride, padding)
    xp = be.xp
    return window, xp.stack(window_slices(xp, pad(xp, x, window.padding, -float("inf")), window), axis=2)


def max_pool2d(be: Any, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
    """The default of ``be.max_pool2d``."""
    _, windows = _max_windows(be, "max_pool2d", x, kernel_size, stride, padding)
    return be.xp.max(windows, axis=2)


def max_pool2d_backward(be: Any, x: Array, dy: Array, kernel_size: Any, stride: Any = None,
                        padding: Any = 0) -> Array:
    """The default of ``be.max_pool2d_backward``."""
    op = "max_pool2d_backward"
    window, windows = _max_windows(be, op, x, kernel_size, stride, padding)
    args.check_arrays(be, op, dy=dy)
    args.check_grad(op, x, dy, (*args.shape_of(x)[:2], *window.out))
    xp = be.xp
    winner = xp.argmax(windows, axis=2)  # (N, C, Ho, Wo): the first maximum of each window
    zero = xp.zeros_like(dy)
    taps = [xp.where(winner == k, dy, zero) for k in range(window.taps)]
    shape = args.shape_of(x)
    return crop(col2im(xp, taps, window, _padded_size(shape, window)), window.padding, shape[2:])


def avg_pool2d(be: Any, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
    """The default of ``be.avg_pool2d``."""
    args.check_arrays(be, "avg_pool2d", x=x)
    shape = args.check_image("avg_pool2d", "x", x)
    window = args.pool_window("avg_pool2d", shape, kernel_size, stride, padding)
    xp = be.xp
    total = None
    for tap in window_slices(xp, pad(xp, x, window.padding), window):
        total = tap if total is None else total + tap
    return total / window.taps


def avg_pool2d_backward(be: Any, x_shape: Any, dy: Array, kernel_size: Any, stride: Any = None,
                        padding: Any = 0) -> Array:
    """The default of ``be.avg_pool2d_backward``."""
    op = "avg_pool2d_backward"
    args.check_arrays(be, op, dy=dy)
    shape = args.check_x_shape(op, x_shape)
    window = args.pool_window(op, shape, kernel_size, stride, padding)
    expected = (*shape[:2], *window.out)
    if args.shape_of(dy) != expected:
        raise ValueError(f"{op}: dy has shape {args.shape_of(dy)} but the output has shape {expected}")
    args.check_image(op, "dy", dy)
    share = dy / window.taps
    xp = be.xp
    dx = col2im(xp, [share] * window.taps, window, _padded_size(shape, window))
    return crop(dx, window.padding, shape[2:])
