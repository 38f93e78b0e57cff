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


def sgd_steps(params, grads_per_step, lrs, *, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
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


def adam_steps(params, grads_per_step, lrs, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
               maximize=False, decoupled_weight_decay=False):
    """``torch.optim.Adam`` / ``AdamW`` in float64 from torch's documented algorithm: the parameters after each step.

    With ``t`` counted from 1: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)`` (of the running maximum of
    ``v`` with amsgrad), ``p = p - lr m_hat / (sqrt(v_hat) + eps)``.
    """
    beta1, beta2 = betas
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    v_max = [np.zeros_like(p) for p in params]
    history = []
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if maximize:
                g = -g
            if decoupled_weight_decay:
                params[i] = params[i] - lr * weight_decay * params[i]
            else:
                g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g**2
            m_hat = m[i] / (1 - beta1**t)
            if amsgrad:
                v_max[i] = np.maximum(v_max[i], v[i])
                v_hat = v_max[i] / (1 - beta2**t)
            else:
                v_hat = v[i] / (1 - beta2**t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append([p.copy() for p in params])
    return history


def rmsprop_steps(params, grads_per_step, lrs, *, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False, maximize=False):
    """``torch.optim.RMSprop`` in float64 from torch's documented algorithm: the parameters after each step.

    ``v = alpha v + (1 - alpha) g^2``; centered: ``a = alpha a + (1 - alpha) g``,
    ``v_tilde = v - a^2``; ``b = momentum b + g / (sqrt(v_tilde) + eps)``,
    ``p = p - lr b`` (without momentum ``p = p - lr g / (sqrt(v_tilde) + eps)``).
    """
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    v = [np.zeros_like(p) for p in params]
    a = [np.zeros_like(p) for p in params]
    b = [np.zeros_like(p) for p in params]
    history = []
    for grads, lr in zip(grads_per_step, lrs):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if maximize:
                g = -g
            g = g + weight_decay * params[i]
            v[i] = alpha * v[i] + (1 - alpha) * g**2
            v_tilde = v[i]
            if centered:
                a[i] = alpha * a[i] + (1 - alpha) * g
                v_tilde = v_tilde - a[i] ** 2
            if momentum > 0:
                b[i] = momentum * b[i] + g / (np.sqrt(v_tilde) + eps)
                params[i] = params[i] - lr * b[i]
            else:
                params[i] = params[i] - lr * g / (np.sqrt(v_tilde) + eps)
        history.append([p.copy() for p in params])
    return history


def adagrad_steps(params, grads_per_step, lrs, *, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                  eps=1e-10, maximize=False):
    """``torch.optim.Adagrad`` in float64 from torch's documented algorithm: the parameters after each step.

    ``lr_t = lr / (1 + (t - 1) lr_decay)``, ``s = s + g^2`` (from
    ``initial_accumulator_value``), ``p = p - lr_t g / (sqrt(s) + eps)``.
    """
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    s = [np.full_like(p, initial_accumulator_value) for p in params]
    history = []
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        lr_t = lr / (1 + (t - 1) * lr_decay)
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if maximize:
                g = -g
            g = g + weight_decay * params[i]
            s[i] = s[i] + g**2
            params[i] = params[i] - lr_t * g / (np.sqrt(s[i]) + eps)
        history.append([p.copy() for p in params])
    return history
