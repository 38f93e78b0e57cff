"""``backend="auto"``, resolved here and nowhere else: the fastest available backend for a network.

A short probe trains the actual network shape on random data for a fraction
of a second per available backend, device synchronised, and keeps the
fastest. The answer is cached per machine, library versions, network, batch
size and dtype in ``$SOFTGRAD_CACHE/auto-backend.json`` (default
``~/.cache/softgrad``), so later runs pick at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.base.files import atomic_write_text
from core.base.protocol import Backend
from core.base.registry import available_backends, get_backend
from core.training.models import MLP
from core.training.step import TrainSettings, train_step

PROBE_SECONDS = 0.15  # per backend, after warm-up


def cache_file() -> Path:
    root = os.environ.get("SOFTGRAD_CACHE", str(Path.home() / ".cache" / "softgrad"))
    return Path(root) / "auto-backend.json"


def _cache_key(widths: Sequence[int], batch_size: int, dtype: str, candidates: list[str]) -> str:
    from core.base.machine import cpu_name, gpu_name, versions

    return json.dumps({"widths": list(widths), "batch_size": batch_size, "dtype": dtype, "candidates": candidates,
                       "cpu": cpu_name(), "cpus": os.cpu_count(), "gpu": gpu_name(), "versions": versions()},
                      sort_keys=True)


def probe(name: str, widths: Sequence[int], batch_size: int, dtype: str, seconds: float = PROBE_SECONDS) -> float:
    """Training samples per second of ``name`` on random data shaped like the real run."""
    be = get_backend(name)
    model = MLP(widths, seed=0, dtype=dtype, backend=be)
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal((batch_size, widths[0])).astype(dtype))
    y = be.asarray(rng.integers(0, widths[-1], batch_size))
    settings = TrainSettings()
    state = settings.optimizer_definition.init_on(be, model.params)
    for _ in range(3):  # warm-up
        _, _, state = train_step(model, x, y, state, 1e-3, settings)
    be.synchronize()
    steps, start = 0, time.perf_counter()
    while True:
        _, _, state = train_step(model, x, y, state, 1e-3, settings)
        steps += 1
        if steps % 5 == 0:
            be.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps * batch_size / elapsed


def pick_backend(widths: Sequence[int], batch_size: int, dtype: str = "float32",
                 log: Callable[[str], None] | None = print) -> str:
    """The name of the fastest available backend for this network and batch size (cached)."""
    candidates = [name for name, status in available_backends().items() if status == "available"]
    key = _cache_key(widths, batch_size, dtype, candidates)
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}  # a damaged cache is ignored, and rewritten after this probe
    choice = cache.get(key)
    if isinstance(choice, dict) and choice.get("backend") in candidates and isinstance(choice.get("reason"), str):
        if log:
            log(f"backend auto: {choice['backend']} ({choice['reason']}; cached in {path})")
        return choice["backend"]
    rates = {name: probe(name, widths, batch_size, dtype) for name in candidates}
    best = max(rates, key=rates.get)
    reason = "probe: " + ", ".join(f"{name} {rate:,.0f} samples/s" for name, rate in
                                   sorted(rates.items(), key=lambda item: -item[1]))
    cache[key] = {"backend": best, "reason": reason, "date": time.strftime("%Y-%m-%d")}
    try:
        atomic_write_text(path, json.dumps(cache, indent=1))
    except OSError:
        pass  # a read-only home: the pick still stands for this run
    if log:
        log(f"backend auto: {best} ({reason}, batch {batch_size})")
    return best


def resolve_backend(backend: Backend | str | None, widths: Sequence[int], batch_size: int, dtype: str = "float32",
                    log: Callable[[str], None] | None = print) -> Backend | str | None:
    """``backend`` as it is, unless it is ``"auto"``: then the name :func:`pick_backend` chooses."""
    if isinstance(backend, str) and backend == "auto":
        return pick_backend(widths, batch_size, dtype, log=log)
    return backend
