"""Independent float64 references for the elementwise losses and the sigmoid, from their definitions.

Nothing here imports softgrad. Each loss is written as its textbook formula,
per element, then reduced over every element as ``torch.nn.functional`` does;
the gradients are the formulas' derivatives, written out separately.
"""

from __future__ import annotations

import numpy as np


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _reduce(per_element, reduction):
    if reduction == "none":
        return per_element
    return per_element.sum() if reduction == "sum" else per_element.mean()


def _scale(grad, reduction):
    return grad / grad.size if reduction == "mean" else grad


def sigmoid(x):
    """``1 / (1 + exp(-x))``, evaluated on each side of 0 so that nothing overflows."""
    (x,) = _f64(x)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def softplus(x):
    """``log(1 + exp(x))`` = ``max(x, 0) + log(1 + exp(-|x|))``."""
    (x,) = _f64(x)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def log_sigmoid(x):
    return -softplus(-np.asarray(x, dtype=np.float64))


def pieces(name, d, beta=1.0, delta=1.0):
    """``(value, derivative)`` of one regression loss at the residuals ``d = input - target``."""
    a = np.abs(d)
    if name == "mse_loss":
        return d**2, 2 * d
    if name == "l1_loss" or (name == "smooth_l1_loss" and beta == 0):
        return a, np.sign(d)
    if name == "smooth_l1_loss":
        return np.where(a < beta, 0.5 * d**2 / beta, a - 0.5 * beta), np.where(a < beta, d / beta, np.sign(d))
    if name == "huber_loss":
        return (np.where(a < delta, 0.5 * d**2, delta * (a - 0.5 * delta)),
                np.where(a < delta, d, delta * np.sign(d)))
    raise ValueError(name)


def _weighted_mean_denominator(name, weight, size):
    # torch: the weighted mean of mse_loss and l1_loss divides by the sum of the weights, huber_loss's by numel
    return size if weight is None or name == "huber_loss" else weight.sum()


def regression_loss(name, input, target, reduction="mean", weight=None, **options):
    input, target, weight = _f64(input, target, weight)
    per_element = pieces(name, input - target, **options)[0] * (1.0 if weight is None else weight)
    if reduction == "mean":
        return per_element.sum() / _weighted_mean_denominator(name, weight, per_element.size)
    return _reduce(per_element, reduction)


def regression_grad(name, input, target, reduction="mean", weight=None, **options):
    input, target, weight = _f64(input, target, weight)
    grad = pieces(name, input - target, **options)[1] * (1.0 if weight is None else weight)
    return grad / _weighted_mean_denominator(name, weight, grad.size) if reduction == "mean" else grad


def bce_with_logits(z, y, weight=None, pos_weight=None, reduction="mean"):
    """``-w [p y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]``, the logs through softplus."""
    z, y, weight, pos_weight = _f64(z, y, weight, pos_weight)
    p = 1.0 if pos_weight is None else pos_weight
    w = 1.0 if weight is None else weight
    per_element = w * (p * y * softplus(-z) + (1 - y) * softplus(z))
    return _reduce(np.broadcast_to(per_element, z.shape), reduction)


def bce_with_logits_grad(z, y, weight=None, pos_weight=None, reduction="mean"):
    """``w [(1 - y) sigmoid(z) - p y (1 - sigmoid(z))]``."""
    z, y, weight, pos_weight = _f64(z, y, weight, pos_weight)
    p = 1.0 if pos_weight is None else pos_weight
    w = 1.0 if weight is None else weight
    s = sigmoid(z)
    grad = np.broadcast_to(w * ((1 - y) * s - p * y * sigmoid(-z)), z.shape)
    return _scale(np.array(grad), reduction)


def loss(name, input, target, **options):
    if name == "binary_cross_entropy_with_logits":
        return bce_with_logits(input, target, **options)
    return regression_loss(name, input, target, **options)


def grad(name, input, target, **options):
    if name == "binary_cross_entropy_with_logits":
        return bce_with_logits_grad(input, target, **options)
    return regression_grad(name, input, target, **options)
