"""conv2d and its backward, written once on the array API: im2col and one (batched over groups) GEMM.

The default of the hooks ``conv2d`` and ``conv2d_backward`` (:class:`softgrad.numerics.hooks.BackendHooks`
documents them). The windows are gathered channel-first, ``(C, kH*kW, N, Ho, Wo)``, so that each group's
columns are one matrix ``(C/g * kH*kW, N*Ho*Wo)`` and the forward, the weight gradient and the input gradient
are one matrix product each; the input gradient goes back through col2im. Nothing is written in place.
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics import conv_args as args
from softgrad.numerics.windows import col2im, crop, im2col, pad

Array = Any


def conv_options(stride: Any, padding: Any, dilation: Any, groups: Any) -> dict[str, Any]:
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def _columns(xp: Any, x: Array, geometry: args.ConvGeometry) -> Array:
    """x's windows as (groups, C/g * kH*kW, N * Ho*Wo)."""
    window, (n, c, _, _) = geometry.window, geometry.x_shape
    padded = pad(xp, xp.permute_dims(x, (1, 0, 2, 3)), window.padding)  # (C, N, Hp, Wp)
    cols = im2col(xp, padded, window, axis=1)  # (C, K, N, Ho, Wo)
    ho, wo = window.out
    return xp.reshape(cols, (geometry.groups, c // geometry.groups * window.taps, n * ho * wo))


def _grouped(xp: Any, a: Array, groups: int) -> Array:
    """(O, ...) as (groups, O/g, prod(...))."""
    rows = a.shape[0] // groups
    size = 1
    for n in a.shape[1:]:
        size *= n
    return xp.reshape(a, (groups, rows, size))


def conv2d(be: Any, x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: Any = 1) -> Array:
    """The default of ``be.conv2d`` (see :meth:`softgrad.numerics.hooks.BackendHooks.conv2d`)."""
    args.check_arrays(be, "conv2d", x=x, weight=weight, bias=bias)
    geometry = args.conv_geometry("conv2d", x, weight, conv_options(stride, padding, dilation, groups))
    args.check_bias("conv2d", x, bias, geometry.out_channels)
    xp = be.xp
    out = xp.matmul(_grouped(xp, weight, geometry.groups), _columns(xp, x, geometry))  # (g, O/g, N*L)
    n, o, ho, wo = geometry.out_shape
    out = xp.reshape(out, (o, n * ho * wo))
    if bias is not None:
        out = out + xp.reshape(bias, (o, 1))
    return xp.permute_dims(xp.reshape(out, (o, n, ho, wo)), (1, 0, 2, 3))


def conv2d_backward(be: Any, x: Array, weight: Array, dy: Array, *, stride: Any = 1, padding: Any = 0,
                    dilation: Any = 1, groups: Any = 1, need_dx: bool = True,
                    need_bias: bool = True) -> tuple[Array | None, Array, Array | None]:
    """The default of ``be.conv2d_backward`` (see
    :meth:`softgrad.numerics.hooks.BackendHooks.conv2d_backward`)."""
    op = "conv2d_backward"
    args.check_arrays(be, op, x=x, weight=weight, dy=dy)
    geometry = args.conv_geometry(op, x, weight, conv_options(stride, padding, dilation, groups))
    args.check_grad(op, x, dy, geometry.out_shape)
    xp, g = be.xp, geometry.groups
    dy_rows = _grouped(xp, xp.permute_dims(dy, (1, 0, 2, 3)), g)  # (g, O/g, N*L)
    cols = _columns(xp, x, geometry)
    dweight = xp.reshape(xp.matmul(dy_rows, xp.matrix_transpose(cols)), tuple(weight.shape))
    dbias = xp.sum(dy, axis=(0, 2, 3), dtype=dy.dtype) if need_bias else None
    if not need_dx:
        return None, dweight, dbias
    dcols = xp.matmul(xp.matrix_transpose(_grouped(xp, weight, g)), dy_rows)  # (g, C/g * K, N*L)
    n, c, h, w = geometry.x_shape
    window = geometry.window
    dcols = xp.reshape(dcols, (c, window.taps, n, *window.out))
    padded_size = (h + 2 * window.padding[0], w + 2 * window.padding[1])
    dx = col2im(xp, [dcols[:, k, ...] for k in range(window.taps)], window, padded_size)  # (C, N, Hp, Wp)
    return xp.permute_dims(crop(dx, window.padding, (h, w)), (1, 0, 2, 3)), dweight, dbias
