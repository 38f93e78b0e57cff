"""What the figures were measured on: CPU, threads, BLAS, GPU, library versions; the matmul roofline."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

import numpy as np


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("softgrad", "numpy", "array-api-compat", "torch", "torchvision", "cupy-cuda13x",
                    "cupy-cuda12x", "scikit-learn", "threadpoolctl"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture", "threading_layer")
    return [{k: v for k, v in pool.items() if k in keep} for pool in threadpool_info()]


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except ImportError:
        pass
    return None


def machine_header() -> dict:
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch_threads, "blas": blas_info(), "gpu": gpu_name(),
            "platform": platform.platform(), "versions": versions()}


def matmul_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The best float32 matrix-multiply rate of NumPy and of torch (CPU), in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    rates = {}

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    rates["numpy"] = best(lambda: a @ b)
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        rates["torch"] = best(lambda: ta @ tb)
    except ImportError:
        pass
    return rates
