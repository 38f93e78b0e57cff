"""``linear_cross_entropy``'s plan: what every chunk needs, fixed before the first one, and the chunk's size.

:func:`make_plan` is the one place a :class:`Plan` is built: from the checked
call it finds the rows that count (those not ignored), the denominators of
``"mean"``, each term's gradient scale, ``grad_output`` per kept row, and how
many rows a chunk holds (:func:`plan_chunk`: a memory budget over the
``(rows, V)`` arrays a chunk keeps at once).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.losses.linear_ce_options import LOW_PRECISION, LinearCrossEntropyOptions
from softgrad.numerics.losses.support import device_of, index_target

#: bytes one chunk's working arrays may take when the caller does not say (``memory_budget``)
DEFAULT_MEMORY_BUDGET = 32 * 2**20


@dataclass(frozen=True, eq=False)  # eq=False: it holds arrays
class Plan:
    """What every chunk needs to know, fixed before the first one: the targets' kind, the rows that
    count, each term's scale, and the chunk size."""

    kind: str  # "index" or "prob"
    rows: Any  # host numpy int array of the rows processed (None: all, in order)
    n_rows: int  # how many rows are processed
    num_classes: int
    eps: float  # label smoothing
    weight: Any  # class weights in the compute dtype, or None
    weight_sum: float
    ce_scale: Any  # what the cross-entropy part of the gradient is multiplied by (1/denominator for mean)
    z_scale: Any  # the same for the z-loss part
    z_loss: float
    softcap: float | None
    chunk: int
    compute_dtype: Any
    row_scale: Any  # grad_output per processed row ((n_rows,) array), or None
    denominator: float  # what "mean" divides the cross-entropy by (the targets' weight, or N for probabilities)
    z_denominator: float  # what "mean" divides the z-loss by (the tokens kept)

    def gradient_factors(self, mass: Any, lse: Any, row_scale: Any) -> tuple[Any, Any]:
        """Each row's factors of ``G = p_factor * softmax - q_factor * q``: the reduction's scales, the
        z-loss's ``2 z_loss lse`` and ``grad_output`` (``row_scale``) folded in; per row, or a number."""
        p_factor = self.ce_scale * mass
        if self.z_loss != 0.0:
            p_factor = p_factor + self.z_scale * (2.0 * self.z_loss) * lse
        q_factor = self.ce_scale
        if row_scale is not None:
            p_factor = p_factor * row_scale
            q_factor = q_factor * row_scale
        return p_factor, q_factor


def chunk_rows(num_classes: int, itemsize: int, buffers: int, memory_budget: int, n_rows: int) -> int:
    """Rows per chunk: as many as fit ``buffers`` arrays of ``(rows, V)`` in ``memory_budget`` bytes,
    at least 1 and at most the rows there are."""
    per_row = max(1, num_classes * itemsize * buffers)
    return int(max(1, min(n_rows, memory_budget // per_row)))


def default_budget(num_classes: int, d: int, itemsize: int) -> int:
    """The chunk's memory when the caller does not say: 32 MiB, or half of ``d linear_weight`` where that
    is more. The weight gradient exists anyway, so the peak stays within 1.5x of it, and a chunk keeps
    ``d / 2`` rows at any V: each chunk reads and writes all of ``d linear_weight`` (``8 V d`` bytes) for
    ``6 rows V d`` flops, so at a large V a 32 MiB chunk (64 rows at V = 131,072) would leave the
    matmuls waiting on memory."""
    return max(DEFAULT_MEMORY_BUDGET, num_classes * d * itemsize // 2)


def plan_chunk(num_classes: int, d: int, itemsize: int, buffers: int, n_rows: int, chunk_size: int | None = None,
               memory_budget: int | None = None) -> int:
    """The rows per chunk: ``chunk_size`` if given, else what fits ``memory_budget`` (default: :func:`default_budget`)."""
    if chunk_size is not None:
        return max(1, min(int(chunk_size), max(1, n_rows)))
    budget = int(memory_budget) if memory_budget is not None else default_budget(num_classes, d, itemsize)
    return chunk_rows(num_classes, itemsize, buffers, budget, max(1, n_rows))


def host(be: Any, x: Any) -> Any:
    """``x`` as a NumPy array on the host."""
    import numpy as np

    return np.asarray(be.to_numpy(x))


def make_plan(be: Any, op: str, kind: str, input: Any, linear_weight: Any, target: Any,
              options: LinearCrossEntropyOptions, *, buffers: int) -> tuple[Plan, Any]:
    """The plan, and the targets of the rows processed (labels as int64, or probability rows).

    ``kind`` is what :func:`~softgrad.numerics.losses.linear_ce_options.check_arguments` returned;
    ``buffers`` is how many ``(rows, V)`` arrays the chunk ops hold at once.
    """
    xp = be.xp
    n, num_classes = int(input.shape[0]), int(linear_weight.shape[0])
    compute_dtype = xp.float32 if v.dtype_name(input.dtype) in LOW_PRECISION else input.dtype
    rows, labels = _kept_rows(be, op, kind, target, num_classes, options.ignore_index)
    n_rows = n if rows is None else len(rows)
    weight = None if options.weight is None else xp.astype(options.weight, compute_dtype)
    denominator = _denominator(be, kind, n, n_rows, weight, labels)
    mean = options.reduction == "mean"
    if mean and denominator == 0.0:
        raise v.empty_mean(op)
    itemsize = 8 if compute_dtype == xp.float64 else 4
    chunk = plan_chunk(num_classes, int(input.shape[1]), itemsize, buffers, n_rows, options.chunk_size,
                       options.memory_budget)
    plan = Plan(kind=kind, rows=rows, n_rows=n_rows, num_classes=num_classes, eps=float(options.label_smoothing),
                weight=weight,
                weight_sum=float(num_classes) if weight is None else float(host(be, xp.sum(weight))),
                ce_scale=1.0 / denominator if mean else 1.0,
                z_scale=1.0 / n_rows if mean and n_rows else 1.0,
                z_loss=float(options.z_loss), softcap=None if options.softcap is None else float(options.softcap),
                chunk=max(1, min(chunk, max(1, n_rows))), compute_dtype=compute_dtype,
                row_scale=_row_scale(be, options.grad_output, rows, n_rows, compute_dtype, device_of(input)),
                denominator=denominator, z_denominator=float(n_rows))
    return plan, labels


def _kept_rows(be: Any, op: str, kind: str, target: Any, num_classes: int, ignore_index: int) -> tuple[Any, Any]:
    """The rows not ignored (a host int array, or None for all) and their targets (labels as int64)."""
    if kind != "index":
        return None, target
    import numpy as np

    xp = be.xp
    labels, kept = index_target(be, op, target, num_classes, int(ignore_index))
    if kept is None:
        return None, labels
    rows = np.flatnonzero(host(be, kept))
    return rows, xp.take(labels, xp.asarray(rows, device=device_of(labels)), axis=0)


def _denominator(be: Any, kind: str, n: int, n_rows: int, weight: Any, labels: Any) -> float:
    """What ``"mean"`` divides the cross-entropy by: the kept targets' class weight (their count without
    weights), or N for probability targets, as torch's cross_entropy."""
    if kind != "index":
        return float(n)
    if weight is None:
        return float(n_rows)
    xp = be.xp
    return float(host(be, xp.sum(xp.take(weight, labels)))) if n_rows else 0.0


def _row_scale(be: Any, grad_output: Any, rows: Any, n_rows: int, compute_dtype: Any, device: Any) -> Any:
    """``grad_output`` for each processed row in the compute dtype; None where it is absent or 1."""
    if grad_output is None:
        return None
    xp = be.xp
    if isinstance(grad_output, numbers.Real) or grad_output.ndim == 0:
        value = float(grad_output) if isinstance(grad_output, numbers.Real) else float(host(be, grad_output))
        return None if value == 1.0 else xp.full((n_rows,), value, dtype=compute_dtype, device=device)
    row_scale = xp.astype(grad_output, compute_dtype)
    if rows is not None:
        row_scale = xp.take(row_scale, xp.asarray(rows, device=device_of(row_scale)), axis=0)
    return row_scale
