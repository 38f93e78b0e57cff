"""What the elementwise losses share: the input/target checks and the checked reduction.

Regression losses and binary cross-entropy compare an input with a target of
the same shape, element by element. As in ``torch.nn.functional`` the
reduction is over every element (``"mean"`` divides by the number of
elements). Unlike torch, shapes that differ are refused: torch broadcasts
them with a warning, which silently computes another loss (an ``(N, 1)``
prediction against an ``(N,)`` target gives an ``(N, N)`` matrix).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from softgrad.numerics import validation as v


def check_reduction(op: str, reduction: Any) -> None:
    if reduction not in v.REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {v.REDUCTIONS}, got {reduction!r}")


def check_pair(be: Any, op: str, input: Any, target: Any, reduction: Any, *, regression: bool = True) -> None:
    """Input and target: arrays of ``be``, one float dtype, one shape, at least one element."""
    v.check_backend_array(be, op, "input", input)
    v.check_backend_array(be, op, "target", target)
    v.check_float_array(op, "the input", input.dtype)
    input_dtype, target_dtype = v.dtype_name(input.dtype), v.dtype_name(target.dtype)
    if target_dtype not in v.FLOAT_DTYPES:
        if regression:
            hint = "regression targets are real values; for class labels use cross_entropy"
        else:
            hint = "targets are probabilities in [0, 1]; convert 0/1 labels with be.asarray(y, dtype=...)"
        raise TypeError(f"{op}: the target is {target_dtype}, it must be {input_dtype} like the input ({hint})")
    if target_dtype != input_dtype:
        raise TypeError(f"{op}: the input is {input_dtype} but the target is {target_dtype}; use one dtype for both")
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{op}: the input has shape {tuple(input.shape)} but the target {tuple(target.shape)}; "
                         "they must be equal (softgrad does not broadcast them: torch warns and broadcasts, which "
                         "computes a different loss)")
    v.check_not_empty(op, "the input", tuple(input.shape))
    check_reduction(op, reduction)


def check_positive(op: str, name: str, value: Any, *, allow_zero: bool) -> float:
    """A real, finite ``beta``/``delta``: ``>= 0`` or ``> 0``; returned as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{op}: {name} must be finite and {bound}, got {value!r}")
    return value


def first_bad(be: Any, array: Any) -> tuple[tuple[int, ...], float] | None:
    """The position and value of the first non-finite entry of ``array`` (on the host), or None."""
    import numpy as np

    host = np.asarray(be.to_numpy(array))
    bad = np.argwhere(~np.isfinite(host))
    if len(bad) == 0:
        return None
    where = tuple(int(i) for i in bad[0])
    return where, float(host[where])


def _where(position: tuple[int, ...]) -> str:
    return str(position[0]) if len(position) == 1 else str(position)


def check_same_shape_weight(be: Any, op: str, weight: Any, input: Any) -> None:
    """A per-element ``weight`` (torch's ``mse_loss``, ``l1_loss``, ``huber_loss``): the input's shape and dtype."""
    v.check_backend_array(be, op, "weight", weight)
    if v.dtype_name(weight.dtype) != v.dtype_name(input.dtype):
        raise TypeError(f"{op}: the weight is {v.dtype_name(weight.dtype)} but the input is "
                        f"{v.dtype_name(input.dtype)}; use one dtype for both")
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"{op}: the weight has shape {tuple(weight.shape)}; it must have the input's, "
                         f"{tuple(input.shape)} (one weight per element, as in torch)")


def finish_elementwise(be: Any, op: str, per_element: Any, reduction: str, inputs: dict[str, Any],
                       denominator: Any = None) -> Any:
    """Reduce, after one finiteness check; a non-finite result names its cause.

    ``inputs`` maps names (``"input"``, ``"target"``, ``"weight"``) to arrays;
    the first non-finite entry of one of them is the cause, else the loss
    overflowed its dtype. ``"mean"`` divides by ``denominator`` (a backend
    scalar: a sum of weights), else by the element count.
    """
    xp = be.xp
    total = None if reduction == "none" else xp.sum(per_element)
    if not bool(xp.all(xp.isfinite(per_element if total is None else total))):
        for name, array in inputs.items():
            if array is None:
                continue
            found = first_bad(be, array)
            if found is not None:
                raise ValueError(f"{op}: the {name} holds {found[1]} at {_where(found[0])}; it must be finite")
        found = first_bad(be, per_element)
        if found is None:
            raise ValueError(f"{op}: the summed loss overflows {v.dtype_name(per_element.dtype)}; use "
                             "reduction='none', rescale the data or use float64")
        raise ValueError(f"{op}: the loss at {_where(found[0])} overflows {v.dtype_name(per_element.dtype)} "
                         f"({found[1]}); rescale the data or use float64")
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return total
    return total / (math.prod(per_element.shape) if denominator is None else denominator)


def weight_sum(be: Any, op: str, weight: Any) -> Any:
    """What a weighted mean divides by: the sum of the weights, which must not be 0."""
    total = be.xp.sum(weight)
    if float(be.to_numpy(total)) == 0.0:
        raise ValueError(f"{op}: reduction='mean' divides by the sum of the weights, which is 0; use "
                         "reduction='sum' or 'none'")
    return total


def scale_gradient(grad: Any, reduction: str, denominator: Any = None) -> Any:
    """``grad`` of the sum, divided as the ``"mean"`` loss is (by the element count unless told)."""
    if reduction != "mean":
        return grad
    return grad / (math.prod(grad.shape) if denominator is None else denominator)
