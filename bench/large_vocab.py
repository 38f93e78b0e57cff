"""``python -m bench.large_vocab``: a large-vocabulary head's loss and gradients, softgrad beside PyTorch.

One forward plus backward of ``cross_entropy(input @ W.T + b, target)`` (the
mean loss and the gradients of ``input``, ``W`` and ``b``; class-index
targets, float32) by

- softgrad's ``be.linear_cross_entropy_and_grad`` on each backend asked for
  (numpy, torch and jax by default; a backend that cannot run is listed with
  its reason), chunked at its default 32 MiB working-memory budget;
- ``torch.nn.functional.linear_cross_entropy`` on its reference path
  (``options=None``: the N x V logits are materialised) with autograd's
  ``.backward()``;
- the same on PyTorch's chunked path,
  ``options=LinearCrossEntropyOptions(batch_chunk_size=512)``.

Every (contender, shape) runs in a fresh subprocess, so that its memory
figure sees every allocation and nothing another contender left behind. The
child first runs one call at a small shape (1,024 tokens and classes at
most), so that what a first call imports or starts lazily (torch's chunked
path imports some 900 modules, ~160 MiB) is not counted; then it builds its
inputs, reads its resident set size (RSS), resets the kernel's high-water
mark (``/proc/self/clear_refs``), runs one forward plus backward, and
reports the high-water mark minus that baseline ("peak extra": the first
call at this shape, allocator growth and JAX's compilation for it
included); then it resets the mark again and times further calls, the first
of which gives the "later call" figure (against the same baseline, so what
the first call left allocated counts too). The numpy backend also reports
tracemalloc's peak of the first call (NumPy's own allocations only). The
gradients count as extra memory for every contender (``d W`` is as large as
``W``).

Time: wall-clock seconds per call (the device is synchronised and the loss
read back), the median of up to ``--repeats`` calls after the first; a
contender gets only as many as fit ``--budget`` seconds at its first call's
pace, and where even one does not, the first call is the time (marked
"cold"). The FLOP rate counts the three matmuls of each chunk (``6 N V d``
flops per forward plus backward) and is read against the machine's matmul
rate (``bench.roofline``). The torch reference path is skipped where its
``3 N V`` floats of logits (the logits, their log-softmax, their gradient)
would pass the memory cap (60% of the memory available at the start, or
``--memory-cap``).

``--device cuda``: the softgrad backends are the GPU ones (``torch:cuda``,
``cupy``, ``jax:gpu``; one that cannot run is listed with its reason), torch's
two paths run on CUDA tensors, each call is synchronised, and the roofline is
the GPU's matmul rate. Peak extra memory is then the device allocator's: for
torch's paths and ``torch:cuda``, ``torch.cuda.max_memory_allocated()`` after
``reset_peak_memory_stats()``, minus ``memory_allocated()`` once the inputs
exist; for the other backends, ``be.peak_memory(call)`` as the backend reports
it (CuPy: its pool's bytes, inputs included; None where the backend keeps no
count). The table's notes say which method each row used, and the memory
ratio is only taken between rows measured the same way. The memory cap on
the dense path is then 60% of the GPU's free memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENS, HIDDEN, VOCABS = 4096, 512, [32_768, 131_072]
QUICK_TOKENS, QUICK_HIDDEN, QUICK_VOCABS = 512, 64, [4096, 16_384]
DEFAULT_BACKENDS = ("numpy", "torch", "jax")
GPU_BACKENDS = ("torch:cuda", "cupy", "jax:gpu")  # --device cuda
DEVICES = ("cpu", "cuda")
CUDA_ALLOCATOR = "torch.cuda.max_memory_allocated() minus memory_allocated() once the inputs exist"
TORCH_CHUNK = 512  # LinearCrossEntropyOptions(batch_chunk_size=...)
REPEATS, BUDGET_S = 3, 12.0
MEMORY_SHARE = 0.6  # of MemAvailable: the cap on the torch reference path's logits
DENSE_COPIES = 3  # (N, V) float arrays the torch reference path holds at its peak
WARM_TOKENS, WARM_VOCAB = 1024, 1024  # the small shape of the call before the baseline
CHILD_TIMEOUT_S = 3600
RESULT_MARK = "LARGE_VOCAB_RESULT "
GiB, MiB = 2**30, 2**20


@dataclass
class LargeVocabRow:
    """One contender at one shape: its time, memory, and ratios to PyTorch's two paths."""

    contender: str  # "softgrad numpy", "torch dense", "torch chunked"
    kind: str  # "softgrad", "torch-dense" or "torch-chunked"
    backend: str | None  # the softgrad backend
    tokens: int
    hidden: int
    vocab: int
    device: str = "cpu"  # "cpu" or "cuda": where every contender of the table ran
    status: str = "ok"  # "ok", "skipped" or "failed"
    reason: str | None = None
    median_s: float | None = None
    spread_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    cold: bool = False  # the time is the first call's (no call after it fit the budget)
    first_call_s: float | None = None
    peak_extra_bytes: int | None = None  # first call: peak RSS minus the RSS once the inputs exist
    later_peak_extra_bytes: int | None = None  # a later call, against the same baseline
    tracemalloc_peak_bytes: int | None = None  # numpy: tracemalloc's peak during the first call
    baseline_rss_bytes: int | None = None
    baseline_device_bytes: int | None = None  # cuda, torch's allocator: memory_allocated() once the inputs exist
    memory_method: str | None = None
    chunk_rows: int | None = None
    loss: float | None = None
    grad_norms: list[float | None] = field(default_factory=list)  # |d input|, |d W|, |d b|
    agrees: bool | None = None  # loss and gradient norms within 1e-3 of the torch paths'
    threads: dict = field(default_factory=dict)  # what the child ran with: torch threads, threadpoolctl's pools
    gflops: float | None = None
    roofline_fraction: float | None = None
    ratios: dict = field(default_factory=dict)  # time_vs_chunked, time_vs_dense, memory_vs_chunked

    @property
    def flops(self) -> float:
        return 6.0 * self.tokens * self.vocab * self.hidden


# ---- the child: one contender, one shape, in its own process ------------------------------------------


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
    from softgrad.numerics.losses.linear_cross_entropy import ChunkOps, plan_chunk
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
        ops = be._linear_ce_ops() if hasattr(be, "_linear_ce_ops") else ChunkOps(be)
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


# ---- the parent: which contenders, one subprocess each, ratios, the table ---------------------------------


def memory_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_cap(cap_gib: float | None, device: str = "cpu") -> tuple[int | None, str]:
    """The bytes the torch reference path's logits may take, and where the figure comes from."""
    if cap_gib is not None:
        return int(cap_gib * GiB), f"--memory-cap {cap_gib:g} GiB"
    if device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
        return int(free * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the {free / GiB:.1f} GiB free on the GPU"
    available = memory_available()
    if available is None:
        return None, "no cap (MemAvailable unreadable)"
    return int(available * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the {available / GiB:.1f} GiB available"


def dense_bytes(tokens: int, vocab: int, itemsize: int = 4) -> int:
    return DENSE_COPIES * tokens * vocab * itemsize


def backend_status(names: list[str], device: str = "cpu") -> dict[str, str | None]:
    """Each backend asked for: None where it runs here, on ``device``, else why not."""
    from softgrad.numerics.errors import BackendUnavailableError
    from softgrad.numerics.registry import get_backend

    reasons: dict[str, str | None] = {}
    for name in names:
        try:
            on_gpu = get_backend(name).on_gpu
        except BackendUnavailableError as error:
            reasons[name] = str(error)
            continue
        if device == "cuda":
            reasons[name] = None if on_gpu else f"{name} runs on the CPU; --device cuda measures GPU backends"
        else:
            reasons[name] = (f"{name} runs on a GPU; this table measures host memory (RSS) on the CPU"
                             if on_gpu else None)
    return reasons


def torch_reason(device: str = "cpu") -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
    return None


def cuda_missing() -> str | None:
    """None where torch sees a CUDA device, else why ``--device cuda`` cannot run."""
    try:
        import torch
    except ImportError:
        return "no CUDA device (torch, which finds it, is not installed)"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def run_child(spec: dict) -> dict:
    """One contender at one shape in a fresh interpreter; its figures, or why it failed."""
    command = [sys.executable, "-m", "softgrad.bench.large_vocab", "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {CHILD_TIMEOUT_S} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"error": f"exit status {done.returncode}: " + (lines[-1] if lines else "no output")}


def measure(tokens: int, hidden: int, vocabs: list[int], backends: list[str] | None = None, *,
            repeats: int = REPEATS, budget_s: float | None = BUDGET_S, cap_bytes: int | None = None,
            cap_source: str = "", dense: bool = True, progress=lambda message: None,
            device: str = "cpu") -> list[LargeVocabRow]:
    """Every contender at every vocabulary size, each in its own subprocess."""
    names = list((GPU_BACKENDS if device == "cuda" else DEFAULT_BACKENDS) if backends is None else backends)
    reasons = backend_status(names, device)
    no_torch = torch_reason(device)
    rows: list[LargeVocabRow] = []
    for vocab in vocabs:
        contenders = [(f"softgrad {n}", "softgrad", n, reasons[n]) for n in names]
        contenders += [("torch chunked", "torch-chunked", None, no_torch)]
        dense_reason = no_torch
        need = dense_bytes(tokens, vocab)
        if dense_reason is None and not dense:
            dense_reason = "left out (--no-dense)"
        elif dense_reason is None and cap_bytes is not None and need > cap_bytes:
            dense_reason = (f"its {DENSE_COPIES} x N x V float32 logits (~{need / GiB:.1f} GiB) pass "
                            f"the memory cap ({cap_bytes / GiB:.1f} GiB, {cap_source})")
        contenders += [("torch dense", "torch-dense", None, dense_reason)]
        for label, kind, backend, reason in contenders:
            row = LargeVocabRow(label, kind, backend, tokens, hidden, vocab, device=device)
            rows.append(row)
            if reason is not None:
                row.status, row.reason = "skipped", reason
                continue
            progress(f"large vocabulary: {label}, V = {vocab:,}")
            spec = dict(kind=kind, backend=backend, tokens=tokens, hidden=hidden, vocab=vocab, repeats=repeats,
                        budget_s=budget_s, device=device)
            got = run_child(spec)
            if "error" in got:
                row.status, row.reason = "failed", got["error"]
                continue
            for key, value in got.items():
                setattr(row, key, value)
            row.median_s = statistics.median(row.times_s)
            row.spread_s = max(row.times_s) - min(row.times_s)
    return rows


def add_ratios(rows: list[LargeVocabRow], matmul_gflops: dict[str, float]) -> None:
    """Per shape: time and memory over the torch paths', the FLOP rate, agreement with torch's loss."""
    from softgrad.bench.roofline import roofline_for

    peak = roofline_for(bool(rows) and rows[0].device == "cuda", matmul_gflops)
    for vocab in {r.vocab for r in rows}:
        shape = [r for r in rows if r.vocab == vocab and r.status == "ok"]
        chunked = next((r for r in shape if r.kind == "torch-chunked"), None)
        dense = next((r for r in shape if r.kind == "torch-dense"), None)
        reference = chunked or dense
        for r in shape:
            r.gflops = r.flops / r.median_s / 1e9
            r.roofline_fraction = None if not peak else r.gflops / peak
            if chunked is not None:
                r.ratios["time_vs_chunked"] = r.median_s / chunked.median_s
                if (chunked.peak_extra_bytes and r.peak_extra_bytes is not None
                        and r.memory_method == chunked.memory_method):  # like with like only
                    r.ratios["memory_vs_chunked"] = r.peak_extra_bytes / chunked.peak_extra_bytes
            if dense is not None:
                r.ratios["time_vs_dense"] = r.median_s / dense.median_s
            if reference is not None:
                pairs = [(r.loss, reference.loss), *zip(r.grad_norms, reference.grad_norms)]
                r.agrees = all(a is not None and b is not None and abs(a - b) <= 1e-3 * abs(b) + 1e-12
                               for a, b in pairs)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f} MiB"


def _ratio(row: LargeVocabRow, key: str) -> str:
    return f"{row.ratios[key]:.2f}" if key in row.ratios else "-"


def render(rows: list[LargeVocabRow], console, matmul_gflops: dict[str, float] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table
    from softgrad.bench.roofline import roofline_for

    on_gpu = bool(rows) and rows[0].device == "cuda"
    peak = roofline_for(on_gpu, matmul_gflops or {})
    for vocab in dict.fromkeys(r.vocab for r in rows):
        shape = [r for r in rows if r.vocab == vocab]
        n, d = shape[0].tokens, shape[0].hidden
        table = Table(title=f"large vocabulary: loss + d input, d W, d b; N = {n:,} tokens, d = {d:,}, "
                      f"V = {vocab:,}, float32{' on CUDA' if on_gpu else ''}, class-index targets ({shape[0].flops / 1e9:,.0f} GFLOP a call)")
        columns = ["contender", "time / call", "spread", "calls", "GFLOP/s", "% peak", "peak extra", "later call",
                   "tracemalloc", "t ÷ chunked", "t ÷ dense", "mem ÷ chunked", "chunk rows"]
        for column in columns:
            table.add_column(column, justify="left" if column == "contender" else "right", no_wrap=True)
        notes = []
        for r in shape:
            if r.status != "ok":
                table.add_row(r.contender, r.status, *["-"] * (len(columns) - 2))
                notes.append(f"{r.contender}: {r.status}: {r.reason}")
                continue
            if r.cold:
                notes.append(f"{r.contender}: cold: the first call's time (it took {r.first_call_s:.1f} s, so no "
                             "timed call fit the --budget)")
            if r.memory_method and (on_gpu or not r.memory_method.startswith("VmHWM")):
                notes.append(f"{r.contender}: memory by {r.memory_method}")
            table.add_row(
                r.contender, f"{r.median_s:,.3f} s",
                f"±{r.spread_s / r.median_s * 50:.0f}%" if len(r.times_s) > 1 else "-",
                f"{len(r.times_s)}{' (cold)' if r.cold else ''}", f"{r.gflops:,.1f}",
                "-" if r.roofline_fraction is None else f"{r.roofline_fraction:.0%}",
                _mib(r.peak_extra_bytes), _mib(r.later_peak_extra_bytes), _mib(r.tracemalloc_peak_bytes),
                _ratio(r, "time_vs_chunked"), _ratio(r, "time_vs_dense"), _ratio(r, "memory_vs_chunked"),
                "-" if r.chunk_rows is None else f"{r.chunk_rows:,}")
        console.print(table)
        measured = [r for r in shape if r.status == "ok"]
        differ = [r.contender for r in measured if r.agrees is False]
        if measured:
            agreement = ("no torch row to compare with" if all(r.agrees is None for r in measured) else
                         f"loss or gradient norms DIFFER from torch's: {', '.join(differ)}" if differ else
                         "every contender's loss and gradient norms agree with torch's within 1e-3")
            notes.append(f"loss {measured[0].loss:.6f} ({measured[0].contender}); {agreement}")
        for note in notes:
            console.print(f"  [dim]{escape(note)}[/dim]", highlight=False)
    console.print(
        ("peak extra: the GPU memory of the first forward+backward at this shape, in a fresh process, by the "
         "method each row's note names (" + CUDA_ALLOCATOR + " for torch's paths and torch:cuda; the backend's "
         "own be.peak_memory() for the others, as it reports it); later call: the same for the first timed call "
         "(torch's allocator only); mem ÷ chunked is only taken between rows measured the same way. t ÷ chunked, "
         if on_gpu else
         "peak extra: the RSS high-water mark of the first forward+backward at this shape, in a fresh process, "
         "minus the RSS once the inputs exist (the gradients count: d W alone is V x d x 4 bytes); later call: the "
         "same for the first timed call; tracemalloc: NumPy's own peak in that first call. t ÷ chunked, ")
        + "t ÷ dense: time per call over torch chunked's, torch dense's; mem ÷ chunked: peak extra over torch "
        "chunked's. % peak: 6 N V d flops per call over the "
        + (("GPU's" if on_gpu else "machine's") + " float32 matmul rate" + (" (not measured: no %)" if on_gpu else "") if peak is None
           else f"{peak:,.1f} GFLOP/s float32 matmul roofline" + (" of the GPU" if on_gpu else ""))
        + f". torch chunked: F.linear_cross_entropy(..., options=LinearCrossEntropyOptions(batch_chunk_size="
        f"{TORCH_CHUNK})); torch dense: options=None; both with autograd's backward().",
        highlight=False)


def payload_for(rows: list[LargeVocabRow], cap_bytes: int | None, cap_source: str) -> dict:
    return {"memory_cap_bytes": cap_bytes, "memory_cap_source": cap_source, "torch_batch_chunk_size": TORCH_CHUNK,
            "rows": [dict(asdict(r), flops=r.flops) for r in rows]}


# ---- command line ---------------------------------------------------------------------------------------


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``python -m bench --large-vocab`` shares with ``python -m bench.large_vocab``."""
    group = parser.add_argument_group("large vocabulary")
    group.add_argument("--tokens", type=int, default=None, metavar="N",
                       help=f"tokens (rows of the input) (default: {TOKENS:,}; quick: {QUICK_TOKENS})")
    group.add_argument("--hidden", type=int, default=None, metavar="D",
                       help=f"hidden size d (default: {HIDDEN}; quick: {QUICK_HIDDEN})")
    group.add_argument("--vocab", type=int, nargs="+", default=None, metavar="V",
                       help=f"vocabulary sizes, one table each (default: {' '.join(map(str, VOCABS))}; quick: "
                       f"{' '.join(map(str, QUICK_VOCABS))})")
    group.add_argument("--memory-cap", type=float, default=None, metavar="GIB",
                       help=f"GiB the torch reference path's logits may take before it is skipped (default: "
                       f"{MEMORY_SHARE * 100:.0f}%% of the memory available)")
    group.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                       help=f"seconds of timed calls per contender and shape after the first call (default: "
                       f"{BUDGET_S:g}; quick: no limit)")
    group.add_argument("--no-dense", dest="dense", action="store_false",
                       help="leave out the torch reference path (options=None)")


def check_shape_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("tokens", "hidden"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.vocab is not None and min(args.vocab) < 1:
        parser.error("--vocab must be at least 1")
    if args.memory_cap is not None and args.memory_cap <= 0:
        parser.error("--memory-cap must be positive")
    if args.budget is not None and args.budget < 0:
        parser.error("--budget must be at least 0")


def run_section(args: argparse.Namespace, backends: list[str] | None, repeats: int, matmul_gflops: dict,
                progress) -> tuple[list[LargeVocabRow], dict]:
    """Measure the table for parsed arguments (both command lines); the rows and their JSON."""
    quick = getattr(args, "quick", False)
    tokens = args.tokens or (QUICK_TOKENS if quick else TOKENS)
    hidden = args.hidden or (QUICK_HIDDEN if quick else HIDDEN)
    vocabs = args.vocab or (QUICK_VOCABS if quick else VOCABS)
    budget = args.budget if args.budget is not None else (None if quick else BUDGET_S)
    device = getattr(args, "device", "cpu")  # python -m bench --large-vocab: the CPU
    cap, source = memory_cap(args.memory_cap, device)
    rows = measure(tokens, hidden, vocabs, backends, repeats=repeats, budget_s=budget, cap_bytes=cap,
                   cap_source=source, dense=args.dense, progress=progress, device=device)
    add_ratios(rows, matmul_gflops)
    payload = payload_for(rows, cap, source)
    payload["device"] = device
    return rows, payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.large_vocab",
        description="Forward+backward of a large-vocabulary linear cross-entropy: softgrad's "
        "linear_cross_entropy_and_grad per backend beside torch.nn.functional.linear_cross_entropy (dense and "
        "chunked). Time and peak extra memory (RSS, each contender in its own process).")
    parser.add_argument("--backend", nargs="+", default=None, metavar="NAME",
                        help=f"softgrad backends (default: {' '.join(DEFAULT_BACKENDS)}, those that run here; "
                        f"with --device cuda: {' '.join(GPU_BACKENDS)})")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where every contender runs: cpu (peak extra host RSS) or cuda (the GPU backends and "
                        "torch on CUDA tensors; the device allocator's peak) (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small shapes (N {QUICK_TOKENS}, d {QUICK_HIDDEN}, V "
                        f"{' '.join(map(str, QUICK_VOCABS))}): seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls after the first (default: {REPEATS}; quick: 2)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    add_shape_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else REPEATS
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    check_shape_arguments(parser, args)
    return args


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(RESULT_MARK + json.dumps(measure_child(json.loads(args.child))), flush=True)
        return 0
    if args.device == "cuda":
        missing = cuda_missing()
        if missing is not None:
            print(f"bench.large_vocab: --device cuda: {missing}", file=sys.stderr)
            return 2
    from rich.console import Console
    from softgrad.bench.roofline import matmul_gflops
    from softgrad.numerics.machine import machine_header

    try:
        if args.json:
            from softgrad.numerics.files import writable_target

            writable_target(args.json)  # before minutes of measuring, not after
    except OSError as error:
        print(f"bench.large_vocab: {error}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 170)
    header = machine_header()
    console.print(f"[bold]softgrad bench: large vocabulary[/bold] on {header['cpu']} ({header['cpu_count']} CPUs); "
                  + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if k in ("numpy", "torch", "jax"))
                  + (f"; device: {_cuda_name()}" if args.device == "cuda" else ""))
    started = time.perf_counter()
    with console.status("measuring...") as status:
        status.update("matmul roofline")
        rates = matmul_gflops(1024 if args.quick else 2048)
        console.print("matmul roofline (float32): " + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in rates.items()))
        rows, section = run_section(args, args.backend, args.repeats, rates, status.update)
    render(rows, console, rates)
    console.print(f"measured in {time.perf_counter() - started:,.0f} s", highlight=False)
    if args.json:
        from softgrad.numerics.files import atomic_write_text

        try:
            atomic_write_text(args.json, json.dumps({"machine": header, "matmul_gflops": rates,
                                                     "large_vocab": section}, indent=2))
        except OSError as error:
            print(f"bench.large_vocab: {error}", file=sys.stderr)
            return 2
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
