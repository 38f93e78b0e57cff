"""One implementation of the Backend protocol, written against an array namespace.

``xp`` is an array-api-compat namespace (numpy, torch or cupy), so NumPy,
PyTorch and CuPy share this code; a backend overrides only plumbing and what
its framework fuses. The docstrings live in :mod:`core.protocol`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from core import validation as v
from core.sgd import SGDState, check_sgd_arguments, check_sgd_hyperparameters


def _quiet_floating_point(method):
    """Run ``method`` without NumPy's floating-point warnings: non-finite results are
    diagnosed and raised as clear errors instead (see ``_finish_loss``)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return method(*args, **kwargs)

    return wrapper


class ArrayAPIBackend:
    name: str
    device: str
    xp: Any  # an array-api-compat namespace
    array_type: type  # the framework's array class

    def _check_array(self, op: str, what: str, x: Any) -> None:
        if not isinstance(x, self.array_type):
            raise TypeError(
                f"{op}: {what} is a {type(x).__module__}.{type(x).__name__}, not an array of the "
                f"{self.name!r} backend; convert it once with be.asarray(...)"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.device}>"

    # ---- plumbing ------------------------------------------------------------

    def synchronize(self) -> None:
        pass

    def matmul(self, a, b):
        return a @ b

    def affine(self, x, weight, bias):
        y = x @ weight
        y += bias  # in place: the product is a fresh array
        return y

    def relu_backward(self, h, dh):
        dh *= h > 0
        return dh

    def maximum(self, a, b):
        if isinstance(b, (int, float)):
            b = self.xp.asarray(b, dtype=a.dtype, device=self._device_of(a))
        return self.xp.maximum(a, b)

    def sum(self, x, axis=None):
        if self.xp.isdtype(x.dtype, "real floating"):
            return self.xp.sum(x, axis=axis, dtype=x.dtype)
        return self.xp.sum(x, axis=axis)

    def tanh(self, x):
        return self.xp.tanh(x)

    def argmax(self, x, axis=-1):
        return self.xp.argmax(x, axis=axis)

    def _device_of(self, x):
        import array_api_compat

        return array_api_compat.device(x)

    def _to_host_float(self, x) -> float:
        return float(self.to_numpy(x))

    # ---- softmax ---------------------------------------------------------------

    def _checked_max(self, op: str, z, axis: int):
        """The slice maxima (keepdims), after checking that every one is finite."""
        xp = self.xp
        m = xp.max(z, axis=axis, keepdims=True)
        if not bool(xp.all(xp.isfinite(m))):
            host = np.squeeze(self.to_numpy(m), axis=axis)
            position = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
            raise v.bad_slice(op, position, float(host[position]))
        return m

    def _prepare_softmax_input(self, op: str, z, axis: int) -> int:
        self._check_array(op, "the input", z)
        v.check_float_array(op, "the input", z.dtype)
        axis = v.normalize_axis(op, axis, z.ndim)
        v.check_not_empty(op, "the input", tuple(z.shape))
        return axis

    def softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("softmax", z, axis)
        e = z - self._checked_max("softmax", z, axis)
        e = self.xp.exp(e)
        e /= self.xp.sum(e, axis=axis, keepdims=True)
        return e

    def log_softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("log_softmax", z, axis)
        shifted = z - self._checked_max("log_softmax", z, axis)
        shifted -= self.xp.log(self.xp.sum(self.xp.exp(shifted), axis=axis, keepdims=True))
        return shifted

    # ---- losses ----------------------------------------------------------------

    def _label_range(self, labels) -> tuple[int, int]:
        """The smallest and largest label (a backend may fetch both in one transfer)."""
        return int(self.xp.min(labels)), int(self.xp.max(labels))

    def _index_target(self, op: str, target, num_classes: int, ignore_index: int):
        """Labels as int64 and, when some are ignored, the mask of the ones kept."""
        xp = self.xp
        labels = xp.astype(target, xp.int64, copy=False)
        low, high = self._label_range(labels)
        if 0 <= low and high < num_classes and not 0 <= ignore_index < num_classes:
            return labels, None  # the common case: every label valid, none equal to ignore_index
        kept = labels != ignore_index
        out_of_range = ((labels < 0) | (labels >= num_classes)) & kept
        if bool(xp.any(out_of_range)):
            host = self.to_numpy(labels)
            bad = int(np.argmax(self.to_numpy(out_of_range)))
            raise v.label_out_of_range(op, int(host[bad]), bad, num_classes, ignore_index)
        if bool(xp.all(kept)):
            return labels, None
        return xp.where(kept, labels, xp.zeros_like(labels)), kept

    def _validate_loss_inputs(self, op, logits, target, weight, ignore_index, reduction, label_smoothing,
                              what="logits"):
        self._check_array(op, what, logits)
        self._check_array(op, "target", target)
        if weight is not None:
            self._check_array(op, "weight", weight)
        v.check_logits(op, tuple(logits.shape), logits.dtype, what)
        v.check_options(op, reduction, label_smoothing, ignore_index)
        kind = v.target_kind(op, tuple(logits.shape), logits.dtype, tuple(target.shape), target.dtype,
                             ignore_index)
        if weight is not None:
            v.check_weight(op, tuple(weight.shape), weight.dtype, logits.shape[1], logits.dtype)
        return kind

    @staticmethod
    def _times_unless_zero(xp, factor, values):
        """``factor * values`` where a zero factor gives 0 even against -inf (0 log 0 = 0)."""
        with np.errstate(invalid="ignore"):  # NumPy warns about the 0 * inf that where() discards
            product = factor * values
        return xp.where(factor != 0, product, xp.zeros_like(values))

    def _finish_loss(self, op: str, per_sample, reduction: str, denominator, logits=None):
        """Reduce, after one finiteness check (of the total, or of every sample for "none").

        Non-finite logits always make the loss NaN, so they need no check of
        their own on this path: they are diagnosed only once something is wrong.
        """
        xp = self.xp
        total = None if reduction == "none" else xp.sum(per_sample)
        if not bool(xp.all(xp.isfinite(per_sample if total is None else total))):
            if logits is not None:
                self._checked_max(op, logits, 1)  # raises for a row with no softmax
            host = self.to_numpy(per_sample)
            bad = np.flatnonzero(~np.isfinite(host))
            if len(bad) == 0:
                raise ValueError(f"{op}: the summed loss overflows {v.dtype_name(per_sample.dtype)}")
            raise v.bad_loss(op, int(bad[0]), float(host[bad[0]]))
        if reduction == "none":
            return per_sample
        if reduction == "sum":
            return total
        return total / denominator

    def _mean_denominator(self, op: str, n: int, sample_weight):
        """What ``"mean"`` divides by: the sum of the target weights (0 for ignored), or N."""
        if sample_weight is None:
            return n
        denominator = self.xp.sum(sample_weight)
        if self._to_host_float(denominator) == 0.0:
            raise v.empty_mean(op)
        return denominator

    def nll_loss(self, logp, target, *, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        op = "nll_loss"
        xp = self.xp
        kind = self._validate_loss_inputs(op, logp, target, weight, ignore_index, reduction, 0.0,
                                          what="log-probabilities")
        if kind != "index":
            raise TypeError(f"{op}: target must be integer class indices of shape (N,); "
                            "for class probabilities use cross_entropy")
        n = logp.shape[0]
        labels, kept = self._index_target(op, target, logp.shape[1], ignore_index)
        picked = logp[xp.arange(n, device=self._device_of(logp)), labels]
        sample_weight = self._sample_weight(logp, labels, kept, weight)
        per_sample = -picked if sample_weight is None else -self._times_unless_zero(xp, sample_weight, picked)
        denominator = self._mean_denominator(op, n, sample_weight) if reduction == "mean" else 1
        return self._finish_loss(op, per_sample, reduction, denominator)

    def _sample_weight(self, logits, labels, kept, weight):
        """weight[target[i]], 0 for ignored samples; None when every sample weighs 1."""
        xp = self.xp
        if weight is None:
            if kept is None:
                return None
            return xp.astype(kept, logits.dtype)
        sample_weight = weight[labels]
        if kept is not None:
            sample_weight = xp.where(kept, sample_weight, xp.zeros_like(sample_weight))
        return sample_weight

    @_quiet_floating_point
    def _cross_entropy(self, op, logits, target, weight, ignore_index, reduction, label_smoothing,
                       want_grad: bool):
        """The loss (reduced) and, if asked, its gradient, from one pass of softmax.

        With ``shifted = z - max`` and ``s = sum(exp(shifted))``,
        ``log_softmax = shifted - log s``, so each sample's loss
        ``-sum_c q_c log_softmax_c = (sum_c q_c) log s - sum_c q_c shifted_c``
        needs no full log_softmax matrix, and the gradient is
        ``(sum_c q_c) softmax - q``.
        """
        xp = self.xp
        kind = self._validate_loss_inputs(op, logits, target, weight, ignore_index, reduction,
                                          label_smoothing)
        n, num_classes = logits.shape
        eps = float(label_smoothing)
        shifted = logits - self.xp.max(logits, axis=1, keepdims=True)  # checked with the loss
        exp_shifted = xp.exp(shifted)
        row_sum = xp.sum(exp_shifted, axis=1, keepdims=True)
        log_row_sum = xp.log(row_sum)[:, 0]
        rows = xp.arange(n, device=self._device_of(logits))

        if kind == "index":
            labels, kept = self._index_target(op, target, num_classes, ignore_index)
            sample_weight = self._sample_weight(logits, labels, kept, weight)
            if sample_weight is not None:
                # a zero weight would hide a row with no softmax from the loss; its gradient would be NaN
                self._checked_max(op, logits, 1)
            # nll part: weight[t] * (log s - shifted[t]); ignored samples weigh 0
            nll = log_row_sum - shifted[rows, labels]
            if sample_weight is not None:
                nll = self._times_unless_zero(xp, sample_weight, nll)
            per_sample = nll if eps == 0.0 else (1.0 - eps) * nll
            # mass = sum_c q[i, c] = (1 - eps) w_t + eps / C * sum(weight), 0 if ignored
            mass = 1.0 if sample_weight is None else (1.0 - eps) * sample_weight
            if eps > 0.0:
                neg_log_softmax = log_row_sum[:, None] - shifted
                if weight is not None:
                    neg_log_softmax = self._times_unless_zero(xp, weight[None, :], neg_log_softmax)
                smooth = xp.sum(neg_log_softmax, axis=1)
                kept_f = 1.0 if kept is None else xp.astype(kept, logits.dtype)
                if kept is not None:  # an ignored row counts 0 even where its smooth term is infinite
                    smooth = self._times_unless_zero(xp, kept_f, smooth)
                per_sample = per_sample + (eps / num_classes) * smooth
                if sample_weight is not None:
                    class_weight_sum = float(num_classes) if weight is None else xp.sum(weight)
                    mass = mass + (eps / num_classes) * kept_f * class_weight_sum
            denominator = (self._mean_denominator(op, n, sample_weight)
                           if reduction == "mean" else 1)
        else:
            q = target if eps == 0.0 else (1.0 - eps) * target + eps / num_classes
            if weight is not None:
                q = q * weight[None, :]
            mass = xp.sum(q, axis=1)
            per_sample = mass * log_row_sum - xp.sum(self._times_unless_zero(xp, q, shifted), axis=1)
            denominator = n
        loss = self._finish_loss(op, per_sample, reduction, denominator, logits)
        if not want_grad:
            return loss, None

        grad = exp_shifted
        grad /= row_sum
        if kind == "index":
            if not isinstance(mass, float):
                grad *= mass[:, None]
            if eps > 0.0:
                class_weight = 1.0 if weight is None else weight[None, :]
                kept_f = 1.0 if kept is None else xp.astype(kept, logits.dtype)[:, None]
                grad -= (eps / num_classes) * (class_weight * kept_f)
            onehot_mass = (1.0 - eps) if sample_weight is None else (1.0 - eps) * sample_weight
            grad[rows, labels] -= onehot_mass
        else:
            grad *= mass[:, None]
            grad -= q
        if reduction == "mean":
            grad /= denominator
        return loss, grad

    def cross_entropy(self, logits, target, *, weight=None, ignore_index: int = -100,
                      reduction: str = "mean", label_smoothing: float = 0.0):
        return self._cross_entropy("cross_entropy", logits, target, weight, ignore_index, reduction,
                                   label_smoothing, want_grad=False)[0]

    def cross_entropy_grad(self, logits, target, *, weight=None, ignore_index: int = -100,
                           reduction: str = "mean", label_smoothing: float = 0.0):
        return self._cross_entropy("cross_entropy_grad", logits, target, weight, ignore_index,
                                   reduction, label_smoothing, want_grad=True)[1]

    def cross_entropy_and_grad(self, logits, target, *, weight=None, ignore_index: int = -100,
                               reduction: str = "mean", label_smoothing: float = 0.0):
        return self._cross_entropy("cross_entropy_and_grad", logits, target, weight, ignore_index,
                                   reduction, label_smoothing, want_grad=True)

    # ---- optimizer ---------------------------------------------------------------

    def sgd_init(self, params: Sequence[Any]) -> SGDState:
        return SGDState(step=0, momentum_buffers=None)

    def _check_sgd(self, params, grads, state, lr, momentum, dampening, nesterov, weight_decay):
        """Checks everything; returns ``(lr, momentum, dampening, weight_decay)`` as floats."""
        hyperparameters = check_sgd_hyperparameters(lr, momentum, dampening, nesterov, weight_decay)
        for i, (p, g) in enumerate(zip(params, grads)):
            self._check_array("sgd_step", f"parameter {i}", p)
            self._check_array("sgd_step", f"gradient {i}", g)
        check_sgd_arguments(params, grads, state, lambda a: tuple(a.shape),
                            lambda a: v.dtype_name(a.dtype))
        return hyperparameters

    def sgd_step(self, params, grads, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        lr, momentum, dampening, weight_decay = self._check_sgd(params, grads, state, lr, momentum, dampening,
                                                                nesterov, weight_decay)
        xp = self.xp
        params = list(params)
        buffers = None if momentum == 0.0 else list(state.momentum_buffers or [None] * len(params))
        for i, (p, g) in enumerate(zip(params, grads)):
            if weight_decay != 0.0:
                g = g + weight_decay * p
            if buffers is not None:
                if buffers[i] is None:
                    buffers[i] = xp.asarray(g, copy=True)
                else:
                    buffers[i] *= momentum
                    buffers[i] += (1.0 - dampening) * g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            p -= lr * g
        new_buffers = state.momentum_buffers if buffers is None else tuple(buffers)
        return params, SGDState(step=state.step + 1, momentum_buffers=new_buffers)
