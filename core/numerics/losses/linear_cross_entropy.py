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
softmax, BLAS accumulation, a fused kernel) through ``be._linear_ce_ops()``;
the suite checks each against this shared, functional definition.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.losses.support import (
    device_of,
    index_target,
    quiet_floating_point,
    times_unless_zero,
)

#: bytes one chunk's working arrays may take when the caller does not say (``memory_budget``)
DEFAULT_MEMORY_BUDGET = 32 * 2**20
LOW_PRECISION = ("float16", "bfloat16")
OPTIONS = ("linear_bias", "weight", "reduction", "ignore_index", "label_smoothing", "z_loss", "softcap",
           "chunk_size", "memory_budget", "grad_output")


class Plan:
    """What every chunk needs to know, fixed before the first one: the targets' kind, the rows that
    count, each term's scale, and the chunk size."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

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
        eps, num_classes = plan.eps, plan.num_classes
        tanh = None
        if plan.softcap is not None:
            tanh = xp.tanh(z / plan.softcap)
            z = plan.softcap * tanh
        m = xp.max(z, axis=1)
        finite = xp.isfinite(m)
        m_safe = xp.where(finite, m, xp.zeros_like(m))  # a row with no softmax is diagnosed by the caller
        e = xp.exp(z - m_safe[:, None])
        s = xp.sum(e, axis=1)
        lse = m_safe + xp.log(s)
        p = e / s[:, None]
        if plan.kind == "index":
            columns = xp.arange(num_classes, device=device_of(target))
            is_target = target[:, None] == columns[None, :]
            z_t = xp.sum(xp.where(is_target, z, xp.zeros_like(z)), axis=1)
            w_t = None if plan.weight is None else xp.take(plan.weight, target)
            nll = lse - z_t
            ce = nll if w_t is None else times_unless_zero(self.be, w_t, nll)
            if eps != 0.0:
                ce = (1.0 - eps) * ce
                neg_logp = lse[:, None] - z
                if plan.weight is not None:
                    neg_logp = times_unless_zero(self.be, plan.weight[None, :], neg_logp)
                ce = ce + (eps / num_classes) * xp.sum(neg_logp, axis=1)
            mass = (1.0 - eps) * (1.0 if w_t is None else w_t) + (eps / num_classes) * plan.weight_sum
            onehot = xp.astype(is_target, z.dtype) * ((1.0 - eps) * (1.0 if w_t is None else w_t[:, None]))
            q = onehot if eps == 0.0 else onehot + (eps / num_classes) * (
                1.0 if plan.weight is None else plan.weight[None, :])
        else:
            q = target if eps == 0.0 else (1.0 - eps) * target + eps / num_classes
            if plan.weight is not None:
                q = q * plan.weight[None, :]
            mass = xp.sum(q, axis=1)
            ce = mass * lse - xp.sum(times_unless_zero(self.be, q, z), axis=1)
        if isinstance(mass, float):
            mass = xp.full(lse.shape, mass, dtype=z.dtype, device=device_of(z))
        p_factor, q_factor = plan.gradient_factors(mass, lse, row_scale)
        g = p * p_factor[:, None] - (q_factor if isinstance(q_factor, float) else q_factor[:, None]) * q
        if tanh is not None:
            g = g * (1.0 - tanh * tanh)
        return ce, lse, m, g


def check_arguments(be: Any, op: str, input: Any, linear_weight: Any, target: Any, linear_bias: Any,
                    weight: Any, reduction: Any, ignore_index: Any, label_smoothing: Any, z_loss: Any,
                    softcap: Any, chunk_size: Any, memory_budget: Any, grad_output: Any) -> str:
    """Every argument's check, before any computation; returns the target's kind."""
    for what, array in (("input", input), ("linear_weight", linear_weight), ("target", target),
                        ("linear_bias", linear_bias), ("weight", weight), ("grad_output", grad_output)):
        if array is not None and not (what == "grad_output" and isinstance(array, numbers.Real)):
            v.check_backend_array(be, op, what, array)
    dtype = v.dtype_name(input.dtype)
    if dtype not in v.FLOAT_DTYPES + LOW_PRECISION:
        raise TypeError(f"{op}: input must be float32 or float64 (or float16/bfloat16), got {dtype}")
    if input.ndim != 2:
        raise ValueError(f"{op}: input must have shape (N, d), got {input.ndim} dimensions {tuple(input.shape)}")
    n, d = (int(s) for s in input.shape)
    if linear_weight.ndim != 2:
        raise ValueError(f"{op}: linear_weight must have shape (V, d), got {tuple(linear_weight.shape)}")
    num_classes = int(linear_weight.shape[0])
    if int(linear_weight.shape[1]) != d:
        raise ValueError(f"{op}: linear_weight has shape {tuple(linear_weight.shape)} but the input has "
                         f"{d} features: it must be (V, {d})")
    for what, array in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if array is not None and v.dtype_name(array.dtype) != dtype:
            raise TypeError(f"{op}: {what} is {v.dtype_name(array.dtype)} but the input is {dtype}; "
                            "use one dtype for both")
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes,):
        raise ValueError(f"{op}: linear_bias must have shape (V,) = ({num_classes},), got {tuple(linear_bias.shape)}")
    if n == 0:
        raise ValueError(f"{op}: empty batch: input has shape {tuple(input.shape)} (N = 0)")
    if num_classes == 0:
        raise ValueError(f"{op}: linear_weight has shape {tuple(linear_weight.shape)}: there must be at least one class")
    v.check_options(op, reduction, label_smoothing, ignore_index)
    # probability targets and class weights come in the input's dtype (checked as cross_entropy checks them)
    logits_dtype = input.dtype
    kind = v.target_kind(op, (n, num_classes), logits_dtype, tuple(target.shape), target.dtype, ignore_index)
    if weight is not None:
        v.check_weight(op, tuple(weight.shape), weight.dtype, num_classes, logits_dtype)
    for name, value, low in (("z_loss", z_loss, "0"), ("softcap", softcap, "0 (exclusive)")):
        if name == "softcap" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise TypeError(f"{op}: {name} must be a finite number, got {value!r}")
        if float(value) < 0 or (name == "softcap" and float(value) == 0):
            raise ValueError(f"{op}: {name} must be > {low}, got {value!r}" if name == "softcap"
                             else f"{op}: {name} must be >= 0, got {value!r}")
    for name, value in (("chunk_size", chunk_size), ("memory_budget", memory_budget)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{op}: {name} must be a positive int, got {value!r}")
        if int(value) < 1:
            raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")
    if grad_output is not None and not isinstance(grad_output, numbers.Real):
        want = (n,) if reduction == "none" else ()
        if tuple(grad_output.shape) != want:
            raise ValueError(f"{op}: grad_output must have shape {want} for reduction={reduction!r} "
                             f"(the gradient of what the loss returns), got {tuple(grad_output.shape)}")
        if v.dtype_name(grad_output.dtype) not in v.FLOAT_DTYPES + LOW_PRECISION:
            raise TypeError(f"{op}: grad_output must be floating, got {v.dtype_name(grad_output.dtype)}")
    _check_finite_grad_output(be, op, grad_output)
    return kind


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

    values = _host(be, grad_output).astype(np.float64)
    where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0]) if values.ndim else ()
    value = values[where]
    raise ValueError(f"{op}: grad_output holds {value} at {where[0]}; it must be finite" if where
                     else f"{op}: grad_output is {value}; it must be finite")


def _host(be: Any, x: Any):
    import numpy as np

    return np.asarray(be.to_numpy(x))


def _bad_input(be: Any, op: str, plan: Plan, rows: Any, row_max: Any, row_loss: Any, inputs: dict) -> ValueError:
    """The error for a chunk whose loss is not finite, naming the original row (sample)."""
    import numpy as np

    host_max = _host(be, row_max).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(host_max))
    if len(bad):
        return v.bad_slice(op, (int(rows[bad[0]]),), float(host_max[bad[0]]))
    for name, array in inputs.items():
        if array is not None:
            values = _host(be, array).astype(np.float64)
            # a -inf bias masks a class (its probability is 0): only NaN and +inf are wrong there
            bad_values = ~np.isfinite(values) if name != "linear_bias" else (np.isnan(values) | (values == np.inf))
            if np.any(bad_values):
                where = tuple(int(i) for i in np.argwhere(bad_values)[0])
                return ValueError(f"{op}: the {name} holds {values[where]} at "
                                  f"{where if len(where) > 1 else where[0]}; it must be finite")
    host_loss = _host(be, row_loss).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(host_loss))
    if len(bad) == 0:
        return ValueError(f"{op}: the summed loss overflows {v.dtype_name(row_loss.dtype)}")
    return v.bad_loss(op, int(rows[bad[0]]), float(host_loss[bad[0]]))


def make_plan(be: Any, op: str, kind: str, input: Any, linear_weight: Any, target: Any, weight: Any,
              reduction: str, ignore_index: int, label_smoothing: float, z_loss: float, softcap: Any,
              chunk_size: Any, memory_budget: Any, grad_output: Any, buffers: int) -> tuple[Plan, Any]:
    """The plan, and the targets of the rows processed (labels as int64, or probability rows)."""
    import numpy as np

    xp = be.xp
    n = int(input.shape[0])
    num_classes = int(linear_weight.shape[0])
    dtype_name = v.dtype_name(input.dtype)
    compute_dtype = xp.float32 if dtype_name in LOW_PRECISION else input.dtype
    rows = None
    labels = target
    if kind == "index":
        labels, kept = index_target(be, op, target, num_classes, int(ignore_index))
        if kept is not None:
            rows = np.flatnonzero(_host(be, kept))
            labels = xp.take(labels, xp.asarray(rows, device=device_of(labels)), axis=0)
    n_rows = n if rows is None else len(rows)
    cast_weight = None if weight is None else xp.astype(weight, compute_dtype)
    if kind == "index":
        if weight is None:
            denominator = float(n_rows)
        else:
            denominator = float(_host(be, xp.sum(xp.take(cast_weight, labels)))) if n_rows else 0.0
    else:
        denominator = float(n)
    if reduction == "mean" and denominator == 0.0:
        raise v.empty_mean(op)
    mean = reduction == "mean"
    row_scale = None
    if grad_output is not None:
        if isinstance(grad_output, numbers.Real) or grad_output.ndim == 0:
            row_scale = float(grad_output) if isinstance(grad_output, numbers.Real) else \
                float(_host(be, grad_output))
            if row_scale == 1.0:
                row_scale = None
            else:
                row_scale = xp.full((n_rows,), row_scale, dtype=compute_dtype, device=device_of(input))
        else:
            row_scale = xp.astype(grad_output, compute_dtype)
            if rows is not None:
                row_scale = xp.take(row_scale, xp.asarray(rows, device=device_of(row_scale)), axis=0)
    itemsize = 8 if compute_dtype == xp.float64 else 4
    chunk = plan_chunk(num_classes, int(input.shape[1]), itemsize, buffers, n_rows, chunk_size, memory_budget)
    plan = Plan(kind=kind, rows=rows, n_rows=n_rows, num_classes=num_classes, eps=float(label_smoothing),
                weight=cast_weight,
                weight_sum=float(num_classes) if weight is None else float(_host(be, xp.sum(cast_weight))),
                ce_scale=1.0 / denominator if mean else 1.0,
                z_scale=1.0 / n_rows if mean and n_rows else 1.0,
                z_loss=float(z_loss), softcap=None if softcap is None else float(softcap),
                chunk=max(1, min(chunk, max(1, n_rows))), compute_dtype=compute_dtype, row_scale=row_scale,
                denominator=denominator, z_denominator=float(n_rows))
    return plan, labels


@quiet_floating_point
def linear_cross_entropy(be: Any, input: Any, linear_weight: Any, target: Any, *, linear_bias: Any = None,
                         weight: Any = None, reduction: str = "mean", ignore_index: int = -100,
                         label_smoothing: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
                         chunk_size: int | None = None, memory_budget: int | None = None,
                         grad_output: Any = None, op: str = "linear_cross_entropy", want_grad: bool = False,
                         ops: ChunkOps | None = None):
    """The loss and, with ``want_grad``, ``(d input, d linear_weight, d linear_bias)``; see the module."""
    import numpy as np

    if ignore_index is None:  # torch's linear_cross_entropy default: -100 for class indices
        ignore_index = -100

    kind = check_arguments(be, op, input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                           label_smoothing, z_loss, softcap, chunk_size, memory_budget, grad_output)
    if ops is None:
        factory = getattr(be, "_linear_ce_ops", None)
        ops = factory() if factory is not None else ChunkOps(be)
    xp = be.xp
    plan, labels = make_plan(be, op, kind, input, linear_weight, target, weight, reduction, ignore_index,
                             label_smoothing, z_loss, softcap, chunk_size, memory_budget, grad_output,
                             ops.buffers_for(kind, float(label_smoothing), weight is not None, softcap))
    n, d = (int(s) for s in input.shape)
    num_classes = plan.num_classes
    cdtype = plan.compute_dtype
    device = device_of(input)
    rows = plan.rows
    rows_device = None if rows is None else xp.asarray(rows, device=device)
    # 16-bit inputs: the weights in float32 once (a copy of W), each chunk of input as it comes
    w_c = ops.cast(linear_weight, cdtype)
    b_c = None if linear_bias is None else ops.cast(linear_bias, cdtype)
    if want_grad:
        dw, db = ops.zero_grads(d, num_classes, linear_bias is not None, cdtype, device)
        dx_store = ops.input_grad_store(plan.n_rows, d, cdtype, device)
    loss_parts, ce_total, z_total = [], 0.0, 0.0
    inputs = {"input": input, "linear_weight": linear_weight, "linear_bias": linear_bias,
              "class weight": weight, "probability target": target if kind == "prob" else None}
    for start in range(0, plan.n_rows, plan.chunk):
        stop = min(plan.n_rows, start + plan.chunk)
        if rows is None:
            xc = input[start:stop, ...]
        else:
            xc = xp.take(input, rows_device[start:stop], axis=0)
        tc = labels[start:stop, ...]
        if kind == "prob" and v.dtype_name(tc.dtype) != v.dtype_name(cdtype):
            tc = xp.astype(tc, cdtype)
        scale = None if plan.row_scale is None else plan.row_scale[start:stop]
        xc = ops.cast(xc, cdtype)
        z = ops.logits(xc, w_c, b_c)
        ce_row, lse, row_max, g = ops.head(plan, z, tc, scale if want_grad else None)
        z_row = None if plan.z_loss == 0.0 else plan.z_loss * lse * lse
        row_loss = ce_row if z_row is None else ce_row + z_row
        ce_sum = xp.sum(ce_row)
        z_sum = None if z_row is None else xp.sum(z_row)
        checked = ce_sum if z_sum is None else ce_sum + z_sum
        if not math.isfinite(float(_host(be, checked))):  # one read back per chunk
            chunk_rows_ = np.arange(start, stop) if rows is None else rows[start:stop]
            raise _bad_input(be, op, plan, chunk_rows_, row_max, row_loss, inputs)
        if reduction == "none":
            loss_parts.append(row_loss)
        else:
            ce_total = ce_total + ce_sum
            z_total = z_total if z_sum is None else z_total + z_sum
        if want_grad:
            ops.input_grad(dx_store, g, w_c, start, stop)
            dw, db = ops.accumulate(dw, db, g, xc)
        del z, g
    if reduction == "none":
        per_row = (loss_parts[0] if len(loss_parts) == 1 else xp.concat(loss_parts) if loss_parts
                   else xp.zeros((0,), dtype=cdtype, device=device))
        loss = _assemble_rows(be, [per_row[:, None]], rows, n, 1, cdtype, device)[:, 0]
    else:
        if reduction == "mean":
            ce_total = ce_total / plan.denominator
            z_total = z_total / plan.z_denominator if plan.z_loss != 0.0 else z_total
        loss = ce_total + z_total if plan.z_loss != 0.0 else ce_total
        if plan.n_rows == 0:  # no rows were processed (every target ignored, reduction "sum")
            loss = xp.zeros((), dtype=cdtype, device=device)
        if not math.isfinite(float(_host(be, loss))):
            raise ValueError(f"{op}: the summed loss overflows {v.dtype_name(cdtype)}")
    loss = ops.cast(loss, input.dtype)
    if not want_grad:
        return loss, None
    dx_kept = ops.input_grad_result(dx_store, plan.n_rows, d, cdtype, device)
    dx = _assemble_rows(be, [dx_kept], rows, n, d, cdtype, device)
    out_dtype = input.dtype
    grads = (ops.cast(dx, out_dtype), ops.cast(dw, out_dtype), None if db is None else ops.cast(db, out_dtype))
    return loss, grads


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
