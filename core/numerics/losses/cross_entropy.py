"""Cross-entropy and the negative log-likelihood: value and analytic gradient, against ``be.xp``.

PyTorch's semantics (``torch.nn.functional.cross_entropy`` and ``nll_loss``),
documented in :mod:`softgrad.numerics.protocol`: class-index or probability targets,
``weight``, ``ignore_index``, ``reduction`` and ``label_smoothing``. Where
PyTorch returns NaN and the mathematics has a value (a ``-inf`` logit that
the target puts no mass on), this returns the value.

The gradient is the classic one: with the per-sample target distribution
``q`` and its mass ``s_i = sum_c q[i, c]``,
``d loss[i] / d z[i, j] = s_i * softmax(z)[i, j] - q[i, j]``, which is
``softmax - y`` for a one-hot target. (Differentiate
``-sum_c q_c (z_c - log sum_k exp z_k)``: the first term gives ``-q_j``, the
log-sum-exp gives ``s * exp z_j / sum_k exp z_k``.)
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics.losses.support import (
    checked_max,
    finish_loss,
    index_target,
    is_label,
    mean_denominator,
    one_hot,
    pick,
    quiet_floating_point,
    sample_weight,
    times_unless_zero,
    validate_class_loss,
)


@quiet_floating_point
def nll_loss(be: Any, logp: Any, target: Any, *, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean", op: str = "nll_loss", want_grad: bool = False):
    """``loss[i] = -weight[t_i] * logp[i, t_i]`` (0 where ``t_i == ignore_index``), reduced.

    The gradient with respect to ``logp`` is ``-weight[t_i]`` at ``(i, t_i)``
    and 0 elsewhere, divided like the loss.
    """
    xp = be.xp
    kind = validate_class_loss(be, op, logp, target, weight, ignore_index, reduction, 0.0,
                               what="log-probabilities")
    if kind != "index":
        raise TypeError(f"{op}: target must be integer class indices of shape (N,); "
                        "for class probabilities use cross_entropy")
    n, num_classes = logp.shape
    labels, kept = index_target(be, op, target, num_classes, int(ignore_index))
    picked = pick(be, logp, labels)
    weights = sample_weight(be, logp, labels, kept, weight)
    per_sample = -picked if weights is None else -times_unless_zero(be, weights, picked)
    denominator = mean_denominator(be, op, n, weights) if reduction == "mean" else 1
    loss = finish_loss(be, op, per_sample, reduction, denominator, inputs={"class weight": weight})
    if not want_grad:
        return loss, None
    row_factor = -xp.ones_like(picked) if weights is None else -weights
    grad = one_hot(be, labels, num_classes, logp.dtype) * row_factor[:, None]
    if reduction == "mean":
        grad = grad / denominator
    return loss, grad


@quiet_floating_point
def cross_entropy(be: Any, logits: Any, target: Any, *, weight: Any = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, op: str = "cross_entropy",
                  want_grad: bool = False):
    """The loss (reduced) and, if asked, its gradient, from one pass of softmax.

    With ``shifted = z - max`` and ``s = sum(exp(shifted))``,
    ``log_softmax = shifted - log s``, so each sample's loss
    ``-sum_c q_c log_softmax_c = (sum_c q_c) log s - sum_c q_c shifted_c``
    needs no full log_softmax matrix, and the gradient is
    ``(sum_c q_c) softmax - q``.
    """
    xp = be.xp
    kind = validate_class_loss(be, op, logits, target, weight, ignore_index, reduction, label_smoothing)
    n, num_classes = logits.shape
    eps, ignore_index = float(label_smoothing), int(ignore_index)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)  # checked with the loss
    exp_shifted = xp.exp(shifted)
    row_sum = xp.sum(exp_shifted, axis=1, keepdims=True)
    log_row_sum = xp.log(row_sum)[:, 0]

    if kind == "index":
        labels, kept = index_target(be, op, target, num_classes, ignore_index)
        weights = sample_weight(be, logits, labels, kept, weight)
        if weights is not None:
            # a zero weight would hide a row with no softmax from the loss; its gradient would be NaN
            checked_max(be, op, logits, 1)
        # nll part: weight[t] * (log s - shifted[t]); ignored samples weigh 0
        nll = log_row_sum - pick(be, shifted, labels)
        if weights is not None:
            nll = times_unless_zero(be, weights, nll)
        per_sample = nll if eps == 0.0 else (1.0 - eps) * nll
        # mass = sum_c q[i, c] = (1 - eps) w_t + eps / C * sum(weight), 0 if ignored
        mass = 1.0 if weights is None else (1.0 - eps) * weights
        kept_f = 1.0 if kept is None else xp.astype(kept, logits.dtype)
        if eps > 0.0:
            neg_log_softmax = log_row_sum[:, None] - shifted
            if weight is not None:
                neg_log_softmax = times_unless_zero(be, weight[None, :], neg_log_softmax)
            smooth = xp.sum(neg_log_softmax, axis=1)
            if kept is not None:  # an ignored row counts 0 even where its smooth term is infinite
                smooth = times_unless_zero(be, kept_f, smooth)
            per_sample = per_sample + (eps / num_classes) * smooth
            if weights is not None:
                class_weight_sum = float(num_classes) if weight is None else xp.sum(weight)
                mass = mass + (eps / num_classes) * kept_f * class_weight_sum
        denominator = mean_denominator(be, op, n, weights) if reduction == "mean" else 1
    else:
        q = target if eps == 0.0 else (1.0 - eps) * target + eps / num_classes
        if weight is not None:
            q = q * weight[None, :]
        mass = xp.sum(q, axis=1)
        per_sample = mass * log_row_sum - xp.sum(times_unless_zero(be, q, shifted), axis=1)
        denominator = n
    loss = finish_loss(be, op, per_sample, reduction, denominator, logits,
                       inputs={"class weight": weight, "probability target": None if kind == "index" else target})
    if not want_grad:
        return loss, None

    grad = exp_shifted / row_sum
    if kind == "index":
        if not isinstance(mass, float):
            grad = grad * mass[:, None]
        if eps > 0.0:
            class_weight = 1.0 if weight is None else weight[None, :]
            kept_column = kept_f if kept is None else kept_f[:, None]
            grad = grad - (eps / num_classes) * (class_weight * kept_column)
        onehot_mass = (1.0 - eps) if weights is None else (1.0 - eps) * weights[:, None]
        grad = xp.where(is_label(be, labels, num_classes), grad - onehot_mass, grad)
    else:
        grad = grad * mass[:, None] - q
    if reduction == "mean":
        grad = grad / denominator
    return loss, grad
