"""The shared implementation of the Backend protocol, written against an array namespace.

``xp`` is an array-API namespace (array-api-compat's numpy, torch or cupy, or
array-api-strict), so every backend shares this code, and a backend overrides
only plumbing and what its framework fuses or does in place. Everything here
returns new arrays and modifies none of its inputs, so it is correct on a
library whose arrays are immutable.

The losses and optimizers are defined once, in :mod:`softgrad.numerics.losses` and
:mod:`softgrad.numerics.optim`; this class exposes each as methods (``X``, ``X_grad``,
``X_and_grad``; ``X_init``, ``X_step``), including those registered after it
was defined. The docstrings live in :mod:`softgrad.numerics.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from softgrad.numerics import validation as v
from softgrad.numerics.losses import binary as _binary
from softgrad.numerics.losses.support import checked_max, device_of
from softgrad.numerics.methods import registered_method, unit_methods


class ArrayAPIBackend:
    name: str
    device: str
    xp: Any  # an array-API namespace
    array_type: type | tuple[type, ...]  # the framework's array class(es)
    on_gpu: bool = False

    def _check_array(self, op: str, what: str, x: Any) -> None:
        if not isinstance(x, self.array_type):
            raise TypeError(
                f"{op}: {what} is a {type(x).__module__}.{type(x).__name__}, not an array of the "
                f"{self.name!r} backend; convert it once with be.asarray(...)"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.device}>"

    def __getattr__(self, attribute: str):
        # losses and optimizers registered after this class was defined (plug-ins) are methods too
        method = registered_method(attribute)
        if method is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")
        return method.__get__(self, type(self))

    # ---- plumbing ------------------------------------------------------------

    def synchronize(self) -> None:
        pass

    def peak_memory(self, run: Callable[[], object]) -> int | None:
        run()
        return None

    def matmul(self, a, b):
        return a @ b

    def affine(self, x, weight, bias):
        return x @ weight + bias

    def affine_relu(self, x, weight, bias):
        return self.maximum(self.affine(x, weight, bias), 0.0)

    def relu_backward(self, h, dh):
        return self.xp.where(h > 0, dh, self.xp.zeros_like(dh))

    def relu_bias_backward(self, h, dh):
        dz = self.relu_backward(h, dh)
        return dz, self.sum(dz, axis=0)

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

    def sigmoid(self, x):
        return _binary.sigmoid(self, x)

    def log_sigmoid(self, x):
        return _binary.log_sigmoid(self, x)

    def argmax(self, x, axis=-1):
        return self.xp.argmax(x, axis=axis)

    def take(self, x, indices, axis=0):
        return self.xp.take(x, indices, axis=axis)

    def reshape(self, x, shape):
        return self.xp.reshape(x, tuple(shape))

    def all_finite(self, x):
        return bool(self.to_numpy(self.xp.all(self.xp.isfinite(x))))

    def _device_of(self, x):
        return device_of(x)

    def _label_range(self, labels) -> tuple[int, int]:
        """The smallest and largest label (torch fetches both in one transfer)."""
        return int(self.xp.min(labels)), int(self.xp.max(labels))

    # ---- softmax ---------------------------------------------------------------

    def _prepare_softmax_input(self, op: str, z, axis: int) -> int:
        self._check_array(op, "the input", z)
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


class FusedCrossEntropy:
    """``cross_entropy``, ``_grad`` and ``_and_grad`` through the backend's ``_fused_cross_entropy(op, logits,
    target, options)`` where it takes the case (it returns ``(loss, grad)``), else the shared definition,
    which also diagnoses what the fused path declines. Listed before ArrayAPIBackend among the bases."""

    def cross_entropy_and_grad(self, logits, target, **options):
        fast = self._fused_cross_entropy("cross_entropy_and_grad", logits, target, options)
        if fast is not None:
            return fast
        return shared_method("cross_entropy_and_grad")(self, logits, target, **options)

    def cross_entropy(self, logits, target, **options):
        fast = self._fused_cross_entropy("cross_entropy", logits, target, options)
        if fast is not None:
            return fast[0]
        return shared_method("cross_entropy")(self, logits, target, **options)

    def cross_entropy_grad(self, logits, target, **options):
        fast = self._fused_cross_entropy("cross_entropy_grad", logits, target, options)
        if fast is not None:
            return fast[1]
        return shared_method("cross_entropy_grad")(self, logits, target, **options)


# ---- the registered losses and optimizers, as methods -------------------------------------


def shared_method(attribute: str) -> Callable:
    """The shared implementation of a registered loss or optimizer method (what overrides are checked against)."""
    method = registered_method(attribute)
    if method is None:
        raise AttributeError(f"no registered loss or optimizer provides {attribute!r}")
    return method


# The losses and optimizers defined with softgrad are ordinary methods (visible to dir() and help()).
for _name, _method in unit_methods().items():
    setattr(ArrayAPIBackend, _name, _method)
del _name, _method
