"""Sigmoid, log-sigmoid and binary cross-entropy on logits: value and analytic gradient, against ``be.xp``.

With ``softplus(t) = log(1 + exp(t)) = max(t, 0) + log1p(exp(-|t|))``,
``log sigmoid(z) = -softplus(-z)`` and ``log(1 - sigmoid(z)) = -softplus(z)``,
so PyTorch's ``binary_cross_entropy_with_logits`` is, per element,

    loss = weight * (pos_weight * y * softplus(-z) + (1 - y) * softplus(z))

a sum of two non-negative terms: no ``log(sigmoid)`` (which is ``-inf`` once
``sigmoid`` underflows), no ``exp`` of a large number, no cancellation, for
logits of any magnitude. Its derivative with respect to ``z``:

    d loss / d z = weight * ((1 - y) * sigmoid(z) - pos_weight * y * sigmoid(-z))

which is ``sigmoid(z) - y`` without weights.

References: PyTorch's ``torch.nn.functional.binary_cross_entropy_with_logits``
(the semantics, ``pos_weight`` included); optax's ``sigmoid_binary_cross_entropy``
(the same softplus form).
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.losses.elementwise import check_pair, finish_elementwise, first_bad, scale_gradient
from softgrad.numerics.losses.support import quiet_floating_point


def _sigmoid_parts(be: Any, z: Any):
    """``(exp(-|z|), z >= 0)``: what sigmoid, log-sigmoid and softplus are built from without overflow."""
    xp = be.xp
    return xp.exp(-xp.abs(z)), z >= 0


def _sigmoid_from(be: Any, e: Any, nonnegative: Any) -> Any:
    # 1 / (1 + exp(-z)) for z >= 0; exp(z) / (1 + exp(z)) below, where exp(-z) would overflow
    return be.xp.where(nonnegative, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_no_nan(be: Any, op: str, x: Any, out: Any) -> Any:
    if bool(be.xp.any(be.xp.isnan(out))):
        found = first_bad(be, x)
        where = found[0] if found is not None else ()
        raise ValueError(f"{op}: the input holds NaN at {where[0] if len(where) == 1 else where}")
    return out


@quiet_floating_point
def sigmoid(be: Any, x: Any, op: str = "sigmoid") -> Any:
    """``1 / (1 + exp(-x))``, exact to rounding for any float (0 and 1 at -inf and +inf)."""
    v.check_backend_array(be, op, "the input", x)
    v.check_float_array(op, "the input", x.dtype)
    e, nonnegative = _sigmoid_parts(be, x)
    return _check_no_nan(be, op, x, _sigmoid_from(be, e, nonnegative))


@quiet_floating_point
def log_sigmoid(be: Any, x: Any, op: str = "log_sigmoid") -> Any:
    """``min(x, 0) - log1p(exp(-|x|))``: never ``log`` of an underflowed sigmoid (``-inf`` only at ``x = -inf``)."""
    v.check_backend_array(be, op, "the input", x)
    v.check_float_array(op, "the input", x.dtype)
    xp = be.xp
    e, nonnegative = _sigmoid_parts(be, x)
    out = xp.where(nonnegative, xp.zeros_like(x), x) - xp.log1p(e)
    return _check_no_nan(be, op, x, out)


def _check_broadcast_weight(be: Any, op: str, name: str, weight: Any, input: Any, hint: str) -> None:
    v.check_backend_array(be, op, name, weight)
    if v.dtype_name(weight.dtype) != v.dtype_name(input.dtype):
        raise TypeError(f"{op}: {name} is {v.dtype_name(weight.dtype)} but the input is "
                        f"{v.dtype_name(input.dtype)}; use one dtype for both")
    shape, target = tuple(weight.shape), tuple(input.shape)
    fits = len(shape) <= len(target) and all(w in (1, t) for w, t in zip(reversed(shape), reversed(target)))
    if not fits:
        raise ValueError(f"{op}: {name} has shape {shape}, which does not broadcast to the input's {target} "
                         f"({hint})")


def _check_probabilities(be: Any, op: str, target: Any) -> None:
    """Targets are probabilities: every entry in [0, 1], none NaN."""
    import numpy as np

    xp = be.xp
    low, high = float(be.to_numpy(xp.min(target))), float(be.to_numpy(xp.max(target)))
    if 0.0 <= low and high <= 1.0:
        return
    host = np.asarray(be.to_numpy(target))
    bad = np.argwhere(~((host >= 0.0) & (host <= 1.0)))[0]
    where = tuple(int(i) for i in bad)
    raise ValueError(f"{op}: the target holds {host[where]} at {where[0] if len(where) == 1 else where}; "
                     "targets are probabilities in [0, 1]")


@quiet_floating_point
def binary_cross_entropy_with_logits(be: Any, input: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Any = None, reduction: str = "mean",
                                     op: str = "binary_cross_entropy_with_logits", want_grad: bool = False):
    """Binary cross-entropy of ``sigmoid(input)`` against probabilities ``target``, from the logits.

    ``weight`` rescales each element's loss and ``pos_weight`` the positive
    term (per class: shape ``(C,)`` for an ``(N, C)`` input); both broadcast
    to the input's shape. Input and target have one shape and float dtype.
    """
    check_pair(be, op, input, target, reduction, regression=False)
    if weight is not None:
        _check_broadcast_weight(be, op, "weight", weight, input, "a weight per element, per sample or per class")
    if pos_weight is not None:
        _check_broadcast_weight(be, op, "pos_weight", pos_weight, input, "a weight per class, shape (C,)")
    _check_probabilities(be, op, target)
    xp = be.xp
    e, nonnegative = _sigmoid_parts(be, input)
    log1p_e = xp.log1p(e)
    zero = xp.zeros_like(input)
    softplus_z = xp.where(nonnegative, input, zero) + log1p_e  # -log(1 - sigmoid(z))
    softplus_minus_z = xp.where(nonnegative, zero, -input) + log1p_e  # -log(sigmoid(z))
    positive = target if pos_weight is None else pos_weight * target
    negative = 1.0 - target
    # 0 * inf = 0: a certain target puts no weight on the other side, even for an infinite logit
    per_element = (xp.where(positive != 0, positive * softplus_minus_z, zero)
                   + xp.where(negative != 0, negative * softplus_z, zero))
    if weight is not None:
        per_element = per_element * weight
    loss = finish_elementwise(be, op, per_element, reduction,
                              {"input": input, "weight": weight, "pos_weight": pos_weight})
    if not want_grad:
        return loss, None
    sig = _sigmoid_from(be, e, nonnegative)
    sig_minus = _sigmoid_from(be, e, xp.logical_not(nonnegative))  # sigmoid(-z) = 1 - sigmoid(z), exactly
    grad = negative * sig - positive * sig_minus
    if weight is not None:
        grad = grad * weight
    return loss, scale_gradient(grad, reduction)


__all__ = ["binary_cross_entropy_with_logits", "log_sigmoid", "sigmoid"]
