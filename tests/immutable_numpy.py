"""A test namespace whose arrays refuse every in-place operation: the shared code must return its results.

``FrozenArray`` is a NumPy array that raises on ``+=`` and every other
in-place operator, on ``__setitem__`` and on a ufunc's ``out=``. The backend
built on it uses the shared implementation only (no overrides), so a test on it
fails wherever the shared code would update an array in place, as it would
fail (or, for ``p -= lr * g`` on a loop variable, silently not train) on JAX.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.numpy_backend import as_host_array


class InPlaceError(TypeError):
    """An in-place update of an immutable array."""


def _refuse(name: str):
    def method(self, *args, **kwargs):
        raise InPlaceError(f"{name} on an immutable array: the shared code must return a new array")

    return method


class FrozenArray(np.ndarray):
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is not None and any(isinstance(o, FrozenArray) for o in out):
            raise InPlaceError(f"{ufunc.__name__}(..., out=) into an immutable array")
        inputs = tuple(np.asarray(x) if isinstance(x, FrozenArray) else x for x in inputs)
        result = getattr(ufunc, method)(*inputs, **kwargs, **({} if out is None else {"out": out}))
        return freeze(result)

    def __array_function__(self, func, types, args, kwargs):
        return freeze(super().__array_function__(func, types, args, kwargs))


for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
              "__imatmul__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__setitem__",
              "fill", "sort", "put", "itemset", "resize"):
    setattr(FrozenArray, _name, _refuse(_name))


def freeze(value: Any) -> Any:
    if isinstance(value, np.ndarray) and not isinstance(value, FrozenArray):
        return value.view(FrozenArray)
    if isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    return value


class FrozenNamespace:
    """array-api-compat's NumPy namespace whose functions return frozen arrays (asarray, zeros, ... included)."""

    def __init__(self, xp) -> None:
        self._xp = xp

    def __getattr__(self, name: str):
        value = getattr(self._xp, name)
        if not callable(value) or isinstance(value, type):
            return value

        def frozen(*args, **kwargs):
            return freeze(value(*args, **kwargs))

        return frozen


class ImmutableNumPyBackend(ArrayAPIBackend):
    """The shared implementation, bound to NumPy arrays that cannot be modified."""

    name = "numpy-immutable"
    device = "cpu"

    def __init__(self) -> None:
        import array_api_compat.numpy

        self.xp = FrozenNamespace(array_api_compat.numpy)
        self.array_type = (FrozenArray, np.generic)

    def asarray(self, x: Any, dtype: Any = None):
        if isinstance(x, FrozenArray) and dtype is None:
            return x
        return freeze(np.array(as_host_array(x, dtype, self.name)))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x)  # a plain, writable copy
