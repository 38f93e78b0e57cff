"""The shared implementation of the Backend protocol, written against an array namespace.

``xp`` is an array-API namespace (array-api-compat's numpy, torch or cupy, or
array-api-strict), so every backend shares this code, and a backend overrides
only plumbing and what its framework fuses or does in place. Everything here
returns new arrays and modifies none of its inputs, so it is correct on a
library whose arrays are immutable.

The losses and optimizers are defined once, in :mod:`softgrad.numerics.losses` and
:mod:`softgrad.numerics.optim`; the class body binds each built-in one with one line
(``X``, ``X_grad``, ``X_and_grad``; ``X_init``, ``X_step``). One registered later runs
through ``Loss.value_and_grad_on`` / ``Optimizer.step_on`` (:mod:`softgrad.numerics.methods`).
The hooks' defaults come from :class:`softgrad.numerics.hooks.BackendDefaults`. The
docstrings live in :mod:`softgrad.numerics.protocol` and :mod:`softgrad.numerics.hooks`.

A subclass overrides what its framework does better as an ordinary method, and
returns ``super().<method>(...)`` where its fast path declines the case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.hooks import BackendDefaults
from softgrad.numerics.losses.support import checked_max, device_of
from softgrad.numerics.methods import loss_methods, optimizer_methods, registered_method


class ArrayAPIBackend(BackendDefaults):
    name: str
    device: str
    xp: Any  # an array-API namespace
    array_type: type | tuple[type, ...]  # the framework's array class(es)

    # ---- the built-in losses and optimizers (softgrad.numerics.losses, softgrad.numerics.optim) -----------
    # cross_entropy, _grad and _and_grad are written out below: the backend's fused path first
    _shared_cross_entropy, _shared_cross_entropy_grad, _shared_cross_entropy_and_grad = loss_methods("cross_entropy")
    nll_loss, nll_loss_grad, nll_loss_and_grad = loss_methods("nll_loss")
    mse_loss, mse_loss_grad, mse_loss_and_grad = loss_methods("mse_loss")
    l1_loss, l1_loss_grad, l1_loss_and_grad = loss_methods("l1_loss")
    smooth_l1_loss, smooth_l1_loss_grad, smooth_l1_loss_and_grad = loss_methods("smooth_l1_loss")
    huber_loss, huber_loss_grad, huber_loss_and_grad = loss_methods("huber_loss")
    (binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_grad,
     binary_cross_entropy_with_logits_and_grad) = loss_methods("binary_cross_entropy_with_logits")
    sgd_init, sgd_step = optimizer_methods("sgd")
    adam_init, adam_step = optimizer_methods("adam")
    adamw_init, adamw_step = optimizer_methods("adamw")
    rmsprop_init, rmsprop_step = optimizer_methods("rmsprop")
    adagrad_init, adagrad_step = optimizer_methods("adagrad")

    # ---- cross-entropy: the fused path (the hook fused_cross_entropy) where it takes the case ----------------
    # (positional options are an error the shared definition names)

    def cross_entropy(self, logits, target, *positional, **options):
        fast = None if positional else self.fused_cross_entropy("cross_entropy", logits, target, options)
        return fast[0] if fast is not None else self._shared_cross_entropy(logits, target, *positional, **options)

    def cross_entropy_grad(self, logits, target, *positional, **options):
        fast = None if positional else self.fused_cross_entropy("cross_entropy_grad", logits, target, options)
        return fast[1] if fast is not None else self._shared_cross_entropy_grad(logits, target, *positional,
                                                                                **options)

    def cross_entropy_and_grad(self, logits, target, *positional, **options):
        fast = None if positional else self.fused_cross_entropy("cross_entropy_and_grad", logits, target, options)
        return fast if fast is not None else self._shared_cross_entropy_and_grad(logits, target, *positional,
                                                                                 **options)

    def check_array(self, op: str, what: str, x: Any) -> None:
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
        return x @ weight + bias

    def relu_backward(self, h, dh):
        return self.xp.where(h > 0, dh, self.xp.zeros_like(dh))

    def maximum(self, a, b):
        if isinstance(b, (int, float)):
            b = self.xp.asarray(b, dtype=a.dtype, device=self._device_of(a))
        return self.xp.maximum(a, b)

    def sum(self, x, axis=None):
        xp = self.xp
        if xp.isdtype(x.dtype, "real floating"):
            return xp.sum(x, axis=axis, dtype=x.dtype)
        if xp.isdtype(x.dtype, "bool"):  # the standard sums numbers only: count the Trues as integers
            x = xp.astype(x, xp.int64)
        return xp.sum(x, axis=axis)

    def tanh(self, x):
        return self.xp.tanh(x)

    def argmax(self, x, axis=-1):
        return self.xp.argmax(x, axis=axis)

    def _device_of(self, x):
        return device_of(x)

    # ---- softmax ---------------------------------------------------------------

    def _prepare_softmax_input(self, op: str, z, axis: int) -> int:
        self.check_array(op, "the input", z)
        v.check_float_array(op, "the input", z.dtype)
        axis = v.normalize_axis(op, axis, z.ndim)
        v.check_not_empty(op, "the input", tuple(z.shape))
        return axis

    def _checked_max(self, op: str, z, axis: int):
        return checked_max(self, op, z, axis)

    def softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("softmax", z, axis)
        e = self.xp.exp(z - self._checked_max("softmax", z, axis))
        return e / self.xp.sum(e, axis=axis, keepdims=True)

    def log_softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("log_softmax", z, axis)
        shifted = z - self._checked_max("log_softmax", z, axis)
        return shifted - self.xp.log(self.xp.sum(self.xp.exp(shifted), axis=axis, keepdims=True))


# ---- the reference an override is checked against ------------------------------------------------


def shared_method(attribute: str) -> Callable:
    """The shared implementation of a registered loss or optimizer method (what overrides are checked against)."""
    method = registered_method(attribute)
    if method is None:
        raise AttributeError(f"no registered loss or optimizer provides {attribute!r}")
    return method
