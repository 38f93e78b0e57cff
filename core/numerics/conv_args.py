"""The arguments of the convolution and pooling operations, checked once for every backend.

Each function takes shapes (tuples of ints) and the user's arguments, and returns the normalised geometry
(pairs of ints and the output size), or raises one ``ValueError`` line naming the argument and the shapes,
so a message reads the same on NumPy, torch, JAX, CuPy and a plugin. Semantics: torch.nn.functional's.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from softgrad.numerics import validation as v


@dataclass(frozen=True)
class Window:
    """Where a sliding window goes over (H, W): each a pair (rows, columns)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out: tuple[int, int]  # (Ho, Wo)

    @property
    def taps(self) -> int:
        """The number of entries in one window (kH * kW)."""
        return self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class ConvGeometry:
    """A checked conv2d call: the window, the groups and the sizes of x and the weight."""

    window: Window
    groups: int
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    out_channels: int

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.x_shape[0], self.out_channels, *self.window.out)


def check_arrays(be: Any, op: str, **arrays: Any) -> None:
    """A TypeError naming the argument when one of ``arrays`` (None skipped) is not an array of ``be``."""
    for what, x in arrays.items():
        if x is not None:
            v.check_backend_array(be, op, what, x)


def shape_of(x: Any) -> tuple[int, ...]:
    """``x.shape`` as a tuple of Python ints (torch.Size and JAX shapes print as plain tuples then)."""
    return tuple(int(n) for n in x.shape)


def pair(op: str, what: str, value: Any, smallest: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``smallest``, as a pair."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in items):
        raise ValueError(f"{op}: {what} must be an int or a pair of ints, got {value!r}")
    result = (int(items[0]), int(items[1]))
    if min(result) < smallest:
        raise ValueError(f"{op}: {what} must be at least {smallest}, got {value!r}")
    return result


def _out_size(op: str, size: tuple[int, int], window: tuple, described: str) -> tuple[int, int]:
    kernel, stride, padding, dilation = window
    out = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        padded = size[axis] + 2 * padding[axis]
        if padded < span:
            what = ("rows", "columns")[axis]
            raise ValueError(f"{op}: the window spans {span} {what} but the padded input has {padded} "
                             f"({described})")
        out.append((padded - span) // stride[axis] + 1)
    return out[0], out[1]


def check_image(op: str, what: str, x: Any) -> tuple[int, int, int, int]:
    """``x`` must be a 4-D floating array (N, C, H, W) with C, H, W >= 1."""
    shape = shape_of(x)
    if len(shape) != 4:
        raise ValueError(f"{op}: {what} must be 4-D (N, C, H, W), got shape {shape}")
    v.check_float_array(op, what, x.dtype)
    if min(shape[1:]) < 1:
        raise ValueError(f"{op}: {what} has an empty channel, row or column axis: shape {shape}")
    return shape  # type: ignore[return-value]


def _same_dtype(op: str, what: str, a: Any, b: Any) -> None:
    if v.dtype_name(a.dtype) != v.dtype_name(b.dtype):
        raise TypeError(f"{op}: {what} is {v.dtype_name(b.dtype)} but x is {v.dtype_name(a.dtype)}; "
                        "convert one of them")


def conv_geometry(op: str, x: Any, weight: Any, options: dict[str, Any]) -> ConvGeometry:
    """Check x, weight, stride, padding, dilation and groups of a conv2d call (``options`` holds the four)."""
    x_shape = check_image(op, "x", x)
    w_shape = shape_of(weight)
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (O, C // groups, kH, kW), got shape {w_shape}")
    _same_dtype(op, "weight", x, weight)
    groups = options["groups"]
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    if min(w_shape) < 1:
        raise ValueError(f"{op}: weight has an empty axis: shape {w_shape}")
    if w_shape[0] % groups:
        raise ValueError(f"{op}: weight has {w_shape[0]} output channels, not divisible by groups {groups} "
                         f"(weight {w_shape})")
    if w_shape[1] * groups != x_shape[1]:
        raise ValueError(f"{op}: x has {x_shape[1]} channels but weight expects {w_shape[1] * groups} "
                         f"(weight {w_shape}, groups {groups})")
    stride = pair(op, "stride", options["stride"], 1)
    padding = pair(op, "padding", options["padding"], 0)
    dilation = pair(op, "dilation", options["dilation"], 1)
    kernel = (w_shape[2], w_shape[3])
    out = _out_size(op, x_shape[2:], (kernel, stride, padding, dilation),
                    f"x {x_shape}, weight {w_shape}, padding {padding}, dilation {dilation}")
    return ConvGeometry(Window(kernel, stride, padding, dilation, out), groups, x_shape, w_shape[0])


def check_bias(op: str, x: Any, bias: Any, out_channels: int) -> None:
    if bias is None:
        return
    if shape_of(bias) != (out_channels,):
        raise ValueError(f"{op}: bias must have shape ({out_channels},) (one per output channel), "
                         f"got {shape_of(bias)}")
    _same_dtype(op, "bias", x, bias)


def check_grad(op: str, x: Any, dy: Any, expected: tuple[int, ...]) -> None:
    """``dy`` must have the forward output's shape and x's dtype."""
    if shape_of(dy) != tuple(expected):
        raise ValueError(f"{op}: dy has shape {shape_of(dy)} but the output has shape {tuple(expected)}")
    _same_dtype(op, "dy", x, dy)


def pool_window(op: str, x_shape: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any) -> Window:
    """Check a pooling call's window (torch's rules: stride defaults to the kernel, padding at most half of
    it) on input of shape ``x_shape``."""
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    dilation = (1, 1)
    out = _out_size(op, x_shape[2:], (kernel, stride, padding, dilation),
                    f"x {tuple(x_shape)}, kernel_size {kernel}, padding {padding}")
    return Window(kernel, stride, padding, dilation, out)


def check_x_shape(op: str, x_shape: Any) -> tuple[int, int, int, int]:
    """A shape tuple (N, C, H, W) given in place of an array (avg_pool2d_backward's ``x_shape``)."""
    try:
        shape = tuple(x_shape)
    except TypeError:
        shape = ()
    if len(shape) != 4 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape):
        raise ValueError(f"{op}: x_shape must be a tuple of 4 ints (N, C, H, W), got {x_shape!r}")
    shape = tuple(int(n) for n in shape)
    if min(shape) < 0 or min(shape[1:]) < 1:
        raise ValueError(f"{op}: x_shape {shape} has an empty channel, row or column axis")
    return shape  # type: ignore[return-value]
