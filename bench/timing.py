"""A small, device-aware timer: warm up, size the blocks, take the median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_s: float  # seconds per call, median over the repeats
    spread_s: float  # max - min of the per-call seconds over the repeats
    calls: int  # calls per repeat


def time_call(fn: Callable[[], object], synchronize: Callable[[], None], *, repeats: int = 5,
              min_block_s: float = 0.05, warmup: int = 2) -> Timing:
    """Seconds per call of ``fn``; the device is synchronised before every clock read."""
    for _ in range(warmup):
        fn()
    synchronize()
    calls = 1
    while True:  # grow the block until one takes at least min_block_s
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= min_block_s or calls >= 1 << 20:
            break
        calls *= 2 if elapsed == 0 else max(2, min(100, int(min_block_s / elapsed * 1.2) + 1))
    per_call = [elapsed / calls]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize()
        per_call.append((time.perf_counter() - start) / calls)
    return Timing(statistics.median(per_call), max(per_call) - min(per_call), calls)


def ready(x):
    """``x`` once computed: frameworks that dispatch asynchronously (JAX) return before the work is done,
    and their ``synchronize`` waits only for what their own operations recorded."""
    block = getattr(x, "block_until_ready", None)
    if block is not None:
        block()
    return x
