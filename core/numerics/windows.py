"""Sliding windows over the last two axes, on the array API alone: padding, im2col and its adjoint col2im.

The defaults of the convolution and pooling operations (:mod:`softgrad.numerics.convolution`,
:mod:`softgrad.numerics.pooling`) are built on these three. They use only slicing with steps, ``concat``,
``stack`` and ``reshape``, and never write into an array, so they run unchanged on NumPy, torch, CuPy,
JAX (immutable arrays) and array-api-strict. A backend with its own kernels overrides the operations, not
these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from softgrad.numerics.conv_args import Window
from softgrad.numerics.losses.support import device_of

Array = Any


def pad(xp: Any, x: Array, padding: tuple[int, int], value: float = 0.0) -> Array:
    """``x`` with ``padding`` rows above and below and columns left and right filled with ``value``."""
    top, left = padding
    if top:
        band = xp.full((*x.shape[:-2], top, x.shape[-1]), value, dtype=x.dtype, device=device_of(x))
        x = xp.concat([band, x, band], axis=-2)
    if left:
        band = xp.full((*x.shape[:-1], left), value, dtype=x.dtype, device=device_of(x))
        x = xp.concat([band, x, band], axis=-1)
    return x


def window_slices(xp: Any, padded: Array, window: Window) -> list[Array]:
    """The kH * kW strided views of ``padded`` (..., Hp, Wp), one per tap in row-major order, each
    (..., Ho, Wo): tap (i, j) holds ``padded[..., i*d + s*ho, j*d + s*wo]``."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = window.kernel, window.stride, window.dilation, window.out
    return [padded[..., i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


def im2col(xp: Any, padded: Array, window: Window, axis: int) -> Array:
    """The windows of ``padded`` stacked as a new axis ``axis``: (..., Hp, Wp) -> taps at ``axis``, then
    (Ho, Wo) last (a copy: the array API has no strided views)."""
    return xp.stack(window_slices(xp, padded, window), axis=axis)


def _spread(xp: Any, a: Array, axis: int, step: int, offset: int, size: int) -> Array:
    """``a`` along ``axis`` (-2 or -1) placed at ``offset + step * i`` of a zero axis of length ``size``."""
    zeros_like = xp.zeros_like
    n = a.shape[axis]
    if step > 1 and n > 1:
        a = xp.stack([a] + [zeros_like(a)] * (step - 1), axis=axis)  # (.., n, step, ..): zeros after each
        shape = list(a.shape)
        merged = shape[:axis - 1] + [n * step] + (shape[axis + 1:] if axis == -2 else [])
        a = xp.reshape(a, tuple(merged))
        keep = step * (n - 1) + 1
        a = a[..., :keep, :] if axis == -2 else a[..., :keep]
    parts = []
    after = size - offset - a.shape[axis]
    for length in (offset, None, after):
        if length is None:
            parts.append(a)
        elif length > 0:
            shape = list(a.shape)
            shape[axis] = length
            parts.append(xp.zeros(tuple(shape), dtype=a.dtype, device=device_of(a)))
    return xp.concat(parts, axis=axis) if len(parts) > 1 else a


def col2im(xp: Any, taps: Sequence[Array], window: Window, padded_size: tuple[int, int]) -> Array:
    """The adjoint of :func:`window_slices`: each tap's (..., Ho, Wo) values added back where it was read
    from, into zeros of (..., Hp, Wp) with ``(Hp, Wp) = padded_size`` (overlapping windows add up)."""
    (sh, sw), (dh, dw), kw = window.stride, window.dilation, window.kernel[1]
    total = None
    for index, tap in enumerate(taps):
        i, j = divmod(index, kw)
        placed = _spread(xp, _spread(xp, tap, -2, sh, i * dh, padded_size[0]), -1, sw, j * dw, padded_size[1])
        total = placed if total is None else total + placed
    return total


def crop(x: Array, padding: tuple[int, int], size: tuple[int, int]) -> Array:
    """The inverse of :func:`pad` on the last two axes."""
    (top, left), (h, w) = padding, size
    return x[..., top:top + h, left:left + w]
