"""The CuPy backend: the shared array-API implementation bound to CuPy, on a CUDA GPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.array_api import ArrayAPIBackend
from backends.numpy_backend import as_host_array
from core.errors import BackendUnavailableError

PIP_CUPY = "pip install 'softgrad[cupy]'  (or: pip install cupy-cuda12x / cupy-cuda13x to match your CUDA driver)"


def no_cuda_device_reason(error: BaseException) -> str:
    return f"backend 'cupy': no CUDA device ({type(error).__name__}: {error})"


class CuPyBackend(ArrayAPIBackend):
    name = "cupy"

    def __init__(self) -> None:
        try:
            import cupy
        except ImportError as error:
            raise BackendUnavailableError(
                f"backend 'cupy' needs CuPy, which is not installed ({error}): {PIP_CUPY}"
            ) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # CUDARuntimeError: no driver, driver too old, no device
            raise BackendUnavailableError(no_cuda_device_reason(error)) from None
        if count == 0:
            raise BackendUnavailableError("backend 'cupy': no CUDA device (the driver reports 0 GPUs)")
        import array_api_compat.cupy

        self.cupy = cupy
        self.xp = array_api_compat.cupy
        self.array_type = cupy.ndarray
        self.device = f"cuda:{cupy.cuda.runtime.getDevice()}"

    def asarray(self, x: Any, dtype: Any = None):
        if isinstance(x, self.cupy.ndarray):
            return x if dtype is None else x.astype(np.dtype(dtype), copy=False)
        return self.cupy.asarray(as_host_array(x, dtype, self.name))

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def _device_of(self, x: Any):
        return x.device
