"""The machine's own matrix-multiply rate: the roofline the training figures are read against."""

from __future__ import annotations

import time

import numpy as np


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
    except ImportError:
        return rates
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates["torch"] = best(lambda: ta @ tb)
    if torch.cuda.is_available():  # the GPU's own rate, for the GPU backends' rows
        ga, gb = ta.cuda(), tb.cuda()
        rates["cuda"] = best(lambda: (ga @ gb, torch.cuda.synchronize()))
    return rates


def roofline_for(on_gpu: bool, rates: dict[str, float]) -> float | None:
    """The matmul rate a contender is read against: its device's."""
    if on_gpu:
        return rates.get("cuda")
    cpu = [rates[k] for k in ("numpy", "torch") if k in rates]
    return max(cpu) if cpu else None
