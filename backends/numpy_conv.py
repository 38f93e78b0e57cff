"""The NumPy backend's convolution and pooling: strided views, one BLAS GEMM per product, col2im in place.

Against the array-API default on NumPy (:mod:`softgrad.numerics.convolution`, ``.pooling``), which stacks the
kH*kW slices into a new array, multiplies batched operands and adds the input gradient back through
zero-filled copies, this path copies each tap's strided view once into reused columns (a thread's scratch
buffers), multiplies 2-D matrices (BLAS; float32 stays float32, one sgemm per product) and adds the input gradient into
views of one buffer. Measured (batch 64, float32, one thread, CPU time; LeNet's layers): conv2d 1.0x (first
layer, one channel in) to 2.0x (second), conv2d_backward 1.1x to 3.0x, max_pool2d 2.1x, its backward 7.0x,
avg_pool2d's backward 4.2x. avg_pool2d's forward gained nothing measurable (1.0x), so it stays the default.
Each function checks its arguments with :mod:`softgrad.numerics.conv_args`, as the default does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from softgrad.numerics import conv_args as args
from softgrad.numerics.convolution import conv_options

_local = threading.local()
_MAX_SCRATCH = 32  # buffers kept per thread (a few layers' worth); beyond that the cache starts over
_MAX_KEPT_BYTES = 64 * 2**20  # a larger buffer (evaluating a big batch) is not kept: it would stay allocated


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
        buffer = np.empty(shape, dtype)
        if buffer.nbytes <= _MAX_KEPT_BYTES:
            buffers[key] = buffer
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


# Layouts of the working copies. (C, N, H, W): a tap's view of the padded images has runs of Wo contiguous
# entries. (C, H, W, N), the batch innermost: runs of Wo * N (stride 1), which makes im2col's copies and
# col2im's adds faster where Wo is small, but costs two transposes with the batch innermost, which cost more
# than they save where the maps are large. Measured (batch 64, float32, 1 thread): LeNet's second layer (Wo = 10) 2.7 ->
# 2.3 ms forward, 7.4 -> 5.5 ms backward in (C, H, W, N); its first (Wo = 28) 2.3 -> 2.7 ms forward. So the
# batch goes innermost below Wo = 16.
_WIDE = 16


@dataclass(frozen=True)
class _Layout:
    to_work: tuple[int, int, int, int]  # the transpose from (N, C, H, W)
    from_work: tuple[int, int, int, int]  # and back
    rows: int  # the axis of H in the working layout (W follows it)

    def shape(self, nchw: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(nchw[a] for a in self.to_work)


_CNHW = _Layout((1, 0, 2, 3), (1, 0, 2, 3), 2)
_CHWN = _Layout((1, 2, 3, 0), (3, 0, 1, 2), 1)


def _layout(window: args.Window) -> _Layout:
    return _CHWN if window.out[1] < _WIDE else _CNHW


def _work_copy(x: np.ndarray, layout: _Layout, padding: tuple[int, int]) -> np.ndarray:
    """x (N, C, H, W) in ``layout``, zero-padded, in a scratch buffer."""
    n, c, h, w = x.shape
    top, left = padding
    out = _scratch("work", layout.shape((n, c, h + 2 * top, w + 2 * left)), x.dtype)
    lead = (slice(None),) * layout.rows
    if top or left:
        out[(*lead, slice(0, top))] = 0
        out[(*lead, slice(top + h, None))] = 0
        out[(*lead, slice(None), slice(0, left))] = 0
        out[(*lead, slice(None), slice(left + w, None))] = 0
    out[(*lead, slice(top, top + h), slice(left, left + w))] = x.transpose(layout.to_work)
    return out


def _window_view(a: np.ndarray, layout: _Layout, window: args.Window, index: int) -> np.ndarray:
    """Tap ``index``'s entry of every window of ``a`` (padded, in ``layout``): a view, (Ho, Wo) in place of
    (Hp, Wp)."""
    (sh, sw), (dh, dw), (ho, wo) = window.stride, window.dilation, window.out
    i, j = divmod(index, window.kernel[1])
    rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
    columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
    return a[(*(slice(None),) * layout.rows, rows, columns)]


def _columns(x: np.ndarray, geometry: args.ConvGeometry, layout: _Layout) -> np.ndarray:
    """(groups, C/g * kH*kW, Ho*Wo*N in the layout's order), C-contiguous: each tap's view copied once."""
    window, g = geometry.window, geometry.groups
    n, c = geometry.x_shape[:2]
    padded = _work_copy(x, layout, window.padding)
    cols = _scratch("cols", (c, window.taps, *layout.shape((n, c, *window.out))[1:]), x.dtype)
    for index in range(window.taps):
        cols[:, index] = _window_view(padded, layout, window, index)
    return cols.reshape(g, c // g * window.taps, -1)


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    geometry = args.conv_geometry("conv2d", x, weight, conv_options(stride, padding, dilation, groups))
    args.check_bias("conv2d", x, bias, geometry.out_channels)
    layout = _layout(geometry.window)
    cols, g = _columns(x, geometry, layout), geometry.groups
    o = geometry.out_channels
    out = _scratch("out", (g, o // g, cols.shape[2]), x.dtype)
    np.matmul(weight.reshape(g, o // g, -1), cols, out=out)  # one sgemm/dgemm per group
    out = out.reshape(layout.shape(geometry.out_shape))
    if bias is not None:
        out += bias.reshape(o, 1, 1, 1)
    return np.array(out.transpose(layout.from_work), order="C")  # always a copy: out is a scratch buffer


def conv2d_backward(x, weight, dy, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                    need_bias=True):
    op = "conv2d_backward"
    geometry = args.conv_geometry(op, x, weight, conv_options(stride, padding, dilation, groups))
    args.check_grad(op, x, dy, geometry.out_shape)
    layout = _layout(geometry.window)
    cols, g = _columns(x, geometry, layout), geometry.groups
    o = geometry.out_channels
    dy_rows = _scratch("dy", layout.shape(geometry.out_shape), x.dtype)
    dy_rows[...] = dy.transpose(layout.to_work)
    dy_rows = dy_rows.reshape(g, o // g, -1)
    dweight = np.matmul(dy_rows, cols.transpose(0, 2, 1)).reshape(weight.shape)
    dbias = dy_rows.reshape(o, -1).sum(axis=1) if need_bias else None
    dx = _input_grad(weight, dy_rows, geometry, layout) if need_dx else None
    return dx, dweight, dbias


def _input_grad(weight: np.ndarray, dy_rows: np.ndarray, geometry: args.ConvGeometry, layout: _Layout):
    """dcols = W^T @ dy per group, then col2im: each tap added into its window view of the padded dx."""
    window, g = geometry.window, geometry.groups
    n, c, h, w = geometry.x_shape
    wg = weight.reshape(g, weight.shape[0] // g, -1)
    dcols = _scratch("dcols", (g, wg.shape[2], dy_rows.shape[2]), weight.dtype)
    np.matmul(wg.transpose(0, 2, 1), dy_rows, out=dcols)
    dcols = dcols.reshape(c, window.taps, *layout.shape((n, c, *window.out))[1:])
    top, left = window.padding
    dx = _scratch("dx", layout.shape((n, c, h + 2 * top, w + 2 * left)), weight.dtype)
    dx.fill(0)
    for index in range(window.taps):
        view = _window_view(dx, layout, window, index)
        view += dcols[:, index]
    inner = dx[(*(slice(None),) * layout.rows, slice(top, top + h), slice(left, left + w))]
    # always a copy: dx is a scratch buffer (with N = 1 the transpose is already contiguous, and
    # ascontiguousarray would hand out the buffer itself)
    return np.array(inner.transpose(layout.from_work), order="C")


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
