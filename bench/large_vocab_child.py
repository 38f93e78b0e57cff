"""The large-vocabulary table's child: one contender at one shape, in a fresh process of its own, its time
and the memory its first call and a later one take (``bench.large_vocab`` says how each is read)."""

from __future__ import annotations

import math
import os
import sys
import time

from softgrad.bench.large_vocab_row import CUDA_ALLOCATOR, TORCH_CHUNK

WARM_TOKENS, WARM_VOCAB = 1024, 1024  # the small shape of the call before the baseline


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_high_water() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where the kernel does not let us."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss() -> int:
    rss = _status_kib("VmRSS")
    return rss if rss is not None else _peak_rss()


def _inputs(tokens: int, hidden: int, vocab: int):
    import numpy as np

    rng = np.random.default_rng(0)  # float32 draws: no float64 temporaries to lift the high-water mark
    x = rng.standard_normal((tokens, hidden), dtype=np.float32)
    w = rng.standard_normal((vocab, hidden), dtype=np.float32)
    w *= np.float32(1.0 / math.sqrt(hidden))  # logits of unit scale
    b = rng.standard_normal(vocab, dtype=np.float32)
    b *= np.float32(0.01)
    t = rng.integers(0, vocab, tokens, dtype=np.int64)
    return x, w, b, t


def _norm(a) -> float | None:
    import numpy as np

    return None if a is None else float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


def _softgrad_call(backend: str, x, w, b, t, device: str = "cpu"):
    """A function doing one forward plus backward, and one giving (loss, norms, chunk rows) of the last."""
    from softgrad.numerics.losses.linear_cross_entropy import plan_chunk
    from softgrad.numerics.registry import get_backend

    be = get_backend(backend)
    if be.on_gpu != (device == "cuda"):
        raise RuntimeError(f"{backend} runs on {'a GPU' if be.on_gpu else 'the CPU'}, not on --device {device}")
    args = (be.asarray(x), be.asarray(w), be.asarray(t))
    bias = be.asarray(b)
    be.synchronize()
    last = []

    def call() -> None:
        last.clear()  # the previous call's gradients are gone, as after a training step's update
        loss, grads = be.linear_cross_entropy_and_grad(*args, linear_bias=bias)
        for out in (loss, *grads):
            if hasattr(out, "block_until_ready"):  # JAX dispatches asynchronously
                out.block_until_ready()
        be.synchronize()
        float(be.to_numpy(loss))
        last[:] = [loss, grads]

    def result():
        loss, grads = last
        ops = be.chunk_ops()
        buffers = ops.buffers_for("index", 0.0, False, None)
        rows = plan_chunk(w.shape[0], w.shape[1], 4, buffers, x.shape[0])
        return float(be.to_numpy(loss)), [_norm(None if g is None else be.to_numpy(g)) for g in grads], rows

    return call, result


def _torch_call(chunked: bool, x, w, b, t, device: str = "cpu"):
    import torch

    if not hasattr(torch.nn.functional, "linear_cross_entropy"):
        raise RuntimeError(f"torch {torch.__version__} has no torch.nn.functional.linear_cross_entropy "
                           "(PyTorch 2.14 added it)")
    tensors = [torch.from_numpy(a).to(device).requires_grad_() for a in (x, w, b)]
    target = torch.from_numpy(t).to(device)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=TORCH_CHUNK) if chunked else None
    last = []

    def call() -> None:
        last.clear()
        for p in tensors:
            p.grad = None  # each call's gradients are fresh, as in a training step after zero_grad
        loss = torch.nn.functional.linear_cross_entropy(tensors[0], tensors[1], target, linear_bias=tensors[2],
                                                        options=options)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        loss.detach().item()
        last[:] = [loss]

    def result():
        return (float(last[0].detach()), [_norm(p.grad.cpu().numpy()) for p in tensors],
                TORCH_CHUNK if chunked else None)

    return call, result


def measure_child(spec: dict) -> dict:
    """Run one contender at one shape in this (fresh) process; see the module docstring."""
    import gc
    import tracemalloc

    from softgrad.numerics.machine import blas_info

    device = spec.get("device", "cpu")

    def contender(tokens: int, vocab: int):
        x, w, b, t = _inputs(tokens, spec["hidden"], vocab)
        if spec["kind"] == "softgrad":
            return _softgrad_call(spec["backend"], x, w, b, t, device)
        return _torch_call(spec["kind"] == "torch-chunked", x, w, b, t, device)

    # one call at a small shape first: what the first call imports or starts lazily (torch's chunked
    # path imports some 900 modules, ~160 MiB) is in the baseline, not in the figure; its own arrays are small
    warm, _ = contender(min(spec["tokens"], WARM_TOKENS), min(spec["vocab"], WARM_VOCAB))
    warm()
    del warm
    call, result = contender(spec["tokens"], spec["vocab"])
    gc.collect()
    if device == "cuda":
        return _measure_cuda(spec, call, result)
    baseline = _current_rss()
    resettable = _reset_high_water()
    high_before = _peak_rss()  # where the mark cannot be reset, what was reached before this call
    traced = spec["kind"] == "softgrad" and spec["backend"] in ("numpy", "array-api-strict")
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    out: dict = {"first_call_s": first, "baseline_rss_bytes": baseline,
                 "memory_method": "VmHWM reset by clear_refs" if resettable else "ru_maxrss (not resettable: "
                 "a lower bound when the inputs' construction peaked higher)"}
    out["peak_extra_bytes"] = max(0, _peak_rss() - (baseline if resettable else max(baseline, high_before)))
    if traced:
        out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    loss, norms, rows = result()
    out.update(loss=loss, grad_norms=norms, chunk_rows=rows)
    budget = spec["budget_s"]
    calls = spec["repeats"] if budget is None else min(spec["repeats"], int(budget // max(first, 1e-9)))
    times = []
    for i in range(calls):
        if i == 0 and resettable:
            _reset_high_water()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if i == 0 and resettable:
            out["later_peak_extra_bytes"] = max(0, _peak_rss() - baseline)
    out["cold"] = not times
    out["times_s"] = times or [first]
    out["threads"] = _threads(blas_info())
    return out


def _threads(blas) -> dict:
    torch = sys.modules.get("torch")  # not imported where the contender does not need it
    torch_threads = None if torch is None else torch.get_num_threads()
    return {"torch": torch_threads, "threadpoolctl": blas,
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))}}


def _timed_calls(call, first: float, spec: dict) -> list[float]:
    budget = spec["budget_s"]
    calls = spec["repeats"] if budget is None else min(spec["repeats"], int(budget // max(first, 1e-9)))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()  # synchronises the device and reads the loss back
        times.append(time.perf_counter() - start)
    return times


def _measure_cuda(spec: dict, call, result) -> dict:
    """``measure_child`` on a GPU: the device allocator's peak (torch's, or the backend's own count)."""
    from softgrad.numerics.machine import blas_info

    torch_allocator = spec["kind"] != "softgrad" or spec["backend"].startswith("torch")
    out: dict = {}
    if torch_allocator:
        import torch

        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
        out.update(memory_method=CUDA_ALLOCATOR, baseline_device_bytes=baseline,
                   peak_extra_bytes=max(0, torch.cuda.max_memory_allocated() - baseline))
    else:
        from softgrad.numerics.registry import get_backend

        be = get_backend(spec["backend"])
        start = time.perf_counter()
        peak = be.peak_memory(call)
        first = time.perf_counter() - start
        out.update(memory_method=f"{spec['backend']}'s be.peak_memory(), as reported" + (
            "" if peak is not None else ": no count (None)") + (
            " (CuPy's memory pool after the call, inputs included)" if spec["backend"] == "cupy" else ""),
                   peak_extra_bytes=peak)
    out["first_call_s"] = first
    loss, norms, rows = result()
    out.update(loss=loss, grad_norms=norms, chunk_rows=rows)
    if torch_allocator:
        torch.cuda.reset_peak_memory_stats()
    times = _timed_calls(call, first, spec)
    if torch_allocator and times:
        out["later_peak_extra_bytes"] = max(0, torch.cuda.max_memory_allocated() - baseline)
    out["cold"] = not times
    out["times_s"] = times or [first]
    out["threads"] = _threads(blas_info())
    return out
