"""Input checks shared by every backend, so each error reads the same everywhere.

They look only at shapes, dtype names and a few host-side numbers; the
backends compute those (one small reduction each) and call in here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

FLOAT_DTYPES = ("float32", "float64")
REDUCTIONS = ("none", "mean", "sum")


# called on every op, and str() of a NumPy dtype costs microseconds. Keyed by identity: dtypes are
# singletons, and comparing dtypes of two libraries (a dict lookup would) is not defined everywhere.
_DTYPE_NAMES: dict[int, tuple[Any, str]] = {}


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``numpy.float32``, ``torch.float32``, ``cupy.float32`` or array-api-strict's."""
    cached = _DTYPE_NAMES.get(id(dtype))
    if cached is not None and cached[0] is dtype:
        return cached[1]
    text = str(dtype)
    if text.startswith("<class"):  # a NumPy scalar type such as numpy.float32
        text = text.rsplit(".", 1)[-1].rstrip("'>")
    name = text.rsplit(".", 1)[-1]
    if len(_DTYPE_NAMES) < 256:
        _DTYPE_NAMES[id(dtype)] = (dtype, name)  # holds dtype, so its id is never reused
    return name


def check_backend_array(be: Any, op: str, what: str, x: Any) -> None:
    """A TypeError naming ``what`` when ``x`` is not an array of ``be`` (the hook ``be.check_array``: backends
    that cannot tell accept everything, as does an object that only carries ``xp``, which has no hooks)."""
    check = getattr(be, "check_array", None)
    if check is not None:
        check(op, what, x)


def is_integer_dtype(name: str) -> bool:
    return name.startswith(("int", "uint"))


def check_float_array(op: str, what: str, dtype: Any) -> None:
    name = dtype_name(dtype)
    if name not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {what} must be float32 or float64, got {name}")


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    if ndim == 0:
        raise ValueError(f"{op}: expected an array with at least one dimension, got a 0-d array")
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        axis = int(axis)  # a NumPy integer, as torch accepts it
    if not isinstance(axis, int) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis!r} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def check_not_empty(op: str, what: str, shape: Sequence[int]) -> None:
    if math.prod(shape) == 0:
        raise ValueError(f"{op}: {what} is empty (shape {tuple(shape)}); there is nothing to compute")


def check_logits(op: str, shape: Sequence[int], dtype: Any, what: str = "logits") -> None:
    """Logits (or log-probabilities) must be a float32/float64 ``(N, C)`` array with N, C >= 1."""
    check_float_array(op, what, dtype)
    if len(shape) != 2:
        raise ValueError(
            f"{op}: {what} must have shape (N, C), got {len(shape)} dimensions {tuple(shape)}"
        )
    if shape[0] == 0:
        raise ValueError(f"{op}: empty batch: {what} have shape {tuple(shape)} (N = 0)")
    if shape[1] == 0:
        raise ValueError(f"{op}: {what} have shape {tuple(shape)}: there must be at least one class")


def check_options(op: str, reduction: Any, label_smoothing: Any, ignore_index: Any) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    # NumPy scalars are accepted, as torch accepts them
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"{op}: label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{op}: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")


def target_kind(
    op: str,
    logits_shape: Sequence[int],
    logits_dtype: Any,
    target_shape: Sequence[int],
    target_dtype: Any,
    ignore_index: int,
) -> str:
    """``"index"`` for class indices, ``"prob"`` for class probabilities; else a clear error."""
    n, c = logits_shape
    name = dtype_name(target_dtype)
    shape = tuple(target_shape)
    if name == "bool":
        raise TypeError(f"{op}: target is bool; class indices must be integers (int64)")
    if is_integer_dtype(name):
        if len(shape) != 1:
            raise ValueError(
                f"{op}: class-index target must have shape (N,) = ({n},), got {shape}"
            )
        if shape[0] != n:
            raise ValueError(
                f"{op}: {shape[0]} labels for {n} samples: logits have shape {tuple(logits_shape)}"
            )
        return "index"
    if name.startswith("float"):
        if len(shape) == 1:
            raise TypeError(
                f"{op}: target has float dtype {name} and shape {shape}: class indices must be "
                f"integers (cast with .astype('int64')), class probabilities must have shape "
                f"(N, C) = ({n}, {c})"
            )
        if shape != (n, c):
            raise ValueError(
                f"{op}: probability target must have the shape of the logits ({n}, {c}), got {shape}"
            )
        if name != dtype_name(logits_dtype):
            raise TypeError(
                f"{op}: probability target is {name} but logits are {dtype_name(logits_dtype)}; "
                "use one dtype for both"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"{op}: ignore_index={ignore_index} applies to class indices only, not to "
                "probability targets (as in PyTorch)"
            )
        return "prob"
    raise TypeError(f"{op}: target must be integer class indices or float probabilities, got {name}")


def check_weight(op: str, shape: Sequence[int], dtype: Any, num_classes: int, logits_dtype: Any) -> None:
    if tuple(shape) != (num_classes,):
        raise ValueError(f"{op}: weight must have shape (C,) = ({num_classes},), got {tuple(shape)}")
    if dtype_name(dtype) != dtype_name(logits_dtype):
        raise TypeError(
            f"{op}: weight is {dtype_name(dtype)} but logits are {dtype_name(logits_dtype)}; "
            "use one dtype for both"
        )


def label_out_of_range(op: str, label: int, position: int, num_classes: int, ignore_index: int) -> ValueError:
    return ValueError(
        f"{op}: label {label} (sample {position}) is out of range for C={num_classes} classes: "
        f"labels must lie in [0, {num_classes - 1}] or equal ignore_index={ignore_index}"
    )


def bad_slice(op: str, position: tuple[int, ...], slice_max: float, what: str = "logits") -> ValueError:
    """The error for a softmax slice whose maximum is not finite."""
    where = "the input" if not position else f"row {position[0]}" if len(position) == 1 else f"slice {position}"
    if math.isnan(slice_max):
        why = "holds NaN"
    elif slice_max > 0:
        why = "holds +inf"
    else:
        why = "is all -inf, so its softmax is undefined (0/0)"
    return ValueError(f"{op}: {where if not position else where + ' of the ' + what} {why}")


def bad_loss(op: str, sample: int, value: float) -> ValueError:
    if math.isnan(value):
        return ValueError(f"{op}: the loss of sample {sample} is NaN: its log-probabilities hold NaN")
    return ValueError(
        f"{op}: the loss of sample {sample} is infinite: the target puts mass on a class whose "
        "probability is 0 (a -inf logit; label smoothing puts eps/C on every class)"
    )


def empty_mean(op: str) -> ValueError:
    return ValueError(
        f"{op}: reduction='mean' over no weight: every target equals ignore_index or the "
        "weights of the targets sum to 0; use reduction='sum' or 'none'"
    )


def array_list(op: str, what: str, value: Any) -> list:
    """``value`` (a list, a tuple, or any iterable of arrays such as a generator) as a list; else a clear TypeError.

    An optimizer takes one array per parameter. A generator is read once here, so that checking it does not
    use it up before the update runs; a single array is refused rather than iterated over its rows.
    """
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "shape") or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{op}: {what} must be a list of arrays, one per parameter, got a single "
                        f"{type(value).__name__}; wrap it in a list: [{what[:-1] if what.endswith('s') else what}]")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{op}: {what} must be a list of arrays, one per parameter, got {type(value).__name__}") from None


def has_internal_overlap(shape: Sequence[int], strides: Sequence[int], itemsize: int) -> bool:
    """Whether two elements of an array with this layout (``strides`` in bytes) share memory.

    An in-place update of such an array (a broadcast or expanded view) writes one location several times.
    Dimensions sorted by stride must each step past everything the smaller ones span; where that simple
    test fails the element offsets are enumerated (only for such unusual, interleaved layouts).
    """
    dims = sorted((abs(int(s)), int(n)) for n, s in zip(shape, strides) if int(n) > 1)
    if not dims:
        return False
    if dims[0][0] == 0:  # a broadcast dimension
        return True
    span = itemsize
    for stride, n in dims:
        if stride < span:
            break
        span = stride * (n - 1) + span
    else:
        return False
    import numpy as np  # only for interleaved layouts, never on the common path

    if math.prod(n for _, n in dims) > 1 << 24:
        return True  # too many elements to enumerate: treated as overlapping (an interleaved layout this large)
    offsets = np.zeros(1, dtype=np.int64)
    for stride, n in dims:
        offsets = (offsets[:, None] + stride * np.arange(n, dtype=np.int64)[None, :]).ravel()
    offsets.sort()
    return bool(np.any(np.diff(offsets) < itemsize))


def internal_overlap_error(op: str, what: str, shape: Sequence[int], strides: Sequence[int]) -> ValueError:
    return ValueError(f"{op}: {what} has elements that share memory (shape {tuple(shape)}, strides "
                      f"{tuple(strides)}: a broadcast or expanded view); an in-place update would write one "
                      "location several times: pass a copy (np.array(p), p.clone())")
