"""``linear_cross_entropy``'s options as one value, and the check of a call before anything is computed.

:class:`LinearCrossEntropyOptions` holds every keyword option of
``be.linear_cross_entropy(input, linear_weight, target, **options)`` with its
default (torch's ``linear_cross_entropy`` where torch has the option), and
:func:`check_arguments` checks a call's arrays and options together, raising
an error that names the argument; both the shared chunk loop and JAX's
compiled one run it first.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from softgrad.numerics import validation as v

LOW_PRECISION = ("float16", "bfloat16")


@dataclass(frozen=True, eq=False)  # eq=False: it holds arrays, which do not compare as one truth value
class LinearCrossEntropyOptions:
    """The keyword options of ``linear_cross_entropy`` (see :mod:`softgrad.numerics.losses.linear_cross_entropy`).

    linear_bias:
        the layer's bias ``(V,)``, or None.
    weight:
        a weight per class ``(V,)`` (torch's ``weight``), or None.
    reduction, ignore_index, label_smoothing:
        as ``cross_entropy``'s; ``ignore_index=None`` is torch's default, -100.
    z_loss:
        ``z_loss * lse**2`` added to each kept token's loss (PaLM); 0 for none.
    softcap:
        the logits are ``softcap * tanh(logits / softcap)`` (Gemma 2); None for none.
    chunk_size, memory_budget:
        the rows per chunk, or the bytes a chunk's working arrays may take (the
        chunk then holds as many rows as fit); None: the default budget.
    grad_output:
        the gradient of what the loss returns (a number, a 0-d array, or ``(N,)``
        for ``reduction="none"``), multiplied into the gradients; None for 1.
    """

    linear_bias: Any = None
    weight: Any = None
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    chunk_size: int | None = None
    memory_budget: int | None = None
    grad_output: Any = None

    def __post_init__(self) -> None:
        if self.ignore_index is None:  # torch's linear_cross_entropy default: -100 for class indices
            object.__setattr__(self, "ignore_index", -100)


#: the option names, in their order (what ``be.linear_cross_entropy`` takes by keyword)
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(LinearCrossEntropyOptions))


def check_arguments(be: Any, op: str, input: Any, linear_weight: Any, target: Any,
                    options: LinearCrossEntropyOptions) -> str:
    """Every argument's check, before any computation; returns the target's kind (``"index"`` or ``"prob"``).

    ``op`` is the name the errors start with (the method called).
    """
    _check_arrays(be, op, input, linear_weight, target, options)
    n, num_classes = int(input.shape[0]), int(linear_weight.shape[0])
    v.check_options(op, options.reduction, options.label_smoothing, options.ignore_index)
    # probability targets and class weights come in the input's dtype (checked as cross_entropy checks them)
    kind = v.target_kind(op, (n, num_classes), input.dtype, tuple(target.shape), target.dtype,
                         options.ignore_index)
    if options.weight is not None:
        v.check_weight(op, tuple(options.weight.shape), options.weight.dtype, num_classes, input.dtype)
    _check_terms(op, options)
    _check_grad_output(be, op, n, options)
    return kind


def _check_arrays(be: Any, op: str, input: Any, linear_weight: Any, target: Any,
                  options: LinearCrossEntropyOptions) -> None:
    """Each array is the backend's; the input ``(N, d)`` and the layer ``(V, d)``, ``(V,)`` in its dtype."""
    for what, array in (("input", input), ("linear_weight", linear_weight), ("target", target),
                        ("linear_bias", options.linear_bias), ("weight", options.weight),
                        ("grad_output", options.grad_output)):
        if array is not None and not (what == "grad_output" and isinstance(array, numbers.Real)):
            v.check_backend_array(be, op, what, array)
    dtype = v.dtype_name(input.dtype)
    if dtype not in v.FLOAT_DTYPES + LOW_PRECISION:
        raise TypeError(f"{op}: input must be float32 or float64 (or float16/bfloat16), got {dtype}")
    if input.ndim != 2:
        raise ValueError(f"{op}: input must have shape (N, d), got {input.ndim} dimensions {tuple(input.shape)}")
    d = int(input.shape[1])
    if linear_weight.ndim != 2:
        raise ValueError(f"{op}: linear_weight must have shape (V, d), got {tuple(linear_weight.shape)}")
    num_classes = int(linear_weight.shape[0])
    if int(linear_weight.shape[1]) != d:
        raise ValueError(f"{op}: linear_weight has shape {tuple(linear_weight.shape)} but the input has "
                         f"{d} features: it must be (V, {d})")
    bias = options.linear_bias
    for what, array in (("linear_weight", linear_weight), ("linear_bias", bias)):
        if array is not None and v.dtype_name(array.dtype) != dtype:
            raise TypeError(f"{op}: {what} is {v.dtype_name(array.dtype)} but the input is {dtype}; "
                            "use one dtype for both")
    if bias is not None and tuple(bias.shape) != (num_classes,):
        raise ValueError(f"{op}: linear_bias must have shape (V,) = ({num_classes},), got {tuple(bias.shape)}")
    if int(input.shape[0]) == 0:
        raise ValueError(f"{op}: empty batch: input has shape {tuple(input.shape)} (N = 0)")
    if num_classes == 0:
        raise ValueError(f"{op}: linear_weight has shape {tuple(linear_weight.shape)}: there must be at least one class")


def _check_terms(op: str, options: LinearCrossEntropyOptions) -> None:
    """``z_loss >= 0``, ``softcap > 0`` (or None), finite; ``chunk_size`` and ``memory_budget`` positive ints."""
    for name, value, low in (("z_loss", options.z_loss, "0"), ("softcap", options.softcap, "0 (exclusive)")):
        if name == "softcap" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise TypeError(f"{op}: {name} must be a finite number, got {value!r}")
        if float(value) < 0 or (name == "softcap" and float(value) == 0):
            raise ValueError(f"{op}: {name} must be > {low}, got {value!r}" if name == "softcap"
                             else f"{op}: {name} must be >= 0, got {value!r}")
    for name, value in (("chunk_size", options.chunk_size), ("memory_budget", options.memory_budget)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{op}: {name} must be a positive int, got {value!r}")
        if int(value) < 1:
            raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")


def _check_grad_output(be: Any, op: str, n: int, options: LinearCrossEntropyOptions) -> None:
    grad_output, reduction = options.grad_output, options.reduction
    if grad_output is not None and not isinstance(grad_output, numbers.Real):
        want = (n,) if reduction == "none" else ()
        if tuple(grad_output.shape) != want:
            raise ValueError(f"{op}: grad_output must have shape {want} for reduction={reduction!r} "
                             f"(the gradient of what the loss returns), got {tuple(grad_output.shape)}")
        if v.dtype_name(grad_output.dtype) not in v.FLOAT_DTYPES + LOW_PRECISION:
            raise TypeError(f"{op}: grad_output must be floating, got {v.dtype_name(grad_output.dtype)}")
    _check_finite_grad_output(be, op, grad_output)


def _check_finite_grad_output(be: Any, op: str, grad_output: Any) -> None:
    """A NaN or infinite ``grad_output`` would scale its rows' gradients into NaN without a word: refused, named
    (one reduction and one read back, only when grad_output is given)."""
    if grad_output is None:
        return
    if isinstance(grad_output, numbers.Real):
        if not math.isfinite(float(grad_output)):
            raise ValueError(f"{op}: grad_output is {float(grad_output)}; it must be finite")
        return
    xp = be.xp
    if bool(xp.all(xp.isfinite(grad_output))):
        return
    import numpy as np

    values = np.asarray(be.to_numpy(grad_output)).astype(np.float64)
    where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0]) if values.ndim else ()
    value = values[where]
    raise ValueError(f"{op}: grad_output holds {value} at {where[0]}; it must be finite" if where
                     else f"{op}: grad_output is {value}; it must be finite")
