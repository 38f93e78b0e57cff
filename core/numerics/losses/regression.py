"""The regression losses, value and analytic gradient, against ``be.xp``: torch's semantics.

With ``d = input - target`` elementwise:

======================  ==========================================  ===============================
loss                    value                                       d value / d input
======================  ==========================================  ===============================
``mse_loss``            ``d**2``                                    ``2 d``
``l1_loss``             ``|d|``                                     ``sign(d)`` (0 at d = 0)
``smooth_l1_loss``      ``0.5 d**2 / beta`` if ``|d| < beta``,      ``d / beta``, else ``sign(d)``
                        else ``|d| - 0.5 beta``
``huber_loss``          ``0.5 d**2`` if ``|d| < delta``,            ``d``, else ``delta sign(d)``
                        else ``delta (|d| - 0.5 delta)``
======================  ==========================================  ===============================

``reduction="mean"`` averages over every element; the gradient is then
divided by the element count too. The subgradient of ``|d|`` at 0 is 0, as
torch's autograd gives; ``smooth_l1_loss`` with ``beta=0`` is ``l1_loss``.
(``huber_loss`` is ``delta * smooth_l1_loss`` with ``beta = delta``.)

``mse_loss``, ``l1_loss`` and ``huber_loss`` take torch's per-element
``weight`` (the input's shape), which multiplies each element's loss and
gradient. Its ``"mean"`` follows torch, which is not uniform: the weighted
sum over the sum of the weights for ``mse_loss`` and ``l1_loss``, over the
element count for ``huber_loss``.

References: PyTorch's ``torch.nn.functional.mse_loss``, ``l1_loss``,
``smooth_l1_loss`` and ``huber_loss`` (the semantics); Huber 1964, "Robust
Estimation of a Location Parameter" (the Huber loss); Girshick 2015, "Fast
R-CNN" (the smooth L1 loss); optax's ``squared_error`` and ``huber_loss``.
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics.losses.elementwise import (
    check_pair,
    check_positive,
    check_same_shape_weight,
    finish_elementwise,
    scale_gradient,
    weight_sum,
)
from softgrad.numerics.losses.support import quiet_floating_point


def _finish(be: Any, op: str, input: Any, target: Any, per_element: Any, grad: Any, *, reduction: str,
            want_grad: bool, weight: Any = None, mean_by_weight: bool = True):
    """The loss reduced (after one finiteness check) and, with ``want_grad``, ``grad()`` scaled to match: each
    element's loss and gradient times ``weight`` where given; ``"mean"`` divides by the weights' sum when
    ``mean_by_weight`` (torch's mse and l1), else by the element count (torch's weighted Huber)."""
    denominator = None
    if weight is not None:
        per_element = per_element * weight
        if reduction == "mean" and mean_by_weight:
            denominator = weight_sum(be, op, weight)
    loss = finish_elementwise(be, op, per_element, reduction, {"input": input, "target": target, "weight": weight},
                              denominator)
    if not want_grad:
        return loss, None
    gradient = grad() if weight is None else grad() * weight
    return loss, scale_gradient(gradient, reduction, denominator)


def _sign(be, input, target, d):
    """``sign(d)`` with ``d = input - target``, through the hook ``be.difference_sign`` (default ``xp.sign(d)``):
    XLA flushes subnormals to 0 in every operation (comparisons included), so on JAX ``sign`` of a residual
    below the smallest normal number would be 0 where torch and NumPy give +-1; JAX's hook reads the bits."""
    return be.difference_sign(input, target, d)


def _check(be, op, input, target, reduction, weight):
    check_pair(be, op, input, target, reduction)
    if weight is not None:
        check_same_shape_weight(be, op, weight, input)


@quiet_floating_point
def mse_loss(be: Any, input: Any, target: Any, *, reduction: str = "mean", weight: Any = None,
             op: str = "mse_loss", want_grad: bool = False):
    """Mean squared error, ``(input - target)**2`` reduced; gradient ``2 (input - target)``."""
    _check(be, op, input, target, reduction, weight)
    d = input - target
    return _finish(be, op, input, target, d * d, lambda: 2.0 * d, reduction=reduction, want_grad=want_grad,
                   weight=weight)


@quiet_floating_point
def l1_loss(be: Any, input: Any, target: Any, *, reduction: str = "mean", weight: Any = None,
            op: str = "l1_loss", want_grad: bool = False):
    """Mean absolute error, ``|input - target|`` reduced; gradient ``sign(input - target)``, 0 at 0."""
    _check(be, op, input, target, reduction, weight)
    d = input - target
    return _finish(be, op, input, target, be.xp.abs(d), lambda: _sign(be, input, target, d),
                   reduction=reduction, want_grad=want_grad, weight=weight)


@quiet_floating_point
def smooth_l1_loss(be: Any, input: Any, target: Any, *, reduction: str = "mean", beta: float = 1.0,
                   op: str = "smooth_l1_loss", want_grad: bool = False):
    """Quadratic below ``beta``, linear above: ``0.5 d**2 / beta`` or ``|d| - 0.5 beta``."""
    check_pair(be, op, input, target, reduction)
    beta = check_positive(op, "beta", beta, allow_zero=True)
    xp = be.xp
    d = input - target
    magnitude = xp.abs(d)
    if beta == 0.0:  # the quadratic piece vanishes: L1, as in torch
        return _finish(be, op, input, target, magnitude, lambda: _sign(be, input, target, d), reduction=reduction,
                       want_grad=want_grad)
    small = magnitude < beta
    per_element = xp.where(small, 0.5 * magnitude * magnitude / beta, magnitude - 0.5 * beta)
    return _finish(be, op, input, target, per_element, lambda: xp.where(small, d / beta, _sign(be, input, target, d)),
                   reduction=reduction, want_grad=want_grad)


@quiet_floating_point
def huber_loss(be: Any, input: Any, target: Any, *, reduction: str = "mean", delta: float = 1.0,
               weight: Any = None, op: str = "huber_loss", want_grad: bool = False):
    """Quadratic below ``delta``, linear above: ``0.5 d**2`` or ``delta (|d| - 0.5 delta)``."""
    _check(be, op, input, target, reduction, weight)
    delta = check_positive(op, "delta", delta, allow_zero=False)
    xp = be.xp
    d = input - target
    magnitude = xp.abs(d)
    small = magnitude < delta
    per_element = xp.where(small, 0.5 * magnitude * magnitude, delta * (magnitude - 0.5 * delta))
    return _finish(be, op, input, target, per_element, lambda: xp.where(small, d, delta * _sign(be, input, target, d)),
                   reduction=reduction, want_grad=want_grad, weight=weight, mean_by_weight=False)  # torch's weighted Huber mean: / numel
