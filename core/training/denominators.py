"""What each loss's ``reduction="mean"`` divides its sum by, for one shard of a batch: the number data-parallel
training sums over the ranks, so that the global sum over the global denominator is exactly the one-process
mean of the whole batch (with class weights, ``ignore_index`` and uneven shards, where averaging the ranks'
means is wrong).

A rule is ``rule(be, target, output_shape, options) -> int | backend scalar``: the shard's targets, the shape of
the model's output for the shard, the loss's options (on the backend). softgrad's own losses have theirs; a loss
registered later trains on several ranks once it has one (:func:`register_denominator`), and is refused in one
line until then: a wrong denominator would train silently on another loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.protocol import Backend

#: ``rule(be, target, output_shape, options)``: the shard's share of the mean's denominator
DenominatorRule = Callable[[Backend, Any, tuple[int, ...], Mapping[str, Any]], Any]


def class_denominator(be: Backend, target: Any, output_shape: tuple[int, ...], options: Mapping[str, Any]) -> Any:
    """Cross-entropy and NLL (torch's): the sum of the class weights ``weight[y_i]`` of the targets not equal
    to ``ignore_index`` (their count without weights); the rows for probability targets. Label smoothing does
    not change it."""
    xp = be.xp
    if len(target.shape) != 1:  # class probabilities (N, C): the mean is over the rows
        return int(output_shape[0])
    labels = xp.astype(target, xp.int64)
    kept = labels != int(options.get("ignore_index", -100))
    weight = options.get("weight")
    if weight is None:
        return xp.sum(xp.astype(kept, xp.int64))
    picked = xp.take(weight, xp.where(kept, labels, xp.zeros_like(labels)))
    return xp.sum(xp.where(kept, picked, xp.zeros_like(picked)))


def element_denominator(be: Backend, target: Any, output_shape: tuple[int, ...],
                        options: Mapping[str, Any]) -> int:
    """The elementwise losses (regression, binary cross-entropy on logits): every element of the output."""
    return math.prod(output_shape)


_RULES: dict[str, DenominatorRule] = {
    "cross_entropy": class_denominator, "nll_loss": class_denominator,
    **{name: element_denominator for name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                                              "binary_cross_entropy_with_logits")},
}


def register_denominator(loss: Loss | str, rule: DenominatorRule) -> None:
    """Let a loss registered later (a plugin's) train on several ranks: ``rule`` gives what its
    ``reduction="mean"`` divides a shard's summed loss by (the shard's rows for a mean over samples,
    ``math.prod(output_shape)`` for a mean over elements)."""
    if not callable(rule):
        raise TypeError(f"register_denominator: the rule for {loss!r} must be callable, got {rule!r}")
    _RULES[get_loss(loss).name] = rule


def denominator_rule(loss: Loss | str) -> DenominatorRule:
    """The rule of ``loss``; a ValueError in one line for a loss without one."""
    name = get_loss(loss).name
    rule = _RULES.get(name)
    if rule is None:
        raise ValueError(f"distributed training needs to know what the loss {name!r} divides its sum by to take "
                         f"the mean; register it with softgrad.training.denominators.register_denominator("
                         f"{name!r}, rule), or train on one process")
    return rule


def check_distributable(loss: Loss | str, options: Mapping[str, Any]) -> None:
    """A ValueError in one line for what cannot be split across ranks: a loss without a rule, and a weight
    with one entry per row of the batch (torch's per-element ``weight`` of mse, l1 and huber, a
    binary cross-entropy weight whose first axis is not 1)."""
    loss = get_loss(loss)
    denominator_rule(loss)
    weight = options.get("weight")
    if loss.name in ("mse_loss", "l1_loss", "huber_loss") and weight is not None:
        raise ValueError(f"loss_options weight: {loss.name}'s weight has one entry per element of the batch, "
                         "which distributed training cannot split across the ranks; train on one process")
    for key in ("weight", "pos_weight"):
        value = options.get(key)
        shape = tuple(getattr(value, "shape", ()))
        if loss.name == "binary_cross_entropy_with_logits" and len(shape) >= 2 and shape[0] != 1:
            raise ValueError(f"loss_options {key}: shape {shape} weighs each row of the batch, which "
                             "distributed training cannot split across the ranks; give one per class, shape "
                             f"({shape[-1]},)")


__all__ = ["DenominatorRule", "check_distributable", "class_denominator", "denominator_rule",
           "element_denominator", "register_denominator"]
