"""Cross-entropy of a linear layer's output without its N x V logits: ``linear_cross_entropy``.

``linear_cross_entropy(input, linear_weight, target, ...)`` equals
``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``
(PyTorch 2.14's ``torch.nn.functional.linear_cross_entropy``), and
``linear_cross_entropy_and_grad`` also returns the gradients with respect to
``input``, ``linear_weight`` and ``linear_bias``. Neither ever holds more than
one chunk of logits.

How (the approach of Liger Kernel's fused linear cross-entropy): the tokens
are processed a chunk of rows at a time. A chunk's logits ``(c, V)`` give its
rows' losses and, in the same pass, the gradient ``G`` of the loss with
respect to those logits (``mass * softmax - q``, scaled as the reduction
says; the denominator of ``"mean"`` is known from the targets before any
logit is computed). Then ``d input[rows] = G @ W``, ``d W += G.T @ input[rows]``
and ``d bias += sum(G)``, and the chunk is dropped. The matmuls are those of
the dense path (``6 N V d`` flops in all), so the time stays the dense time
while the peak extra memory is the gradients plus one chunk: ``O(c V)``, never
``O(N V)``. Tokens equal to ``ignore_index`` are left out before chunking:
they cost nothing and their gradient rows are 0.

Two terms of large-vocabulary training, both off by default:

- ``z_loss``: ``z_loss * lse_i ** 2`` added to each kept token's loss, with
  ``lse_i = log sum_c exp(z_ic)`` (PaLM's auxiliary loss; Liger's
  ``lse_square_scale``). As in Liger it is not scaled by the class weight,
  and ``"mean"`` divides it by the number of tokens not ignored.
- ``softcap``: the logits are ``cap * tanh((x W^T + b) / cap)`` (Gemma 2);
  the gradient goes through ``1 - tanh^2``.

Computation dtype: float32 and float64 compute in their own dtype; float16
and bfloat16 inputs (on backends that hold them) compute each chunk and
accumulate every gradient in float32, and the results come back in the
inputs' dtype.

A backend makes it fast by giving its own :class:`ChunkOps` (in-place
softmax, BLAS accumulation, a fused kernel) through the hook ``be.chunk_ops()``;
the suite checks each against this shared, functional definition.

The module holds the chunk operations and the loop; the options are one value
(:class:`~softgrad.numerics.losses.linear_ce_options.LinearCrossEntropyOptions`,
checked by ``check_arguments``) and what the loop needs before the first
chunk is one :class:`~softgrad.numerics.losses.linear_ce_plan.Plan`
(``make_plan``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.losses.linear_ce_options import (
    LOW_PRECISION,
    OPTIONS,
    LinearCrossEntropyOptions,
    check_arguments,
)
from softgrad.numerics.losses.linear_ce_plan import (
    DEFAULT_MEMORY_BUDGET,
    Plan,
    chunk_rows,
    default_budget,
    host,
    make_plan,
    plan_chunk,
)
from softgrad.numerics.losses.softmax_cross_entropy import log_sum_exp_rows
from softgrad.numerics.losses.support import device_of, quiet_floating_point


class ChunkOps:
    """The per-chunk operations, written against ``be.xp``, functional (no array is modified).

    A backend may subclass it: ``head`` computes a chunk's losses and logit
    gradient (it may overwrite the logits it is given, which it owns),
    ``accumulate`` adds a chunk's contribution to the weight gradients (it
    may do so in place and return the same arrays).
    """

    #: how many (rows, V) arrays of the compute dtype ``head`` holds at once (sizes the chunk)
    buffers = 4

    def __init__(self, be: Any) -> None:
        self.be = be
        self.xp = be.xp

    def buffers_for(self, kind: str, eps: float, has_weight: bool, softcap: Any) -> int:
        """How many ``(rows, V)`` arrays a chunk holds with these options (sizes the chunk)."""
        return self.buffers

    def cast(self, x: Any, dtype: Any) -> Any:
        return x if x.dtype == dtype else self.xp.astype(x, dtype)

    def logits(self, xc: Any, w: Any, b: Any) -> Any:
        """The chunk's logits ``xc @ w.T + b`` (``w`` and ``b`` already in the compute dtype)."""
        z = self.cast(xc, w.dtype) @ w.T
        return z if b is None else z + b

    def zero_grads(self, d: int, num_classes: int, has_bias: bool, dtype: Any, device: Any) -> tuple[Any, Any]:
        xp = self.xp
        dw = xp.zeros((num_classes, d), dtype=dtype, device=device)
        return dw, xp.zeros((num_classes,), dtype=dtype, device=device) if has_bias else None

    def input_grad_store(self, n_rows: int, d: int, dtype: Any, device: Any) -> Any:
        """Where the chunks' ``d input`` rows go (a list here; a preallocated array where arrays are mutable)."""
        return []

    def input_grad(self, store: Any, g: Any, w: Any, start: int, stop: int) -> None:
        """Put ``g @ w``, the chunk's rows of ``d input``, in ``store``."""
        store.append(g @ w)

    def input_grad_result(self, store: Any, n_rows: int, d: int, dtype: Any, device: Any) -> Any:
        if not store:
            return self.xp.zeros((n_rows, d), dtype=dtype, device=device)
        return store[0] if len(store) == 1 else self.xp.concat(store, axis=0)

    def accumulate(self, dw: Any, db: Any, g: Any, xc: Any) -> tuple[Any, Any]:
        """``dw + g.T @ xc`` and ``db + sum(g)`` (``xc`` in the compute dtype)."""
        dw = dw + g.T @ xc
        return dw, None if db is None else db + self.xp.sum(g, axis=0)

    def head(self, plan: Plan, z: Any, target: Any, row_scale: Any) -> tuple[Any, Any, Any]:
        """``(ce_row, lse, row_max, G)`` of one chunk: each row's cross-entropy (unscaled), its
        log-sum-exp (the z-loss is ``z_loss * lse**2``), its maximum logit (for the caller's
        finiteness diagnosis), and the
        gradient of the reduced loss with respect to the chunk's pre-softcap logits ``z``.

        ``target`` is the chunk's labels (int64; ignored rows are already gone) or its rows of
        probabilities; ``row_scale`` is ``grad_output`` for these rows or None.
        """
        xp = self.xp
        tanh = None
        if plan.softcap is not None:
            tanh = xp.tanh(z / plan.softcap)
            z = plan.softcap * tanh
        rows = log_sum_exp_rows(xp, z, target, kind=plan.kind, label_smoothing=plan.eps, weight=plan.weight,
                                weight_sum=plan.weight_sum,
                                device=device_of(target) if plan.kind == "index" else None)
        mass = rows.mass
        if isinstance(mass, float):
            mass = xp.full(rows.lse.shape, mass, dtype=z.dtype, device=device_of(z))
        p_factor, q_factor = plan.gradient_factors(mass, rows.lse, row_scale)
        g = rows.softmax * p_factor[:, None] - (q_factor if isinstance(q_factor, float) else q_factor[:, None]) * rows.q
        if tanh is not None:
            g = g * (1.0 - tanh * tanh)
        return rows.loss, rows.lse, rows.row_max, g


def _bad_input(be: Any, op: str, plan: Plan, rows: Any, row_max: Any, row_loss: Any, inputs: dict) -> ValueError:
    """The error for a chunk whose loss is not finite, naming the original row (sample)."""
    import numpy as np

    host_max = host(be, row_max).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(host_max))
    if len(bad):
        return v.bad_slice(op, (int(rows[bad[0]]),), float(host_max[bad[0]]))
    for name, array in inputs.items():
        if array is not None:
            values = host(be, array).astype(np.float64)
            # a -inf bias masks a class (its probability is 0): only NaN and +inf are wrong there
            bad_values = ~np.isfinite(values) if name != "linear_bias" else (np.isnan(values) | (values == np.inf))
            if np.any(bad_values):
                where = tuple(int(i) for i in np.argwhere(bad_values)[0])
                return ValueError(f"{op}: the {name} holds {values[where]} at "
                                  f"{where if len(where) > 1 else where[0]}; it must be finite")
    host_loss = host(be, row_loss).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(host_loss))
    if len(bad) == 0:
        return ValueError(f"{op}: the summed loss overflows {v.dtype_name(row_loss.dtype)}")
    return v.bad_loss(op, int(rows[bad[0]]), float(host_loss[bad[0]]))


@dataclass
class _Totals:
    """What the chunks add up: the gradients (with ``want_grad``), the per-row losses (``"none"``) or the sums."""

    dw: Any = None
    db: Any = None
    dx_store: Any = None
    loss_parts: list | None = None
    ce_total: Any = 0.0
    z_total: Any = 0.0


@dataclass(frozen=True, eq=False, kw_only=True)
class _Call:
    """One call's arrays and choices, as the loop's steps read them."""

    be: Any
    op: str
    ops: ChunkOps
    plan: Plan
    input: Any
    linear_weight: Any
    labels: Any  # the targets of the rows processed (labels as int64, or probability rows)
    options: LinearCrossEntropyOptions
    want_grad: bool


@quiet_floating_point
def linear_cross_entropy(be: Any, input: Any, linear_weight: Any, target: Any, *,
                         op: str = "linear_cross_entropy", want_grad: bool = False, ops: ChunkOps | None = None,
                         **options: Any):
    """The loss and, with ``want_grad``, ``(d input, d linear_weight, d linear_bias)``; see the module.

    ``options`` are :class:`LinearCrossEntropyOptions`' fields by keyword (``linear_bias``, ``weight``,
    ``reduction``, ``ignore_index``, ``label_smoothing``, ``z_loss``, ``softcap``, ``chunk_size``,
    ``memory_budget``, ``grad_output``); ``ops`` the chunk operations (default: the backend's hook
    ``be.chunk_ops()``).
    """
    return run(be, input, linear_weight, target, LinearCrossEntropyOptions(**options), op=op, want_grad=want_grad,
               ops=ops)


def run(be: Any, input: Any, linear_weight: Any, target: Any, options: LinearCrossEntropyOptions, *,
        op: str = "linear_cross_entropy", want_grad: bool = False, ops: ChunkOps | None = None):
    """:func:`linear_cross_entropy` with its options as one value."""
    kind = check_arguments(be, op, input, linear_weight, target, options)
    if ops is None:
        ops = be.chunk_ops()  # the hook: ChunkOps, or the backend's in-place or fused subclass
    buffers = ops.buffers_for(kind, float(options.label_smoothing), options.weight is not None, options.softcap)
    plan, labels = make_plan(be, op, kind, input, linear_weight, target, options, buffers=buffers)
    call = _Call(be=be, op=op, ops=ops, plan=plan, input=input, linear_weight=linear_weight, labels=labels,
                 options=options, want_grad=want_grad)
    cdtype = plan.compute_dtype
    # 16-bit inputs: the weights in float32 once (a copy of W), each chunk of input as it comes
    w_c = ops.cast(linear_weight, cdtype)
    b_c = None if options.linear_bias is None else ops.cast(options.linear_bias, cdtype)
    totals = _Totals(loss_parts=[])
    if want_grad:
        n_rows, d, device = plan.n_rows, int(input.shape[1]), device_of(input)
        totals.dw, totals.db = ops.zero_grads(d, plan.num_classes, b_c is not None, cdtype, device)
        totals.dx_store = ops.input_grad_store(n_rows, d, cdtype, device)
    rows_device = None if plan.rows is None else be.xp.asarray(plan.rows, device=device_of(input))
    for start in range(0, plan.n_rows, plan.chunk):
        _chunk(call, totals, w_c, b_c, rows_device, start, min(plan.n_rows, start + plan.chunk))
    loss = ops.cast(_reduced_loss(call, totals), input.dtype)
    if not want_grad:
        return loss, None
    return loss, _gradients(call, totals)


def _chunk(call: _Call, totals: _Totals, w_c: Any, b_c: Any, rows_device: Any, start: int, stop: int) -> None:
    """One chunk of rows: its logits, losses and logit gradient, added to ``totals`` (the logits then dropped)."""
    be, plan, ops, xp = call.be, call.plan, call.ops, call.be.xp
    xc = call.input[start:stop, ...] if plan.rows is None else xp.take(call.input, rows_device[start:stop], axis=0)
    tc = call.labels[start:stop, ...]
    if plan.kind == "prob" and v.dtype_name(tc.dtype) != v.dtype_name(plan.compute_dtype):
        tc = xp.astype(tc, plan.compute_dtype)
    scale = None if plan.row_scale is None or not call.want_grad else plan.row_scale[start:stop]
    xc = ops.cast(xc, plan.compute_dtype)
    ce_row, lse, row_max, g = ops.head(plan, ops.logits(xc, w_c, b_c), tc, scale)
    z_row = None if plan.z_loss == 0.0 else plan.z_loss * lse * lse
    row_loss = ce_row if z_row is None else ce_row + z_row
    ce_sum = xp.sum(ce_row)
    z_sum = None if z_row is None else xp.sum(z_row)
    checked = ce_sum if z_sum is None else ce_sum + z_sum
    if not math.isfinite(float(host(be, checked))):  # one read back per chunk
        import numpy as np

        rows = np.arange(start, stop) if plan.rows is None else plan.rows[start:stop]
        raise _bad_input(be, call.op, plan, rows, row_max, row_loss, _inputs(call))
    if call.options.reduction == "none":
        totals.loss_parts.append(row_loss)
    else:
        totals.ce_total = totals.ce_total + ce_sum
        totals.z_total = totals.z_total if z_sum is None else totals.z_total + z_sum
    if call.want_grad:
        ops.input_grad(totals.dx_store, g, w_c, start, stop)
        totals.dw, totals.db = ops.accumulate(totals.dw, totals.db, g, xc)


def _inputs(call: _Call) -> dict[str, Any]:
    """The arrays a non-finite loss may come from, by the names its error gives them."""
    options = call.options
    return {"input": call.input, "linear_weight": call.linear_weight, "linear_bias": options.linear_bias,
            "class weight": options.weight, "probability target": call.labels if call.plan.kind == "prob" else None}


def _reduced_loss(call: _Call, totals: _Totals) -> Any:
    """The loss as the reduction says, in the compute dtype; a sum that overflows raises."""
    be, plan, xp = call.be, call.plan, call.be.xp
    cdtype, device = plan.compute_dtype, device_of(call.input)
    n = int(call.input.shape[0])
    if call.options.reduction == "none":
        parts = totals.loss_parts
        per_row = (parts[0] if len(parts) == 1 else xp.concat(parts) if parts
                   else xp.zeros((0,), dtype=cdtype, device=device))
        return _assemble_rows(be, [per_row[:, None]], plan.rows, n, 1, cdtype, device)[:, 0]
    ce_total, z_total = totals.ce_total, totals.z_total
    if call.options.reduction == "mean":
        ce_total = ce_total / plan.denominator
        z_total = z_total / plan.z_denominator if plan.z_loss != 0.0 else z_total
    loss = ce_total + z_total if plan.z_loss != 0.0 else ce_total
    if plan.n_rows == 0:  # no rows were processed (every target ignored, reduction "sum")
        loss = xp.zeros((), dtype=cdtype, device=device)
    if not math.isfinite(float(host(be, loss))):
        raise ValueError(f"{call.op}: the summed loss overflows {v.dtype_name(cdtype)}")
    return loss


def _gradients(call: _Call, totals: _Totals) -> tuple[Any, Any, Any]:
    """``(d input, d linear_weight, d linear_bias)`` in the input's dtype; rows left out have zero gradients."""
    plan, ops = call.plan, call.ops
    n, d = (int(s) for s in call.input.shape)
    cdtype, device = plan.compute_dtype, device_of(call.input)
    dx_kept = ops.input_grad_result(totals.dx_store, plan.n_rows, d, cdtype, device)
    dx = _assemble_rows(call.be, [dx_kept], plan.rows, n, d, cdtype, device)
    out = call.input.dtype
    return ops.cast(dx, out), ops.cast(totals.dw, out), None if totals.db is None else ops.cast(totals.db, out)


def _assemble_rows(be: Any, parts: list, rows: Any, n: int, width: int, dtype: Any, device: Any) -> Any:
    """The processed rows' results as an ``(N, width)`` array: zeros at the rows left out."""
    xp = be.xp
    kept = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0) if parts else xp.zeros(
        (0, width), dtype=dtype, device=device)
    if rows is None:
        return kept
    import numpy as np

    # the rows left out read the zero row appended at the end (a take, so immutable arrays work too)
    position = np.full(n, len(rows), dtype=np.int64)
    position[rows] = np.arange(len(rows))
    padded = xp.concat([kept, xp.zeros((1, width), dtype=kept.dtype, device=device)], axis=0)
    return xp.take(padded, xp.asarray(position, device=device), axis=0)


__all__ = ["DEFAULT_MEMORY_BUDGET", "LOW_PRECISION", "OPTIONS", "ChunkOps", "LinearCrossEntropyOptions", "Plan",
           "check_arguments", "chunk_rows", "default_budget", "linear_cross_entropy", "make_plan", "plan_chunk",
           "run"]
