"""The NumPy backend's convolution and pooling: strided views (no gather through Python) and one BLAS GEMM.

Measured against the array-API default on NumPy (:mod:`softgrad.numerics.convolution`), which stacks kH*kW
slices and multiplies batched, transposed operands, this path builds the columns with one copy of a
``sliding_window_view``, multiplies contiguous 2-D matrices (BLAS), and adds the input gradient back in
place, one strided view per tap. The numbers are in the report of issue 25 and in
``tests/test_conv_ops.py``'s module docstring. float32 stays float32 throughout (one sgemm per product).
Each function checks its arguments with :mod:`softgrad.numerics.conv_args`, as the default does.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from softgrad.numerics import conv_args as args
from softgrad.numerics.convolution import conv_options

_local = threading.local()
_MAX_SCRATCH = 32  # buffers kept per thread (a few layers' worth); beyond that the cache starts over


def _scratch(tag: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reusable buffer of this thread for an intermediate that never leaves this module (the columns, the
    padded input, dx before cropping). Measured: fresh multi-megabyte arrays cost a page fault per 4 KiB
    every call, which on a busy 2-core machine made the backward 5-10x slower than the arithmetic."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None or len(buffers) > _MAX_SCRATCH:
        buffers = _local.buffers = {}
    key = (tag, shape, np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is None:
        buffer = buffers[key] = np.empty(shape, dtype)
    return buffer


def _padded(x: np.ndarray, padding: tuple[int, int], value: float = 0.0, tag: str = "pad") -> np.ndarray:
    top, left = padding
    if not top and not left:
        return x
    out = _scratch(tag, (*x.shape[:2], x.shape[2] + 2 * top, x.shape[3] + 2 * left), x.dtype)
    out[:, :, :top] = value
    out[:, :, top + x.shape[2]:] = value
    out[:, :, :, :left] = value
    out[:, :, :, left + x.shape[3]:] = value
    out[:, :, top:top + x.shape[2], left:left + x.shape[3]] = x
    return out


def _columns(x: np.ndarray, geometry: args.ConvGeometry) -> np.ndarray:
    """(groups, C/g * kH*kW, N*Ho*Wo), C-contiguous: each tap's strided view of the channel-first padded x
    copied once into its rows (runs of Wo contiguous entries: much faster than window-major columns)."""
    window, g = geometry.window, geometry.groups
    n, c = geometry.x_shape[:2]
    ho, wo = window.out
    padded = _padded(x.transpose(1, 0, 2, 3), window.padding)  # (C, N, Hp, Wp)
    cols = _scratch("cols", (c, window.taps, n, ho, wo), x.dtype)
    for index in range(window.taps):
        cols[:, index] = _tap_view(padded, window, *divmod(index, window.kernel[1]))
    return cols.reshape(g, c // g * window.taps, n * ho * wo)


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    geometry = args.conv_geometry("conv2d", x, weight, conv_options(stride, padding, dilation, groups))
    args.check_bias("conv2d", x, bias, geometry.out_channels)
    cols, g = _columns(x, geometry), geometry.groups
    n, o, ho, wo = geometry.out_shape
    out = _scratch("out", (g, o // g, n * ho * wo), x.dtype)
    np.matmul(weight.reshape(g, o // g, -1), cols, out=out)  # one sgemm/dgemm per group
    out = out.reshape(o, n, ho, wo)
    if bias is not None:
        out += bias.reshape(o, 1, 1, 1)
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3))


def conv2d_backward(x, weight, dy, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True, need_bias=True):
    op = "conv2d_backward"
    geometry = args.conv_geometry(op, x, weight, conv_options(stride, padding, dilation, groups))
    args.check_grad(op, x, dy, geometry.out_shape)
    cols, g = _columns(x, geometry), geometry.groups
    n, o, ho, wo = geometry.out_shape
    dy_rows = _scratch("dy", (o, n, ho, wo), x.dtype)
    dy_rows[...] = dy.transpose(1, 0, 2, 3)
    dy_rows = dy_rows.reshape(g, o // g, n * ho * wo)
    dweight = np.matmul(dy_rows, cols.transpose(0, 2, 1)).reshape(weight.shape)
    dbias = dy_rows.reshape(o, -1).sum(axis=1) if need_bias else None
    dx = _input_grad(weight, dy_rows, geometry) if need_dx else None
    return dx, dweight, dbias


def _input_grad(weight: np.ndarray, dy_rows: np.ndarray, geometry: args.ConvGeometry) -> np.ndarray:
    """dcols = W^T @ dy per group, then col2im: each tap added into its strided view of the padded dx."""
    window, g = geometry.window, geometry.groups
    n, c, h, w = geometry.x_shape
    wg = weight.reshape(g, weight.shape[0] // g, -1)
    dcols = _scratch("dcols", (g, wg.shape[2], dy_rows.shape[2]), weight.dtype)
    np.matmul(wg.transpose(0, 2, 1), dy_rows, out=dcols)
    dcols = dcols.reshape(c, window.taps, n, *window.out)
    top, left = window.padding
    dx = _scratch("dx", (c, n, h + 2 * top, w + 2 * left), weight.dtype)  # channel-first, as the columns
    dx.fill(0)
    _add_taps(dx, window, lambda i, j: dcols[:, i * window.kernel[1] + j])
    return np.ascontiguousarray(dx[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3))


def _tap_view(padded: np.ndarray, window: args.Window, i: int, j: int) -> np.ndarray:
    (sh, sw), (dh, dw), (ho, wo) = window.stride, window.dilation, window.out
    return padded[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]


def _add_taps(padded: np.ndarray, window: args.Window, tap) -> None:
    for i in range(window.kernel[0]):
        for j in range(window.kernel[1]):
            view = _tap_view(padded, window, i, j)
            view += tap(i, j)


# ---- pooling: a pass over the output per tap ----------------------------------------------------------


def _pool_args(op: str, x: Any, kernel_size, stride, padding) -> args.Window:
    return args.pool_window(op, args.check_image(op, "x", x), kernel_size, stride, padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    window = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    padded = _padded(x, window.padding, -np.inf, "pool")
    y = _tap_view(padded, window, 0, 0).copy()
    for index in range(1, window.taps):
        np.maximum(y, _tap_view(padded, window, *divmod(index, window.kernel[1])), out=y)  # NaN propagates
    return y


def max_pool2d_backward(x, dy, kernel_size, stride=None, padding=0):
    op = "max_pool2d_backward"
    window = _pool_args(op, x, kernel_size, stride, padding)
    args.check_grad(op, x, dy, (*x.shape[:2], *window.out))
    y = max_pool2d(x, kernel_size, stride, padding)
    padded = _padded(x, window.padding, -np.inf, "pool")
    (kh, kw), (ho, wo) = window.kernel, window.out
    # windows that tile x (LeNet's 2x2, stride 2) write each entry of dx once: no zeros, no adds
    tiles = window.stride == window.kernel and window.padding == (0, 0)
    dx = np.empty(padded.shape, dtype=x.dtype) if tiles else np.zeros(padded.shape, dtype=x.dtype)
    if tiles:
        dx[:, :, ho * kh:] = 0
        dx[:, :, :, wo * kw:] = 0
    taken = np.zeros(y.shape, dtype=bool)
    hit = np.empty(y.shape, dtype=bool)
    share = None if tiles else np.empty(y.shape, dtype=x.dtype)
    for index in range(window.taps):
        i, j = divmod(index, kw)
        np.equal(_tap_view(padded, window, i, j), y, out=hit)
        np.greater(hit, taken, out=hit)  # hit and not taken: the first maximum in row-major order wins a tie
        taken |= hit
        view = _tap_view(dx, window, i, j)
        if tiles:
            np.multiply(dy, hit, out=view)
        else:
            view += np.multiply(dy, hit, out=share)
    top, left = window.padding
    return dx[:, :, top:top + x.shape[2], left:left + x.shape[3]]


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    window = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    padded = _padded(x, window.padding)
    y = _tap_view(padded, window, 0, 0).copy()
    for index in range(1, window.taps):
        y += _tap_view(padded, window, *divmod(index, window.kernel[1]))
    y /= window.taps
    return y


def avg_pool2d_backward(x_shape, dy, kernel_size, stride=None, padding=0):
    op = "avg_pool2d_backward"
    shape = args.check_x_shape(op, x_shape)
    window = args.pool_window(op, shape, kernel_size, stride, padding)
    expected = (*shape[:2], *window.out)
    if args.shape_of(dy) != expected:
        raise ValueError(f"{op}: dy has shape {args.shape_of(dy)} but the output has shape {expected}")
    args.check_image(op, "dy", dy)
    top, left = window.padding
    dx = np.zeros((*shape[:2], shape[2] + 2 * top, shape[3] + 2 * left), dtype=dy.dtype)
    share = dy / dy.dtype.type(window.taps)
    _add_taps(dx, window, lambda i, j: share)
    return dx[:, :, top:top + shape[2], left:left + shape[3]]
