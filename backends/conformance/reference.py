"""Independent float64 NumPy references, written from the definitions.

Nothing here imports softgrad: these are what the backends are checked
against, next to PyTorch's own functions.
"""

from __future__ import annotations

import numpy as np


def log_softmax(z, axis=-1):
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    return np.exp(log_softmax(z, axis))


def target_distribution(num_classes, target, weight=None, ignore_index=-100, label_smoothing=0.0):
    """q[i, c], the weight each log-probability gets, and what "mean" divides by."""
    target = np.asarray(target)
    w = np.ones(num_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = label_smoothing
    if target.ndim == 2:  # probabilities
        q = ((1 - eps) * target.astype(np.float64) + eps / num_classes) * w[None, :]
        return q, float(target.shape[0])
    n = target.shape[0]
    q = np.zeros((n, num_classes))
    denominator = 0.0
    for i in range(n):
        t = int(target[i])
        if t == ignore_index:
            continue
        q[i, t] += (1 - eps) * w[t]
        q[i, :] += eps / num_classes * w
        denominator += w[t]
    return q, denominator


def _weighted_sum(q, logp):
    # 0 * log 0 = 0: a class with no target mass contributes nothing
    return np.sum(np.where(q == 0, 0.0, q * np.where(q == 0, 0.0, logp)), axis=1)


def _reduce(per_sample, reduction, denominator):
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / denominator


def cross_entropy(z, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z = np.asarray(z, dtype=np.float64)
    q, denominator = target_distribution(z.shape[1], target, weight, ignore_index, label_smoothing)
    return _reduce(-_weighted_sum(q, log_softmax(z)), reduction, denominator)


def cross_entropy_grad(z, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z = np.asarray(z, dtype=np.float64)
    q, denominator = target_distribution(z.shape[1], target, weight, ignore_index, label_smoothing)
    grad = q.sum(axis=1, keepdims=True) * softmax(z) - q
    return grad / denominator if reduction == "mean" else grad


def nll_loss(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    logp = np.asarray(logp, dtype=np.float64)
    q, denominator = target_distribution(logp.shape[1], target, weight, ignore_index, 0.0)
    return _reduce(-_weighted_sum(q, logp), reduction, denominator)


def sgd_steps(params, grads_per_step, lrs, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """``torch.optim.SGD`` (foreach=False) in float64, step after step: the parameters after each step.

    ``grads_per_step[k][i]`` is parameter i's gradient at step k; the first step
    with momentum sets ``buf = g``.
    """
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    buffers = [None] * len(params)
    history = []
    for grads, lr in zip(grads_per_step, lrs):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64) + weight_decay * params[i]
            if momentum != 0.0:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + (1 - dampening) * g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            params[i] = params[i] - lr * g
        history.append([p.copy() for p in params])
    return history
