"""The array-api-strict backend: the shared implementation on the strict reference namespace.

array-api-strict (the namespace scikit-learn and SciPy test against) refuses
everything outside the array API standard: no NumPy conveniences, no mixing of
bool and float arrays, no silent type promotion. That every property of the
suite holds on it proves the shared implementation portable. It runs on the
CPU through NumPy and is meant for checking, not for speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.numpy_backend import as_host_array
from softgrad.numerics.errors import BackendUnavailableError

PIP_STRICT = "pip install array-api-strict  (or: pip install 'softgrad[test]')"


class StrictBackend(ArrayAPIBackend):
    name = "array-api-strict"
    device = "cpu"

    def __init__(self) -> None:
        try:
            import array_api_strict
        except ImportError:
            raise BackendUnavailableError(
                f"backend 'array-api-strict' needs array-api-strict, which is not installed: {PIP_STRICT}") from None
        self.xp = array_api_strict
        self.array_type = array_api_strict.Array if hasattr(array_api_strict, "Array") else type(
            array_api_strict.asarray(0))

    def asarray(self, x: Any, dtype: Any = None):
        if isinstance(x, self.array_type):
            if dtype is None:
                return x
            x = self.to_numpy(x)
        host = as_host_array(x, dtype, self.name)
        if host.dtype.kind == "f" and host.dtype.itemsize < 4:
            raise TypeError(f"{self.name}.asarray: floating arrays must be float32 or float64, got {host.dtype} "
                            "(the array API standard has no half precision)")
        return self.xp.asarray(np.require(host, requirements="C"))  # ascontiguousarray would make 0-d arrays 1-d

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.array_type):
            return np.array(np.from_dlpack(x), copy=True)
        return np.asarray(x)

    def _device_of(self, x: Any):
        return x.device
