"""What every loss definition shares: argument checks, label handling, the checked reduction.

Each helper takes the backend (for ``be.xp`` and ``be.to_numpy``) and returns
new arrays; none modifies its input. NumPy is used on the host only, to
diagnose a non-finite value once something is already wrong.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

from softgrad.numerics import validation as v


def quiet_floating_point(function):
    """Run ``function`` without NumPy's floating-point warnings: non-finite results are
    diagnosed and raised as clear errors instead (see :func:`finish_loss`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _numpy().errstate(invalid="ignore", over="ignore", divide="ignore"):
            return function(*args, **kwargs)

    return wrapper


@functools.cache
def _numpy():
    import numpy  # imported at first use: importing this layer imports no array library

    return numpy


def device_of(x: Any) -> Any:
    """The device of an array, as its namespace's creation functions take it."""
    import array_api_compat

    return array_api_compat.device(x)


def checked_max(be: Any, op: str, z: Any, axis: int) -> Any:
    """The slice maxima (keepdims), after checking that every one is finite."""
    import numpy as np

    xp = be.xp
    m = xp.max(z, axis=axis, keepdims=True)
    if not bool(xp.all(xp.isfinite(m))):
        host = np.squeeze(be.to_numpy(m), axis=axis)
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
        raise v.bad_slice(op, position, float(host[position]))
    return m


def label_range(be: Any, labels: Any) -> tuple[int, int]:
    """The smallest and largest label (the hook ``be.label_range``: torch and JAX fetch both in one transfer)."""
    return be.label_range(labels)


def index_target(be: Any, op: str, target: Any, num_classes: int, ignore_index: int):
    """Labels as int64 and, when some are ignored, the mask of the ones kept (ignored labels become 0)."""
    import numpy as np

    xp = be.xp
    if v.dtype_name(target.dtype) == "uint64":
        # int64 would wrap labels above 2**63 to negative numbers, so they are checked first, on the host: torch
        # compares no uint64 tensors ("gt_cpu" not implemented), and uint64 labels are rare enough for the copy
        host = be.to_numpy(target)
        wrong = (host >= num_classes) & (host != ignore_index) if ignore_index >= 0 else host >= num_classes
        if np.any(wrong):
            bad = int(np.argmax(wrong))
            raise v.label_out_of_range(op, int(host[bad]), bad, num_classes, ignore_index)
    labels = xp.astype(target, xp.int64, copy=False)
    low, high = label_range(be, labels)
    if 0 <= low and high < num_classes and not 0 <= ignore_index < num_classes:
        return labels, None  # the common case: every label valid, none equal to ignore_index
    kept = labels != ignore_index
    out_of_range = ((labels < 0) | (labels >= num_classes)) & kept
    if bool(xp.any(out_of_range)):
        host = be.to_numpy(labels)
        bad = int(np.argmax(be.to_numpy(out_of_range)))
        raise v.label_out_of_range(op, int(host[bad]), bad, num_classes, ignore_index)
    if bool(xp.all(kept)):
        return labels, None
    return xp.where(kept, labels, xp.zeros_like(labels)), kept


def pick(be: Any, matrix: Any, labels: Any) -> Any:
    """``matrix[i, labels[i]]`` for every row i (integer array indexing, in the standard since 2024.12;
    NumPy's take_along_axis would cost several times more on small batches)."""
    return matrix[be.xp.arange(matrix.shape[0], device=device_of(matrix)), labels]


def is_label(be: Any, labels: Any, num_classes: int) -> Any:
    """The boolean ``(N, C)`` matrix that is True at ``(i, labels[i])``."""
    return labels[:, None] == be.xp.arange(num_classes, device=device_of(labels))[None, :]


def one_hot(be: Any, labels: Any, num_classes: int, dtype: Any) -> Any:
    return be.xp.astype(is_label(be, labels, num_classes), dtype)


def times_unless_zero(be: Any, factor: Any, values: Any) -> Any:
    """``factor * values`` where a zero factor gives 0 even against -inf (0 log 0 = 0)."""
    xp = be.xp
    product = factor * values
    return xp.where(factor != 0, product, xp.zeros_like(values))


def sample_weight(be: Any, logits: Any, labels: Any, kept: Any, weight: Any) -> Any:
    """weight[target[i]], 0 for ignored samples; None when every sample weighs 1."""
    xp = be.xp
    if weight is None:
        if kept is None:
            return None
        return xp.astype(kept, logits.dtype)
    per_sample = xp.take(weight, labels)
    if kept is not None:
        per_sample = xp.where(kept, per_sample, xp.zeros_like(per_sample))
    return per_sample


def mean_denominator(be: Any, op: str, n: int, weights: Any):
    """What ``"mean"`` divides by: the sum of the target weights (0 for ignored), or N."""
    if weights is None:
        return n
    denominator = be.xp.sum(weights)
    if float(be.to_numpy(denominator)) == 0.0:
        raise v.empty_mean(op)
    return denominator


def finish_loss(be: Any, op: str, per_sample: Any, reduction: str, denominator: Any, logits: Any = None,
                inputs: dict[str, Any] | None = None):
    """Reduce, after one finiteness check (of the total, or of every sample for "none").

    Non-finite logits always make the loss NaN, so they need no check of their
    own on this path: they are diagnosed only once something is wrong, and
    then the cause is named: a row of ``logits`` with no softmax, a non-finite
    entry of one of ``inputs`` (the class weights, a probability target),
    logits too far apart for their dtype, else the sample whose loss is infinite.
    """
    import numpy as np

    xp = be.xp
    total = None if reduction == "none" else xp.sum(per_sample)
    if not bool(xp.all(xp.isfinite(per_sample if total is None else total))):
        if logits is not None:
            checked_max(be, op, logits, 1)  # raises for a row with no softmax
        for name, array in (inputs or {}).items():
            if array is not None:
                values = be.to_numpy(array)
                if not np.all(np.isfinite(values)):
                    where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
                    raise ValueError(f"{op}: the {name} holds {values[where]} at {where if len(where) > 1 else where[0]}"
                                     f"; it must be finite")
        if logits is not None:
            host_logits = be.to_numpy(logits)
            finite = np.isfinite(host_logits)
            with np.errstate(over="ignore", invalid="ignore"):
                shifted = host_logits - host_logits.max(axis=1, keepdims=True)
            overflow = np.argwhere(finite & ~np.isfinite(shifted))
            if len(overflow):
                row = int(overflow[0][0])
                raise ValueError(f"{op}: row {row} of the logits spans more than {v.dtype_name(logits.dtype)} can "
                                 "hold: z - max(z) overflows; rescale the logits (or use float64)")
        host = be.to_numpy(per_sample)
        bad = np.flatnonzero(~np.isfinite(host))
        if len(bad) == 0:
            raise ValueError(f"{op}: the summed loss overflows {v.dtype_name(per_sample.dtype)}")
        raise v.bad_loss(op, int(bad[0]), float(host[bad[0]]))
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return total
    return total / denominator


def validate_class_loss(be: Any, op: str, logits: Any, target: Any, weight: Any, ignore_index: Any,
                        reduction: Any, label_smoothing: Any, *, what: str = "logits") -> str:
    """The checks of a classification loss; returns the target's kind, ``"index"`` or ``"prob"``."""
    v.check_backend_array(be, op, what, logits)
    v.check_backend_array(be, op, "target", target)
    if weight is not None:
        v.check_backend_array(be, op, "weight", weight)
    v.check_logits(op, tuple(logits.shape), logits.dtype, what)
    v.check_options(op, reduction, label_smoothing, ignore_index)
    kind = v.target_kind(op, tuple(logits.shape), logits.dtype, tuple(target.shape), target.dtype, ignore_index)
    if weight is not None:
        v.check_weight(op, tuple(weight.shape), weight.dtype, logits.shape[1], logits.dtype)
    return kind


def plain_class_targets(be: Any, op: str, logits: Any, target: Any, options: dict[str, Any]):
    """``(labels as int64, reduction)`` where a fused cross-entropy can take the case: class-index targets,
    2-D logits, no option but ``reduction`` and ``ignore_index`` and no sample ignored; None where the
    shared definition must run. Raises the shared errors for bad arguments and labels out of range."""
    if set(options) - {"reduction", "ignore_index"}:
        return None
    reduction, ignore_index = options.get("reduction", "mean"), options.get("ignore_index", -100)
    if (reduction not in ("mean", "sum", "none") or isinstance(ignore_index, bool)
            or not isinstance(ignore_index, numbers.Integral)):
        return None
    kind = validate_class_loss(be, op, logits, target, None, ignore_index, reduction, 0.0)
    if kind != "index" or len(logits.shape) != 2 or logits.shape[0] == 0:
        return None
    labels, kept = index_target(be, op, target, logits.shape[1], int(ignore_index))
    return None if kept is not None else (labels, reduction)
