"""What a measurement ran on: CPU, threads, BLAS, GPU and library versions."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata


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
