"""Softmax cross-entropy's arithmetic as pure functions of arrays: the one definition a backend reuses.

No checks, no reads back to the host, no backend: each function computes with
the array namespace ``xp`` it is given, branches only on Python values (the
targets' kind, whether an option is set), and returns new arrays. So the
reference definition (:func:`softgrad.numerics.losses.cross_entropy.cross_entropy`,
which checks its arguments and diagnoses non-finite values around them) runs
them, and a compiling backend may trace them (JAX's ``jnp`` is an ``xp``).

The mathematics. For one sample with logits ``z`` (``C`` classes) and target
distribution ``q``, with mass ``s = sum_c q_c`` and
``lse(z) = log sum_k exp z_k``::

    loss = -sum_c q_c log softmax(z)_c = s * lse(z) - sum_c q_c z_c
    d loss / d z_j = s * softmax(z)_j - q_j

(the first term differentiates to ``s * exp z_j / sum_k exp z_k``, the second
to ``-q_j``), which is ``softmax - onehot`` for a class label. ``q`` is, as
in ``torch.nn.functional.cross_entropy``:

- a class label ``t``: ``q = (1 - eps) w_t onehot(t) + (eps / C) w``, with
  ``w`` the class weights (1 without them) and ``eps`` the label smoothing
  (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
  Vision", section 7); an ignored sample has ``q = 0``;
- class probabilities ``y``: ``q = ((1 - eps) y + eps / C) * w``.

``z - max(z)`` is exponentiated, never ``z``, so no finite logit overflows
(the log-sum-exp trick); ``lse(z) = max(z) + log sum_k exp(z_k - max(z))``.
A zero weight times an infinite log-probability counts 0 (``0 log 0 = 0``),
as the mathematics has it (torch gives NaN there).

References: PyTorch's ``torch.nn.functional.cross_entropy`` (the semantics);
optax's ``softmax_cross_entropy`` and ``softmax_cross_entropy_with_integer_labels``
(the same arithmetic, without weights or ignored samples).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class CrossEntropyRows(NamedTuple):
    """Each sample's cross-entropy, unreduced, and the gradient of their sum with respect to the logits."""

    loss: Any  # (N,)
    grad: Any  # (N, C), or None when not asked for
    weights: Any  # each sample's weight w_t (0 where ignored), or None when every sample weighs 1


class LogSumExpRows(NamedTuple):
    """What the chunked (linear) cross-entropy needs of a chunk of logits, from their log-sum-exp."""

    loss: Any  # (c,) each row's cross-entropy
    lse: Any  # (c,) each row's log-sum-exp
    row_max: Any  # (c,) each row's largest logit (inf or NaN where the row has no softmax)
    softmax: Any  # (c, C)
    mass: Any  # (c,) each row's s = sum_c q_c, or a Python float where it is the same for all
    q: Any  # (c, C) the target distribution


def unless_zero(xp: Any, factor: Any, values: Any) -> Any:
    """``factor * values`` where a zero factor gives 0 even against -inf (0 log 0 = 0)."""
    return xp.where(factor != 0, factor * values, xp.zeros_like(values))


def _softmax_parts(xp: Any, logits: Any) -> tuple[Any, Any, Any, Any]:
    """``(z - max, exp(z - max), its row sums (keepdims), their logs)``: softmax and log-softmax in one pass."""
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exp_shifted = xp.exp(shifted)
    row_sum = xp.sum(exp_shifted, axis=1, keepdims=True)
    return shifted, exp_shifted, row_sum, xp.log(row_sum)[:, 0]


def sample_weights(xp: Any, dtype: Any, labels: Any, kept: Any, class_weight: Any) -> Any:
    """``w[t_i]`` for each sample, 0 where ignored; None when every sample weighs 1."""
    if class_weight is None:
        return None if kept is None else xp.astype(kept, dtype)
    weights = xp.take(class_weight, labels)
    return weights if kept is None else xp.where(kept, weights, xp.zeros_like(weights))


def index_rows(xp: Any, logits: Any, labels: Any, *, kept: Any = None, class_weight: Any = None,
               label_smoothing: float = 0.0, want_grad: bool = False, device: Any = None) -> CrossEntropyRows:
    """Cross-entropy against class labels: each sample's loss and the gradient of their sum.

    ``labels`` int64 ``(N,)`` in ``[0, C)`` (an ignored sample's label any valid one: it weighs 0);
    ``kept`` the boolean mask of the samples not ignored, or None for all; ``class_weight`` ``(C,)`` or
    None; ``device`` where index arrays are made (the logits' device; None for the default).
    """
    n, num_classes = logits.shape
    eps = float(label_smoothing)
    shifted, exp_shifted, row_sum, log_row_sum = _softmax_parts(xp, logits)
    weights = sample_weights(xp, logits.dtype, labels, kept, class_weight)
    # nll part: w_t (lse - z_t), from the shifted logits; an ignored sample weighs 0
    nll = log_row_sum - shifted[xp.arange(n, device=device), labels]
    if weights is not None:
        nll = unless_zero(xp, weights, nll)
    loss = nll if eps == 0.0 else (1.0 - eps) * nll
    # mass s = (1 - eps) w_t + eps / C * sum(w), 0 if ignored
    mass = 1.0 if weights is None else (1.0 - eps) * weights
    kept_f = 1.0 if kept is None else xp.astype(kept, logits.dtype)
    if eps > 0.0:
        neg_log_softmax = log_row_sum[:, None] - shifted
        if class_weight is not None:
            neg_log_softmax = unless_zero(xp, class_weight[None, :], neg_log_softmax)
        smooth = xp.sum(neg_log_softmax, axis=1)
        if kept is not None:  # an ignored row counts 0 even where its smooth term is infinite
            smooth = unless_zero(xp, kept_f, smooth)
        loss = loss + (eps / num_classes) * smooth
        if weights is not None:
            class_weight_sum = float(num_classes) if class_weight is None else xp.sum(class_weight)
            mass = mass + (eps / num_classes) * kept_f * class_weight_sum
    if not want_grad:
        return CrossEntropyRows(loss, None, weights)
    grad = exp_shifted / row_sum
    if not isinstance(mass, float):
        grad = grad * mass[:, None]
    if eps > 0.0:
        weight_row = 1.0 if class_weight is None else class_weight[None, :]
        kept_column = kept_f if kept is None else kept_f[:, None]
        grad = grad - (eps / num_classes) * (weight_row * kept_column)
    onehot_mass = (1.0 - eps) if weights is None else (1.0 - eps) * weights[:, None]
    is_label = labels[:, None] == xp.arange(num_classes, device=device)[None, :]
    return CrossEntropyRows(loss, xp.where(is_label, grad - onehot_mass, grad), weights)


def probability_rows(xp: Any, logits: Any, target: Any, *, class_weight: Any = None, label_smoothing: float = 0.0,
                     want_grad: bool = False) -> CrossEntropyRows:
    """Cross-entropy against class probabilities ``target`` ``(N, C)``: each sample's loss and the gradient
    of their sum."""
    num_classes = logits.shape[1]
    eps = float(label_smoothing)
    shifted, exp_shifted, row_sum, log_row_sum = _softmax_parts(xp, logits)
    q = target if eps == 0.0 else (1.0 - eps) * target + eps / num_classes
    if class_weight is not None:
        q = q * class_weight[None, :]
    mass = xp.sum(q, axis=1)
    loss = mass * log_row_sum - xp.sum(unless_zero(xp, q, shifted), axis=1)
    if not want_grad:
        return CrossEntropyRows(loss, None, None)
    return CrossEntropyRows(loss, (exp_shifted / row_sum) * mass[:, None] - q, None)


def log_sum_exp_rows(xp: Any, z: Any, target: Any, *, kind: str, label_smoothing: float = 0.0, weight: Any = None,
                     weight_sum: float | None = None, device: Any = None) -> LogSumExpRows:
    """A chunk's cross-entropy from its log-sum-exp (the linear cross-entropy's head, shared and compiled).

    ``kind`` ``"index"`` (``target`` int labels, none ignored) or ``"prob"``; ``weight`` the class
    weights or None, ``weight_sum`` their sum (``C`` without them). A row whose maximum is not finite
    gets a finite stand-in maximum, so the caller diagnoses it from ``row_max`` rather than from NaN.
    """
    num_classes = z.shape[1]
    eps = float(label_smoothing)
    m = xp.max(z, axis=1)
    m_safe = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(z - m_safe[:, None])
    s = xp.sum(e, axis=1)
    lse = m_safe + xp.log(s)
    p = e / s[:, None]
    if kind != "index":
        q = target if eps == 0.0 else (1.0 - eps) * target + eps / num_classes
        if weight is not None:
            q = q * weight[None, :]
        mass = xp.sum(q, axis=1)
        return LogSumExpRows(mass * lse - xp.sum(unless_zero(xp, q, z), axis=1), lse, m, p, mass, q)
    is_target = target[:, None] == xp.arange(num_classes, device=device)[None, :]
    z_t = xp.sum(xp.where(is_target, z, xp.zeros_like(z)), axis=1)
    w_t = None if weight is None else xp.take(weight, target)
    nll = lse - z_t
    ce = nll if w_t is None else unless_zero(xp, w_t, nll)
    if eps != 0.0:
        neg_logp = lse[:, None] - z
        if weight is not None:
            neg_logp = unless_zero(xp, weight[None, :], neg_logp)
        ce = (1.0 - eps) * ce + (eps / num_classes) * xp.sum(neg_logp, axis=1)
    mass = (1.0 - eps) * (1.0 if w_t is None else w_t) + (eps / num_classes) * (
        float(num_classes) if weight_sum is None else weight_sum)
    onehot = xp.astype(is_target, z.dtype) * ((1.0 - eps) * (1.0 if w_t is None else w_t[:, None]))
    q = onehot if eps == 0.0 else onehot + (eps / num_classes) * (1.0 if weight is None else weight[None, :])
    return LogSumExpRows(ce, lse, m, p, mass, q)
