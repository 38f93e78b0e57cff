"""The NumPy backend: the shared array-API implementation bound to NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.array_api import ArrayAPIBackend

# NumPy dtype kinds an array may hold: bool, signed/unsigned integer, float.
_SUPPORTED_KINDS = "biuf"


def as_host_array(x: Any, dtype: Any, who: str) -> np.ndarray:
    """``x`` as a NumPy array with a supported dtype, or a TypeError that says why not."""
    try:
        array = np.asarray(x, dtype=None if dtype is None else np.dtype(dtype))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{who}.asarray: cannot make an array of {type(x).__name__}: {error}") from None
    if array.dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(
            f"{who}.asarray: dtype {array.dtype} is not supported; use float32 or float64 "
            "for values and an integer dtype for labels"
        )
    return array


class NumPyBackend(ArrayAPIBackend):
    name = "numpy"
    device = "cpu"

    def __init__(self) -> None:
        import array_api_compat.numpy

        self.xp = array_api_compat.numpy
        # NumPy reductions return NumPy scalars (np.float32), which are arrays here too
        self.array_type = (np.ndarray, np.generic)

    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        return as_host_array(x, dtype, self.name)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def _device_of(self, x: Any) -> str:
        return "cpu"
