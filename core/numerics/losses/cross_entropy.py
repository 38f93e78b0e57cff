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
log-sum-exp gives ``s * exp z_j / sum_k exp z_k``.) The arithmetic itself is
:mod:`softgrad.numerics.losses.softmax_cross_entropy`'s pure functions, with
the references; this module checks the arguments and diagnoses non-finite
values around them. ``nll_loss`` is ``loss_i = -w_{t_i} logp_{i, t_i}``
(``torch.nn.functional.nll_loss``).
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics.losses import softmax_cross_entropy
from softgrad.numerics.losses.support import (
    checked_max,
    device_of,
    finish_loss,
    index_target,
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

    ``loss_i = s_i lse(z_i) - sum_c q_ic z_ic`` and ``d loss_i / d z_i = s_i softmax(z_i) - q_i``,
    with ``q`` the target distribution and ``s`` its mass (see
    :mod:`softgrad.numerics.losses.softmax_cross_entropy`, whose pure functions compute it); this
    checks the arguments first and names the cause of a non-finite loss after.
    """
    xp = be.xp
    kind = validate_class_loss(be, op, logits, target, weight, ignore_index, reduction, label_smoothing)
    n, num_classes = logits.shape
    if kind == "index":
        labels, kept = index_target(be, op, target, num_classes, int(ignore_index))
        if weight is not None or kept is not None:
            # a zero weight would hide a row with no softmax from the loss; its gradient would be NaN
            checked_max(be, op, logits, 1)
        rows = softmax_cross_entropy.index_rows(xp, logits, labels, kept=kept, class_weight=weight,
                                                label_smoothing=label_smoothing, want_grad=want_grad,
                                                device=device_of(logits))
        denominator = mean_denominator(be, op, n, rows.weights) if reduction == "mean" else 1
    else:
        rows = softmax_cross_entropy.probability_rows(xp, logits, target, class_weight=weight,
                                                      label_smoothing=label_smoothing, want_grad=want_grad)
        denominator = n
    loss = finish_loss(be, op, rows.loss, reduction, denominator, logits,
                       inputs={"class weight": weight, "probability target": None if kind == "index" else target})
    if not want_grad:
        return loss, None
    return loss, rows.grad / denominator if reduction == "mean" else rows.grad
