"""The large-vocabulary table's parent: which contenders run here, each (contender, shape) in a subprocess of
its own (:mod:`bench.large_vocab_child`), and the rows' ratios to PyTorch's two paths."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from softgrad.bench.large_vocab_row import RESULT_MARK, TORCH_CHUNK, GiB, LargeVocabRow

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKENDS = ("numpy", "torch", "jax")
GPU_BACKENDS = ("torch:cuda", "cupy", "jax:gpu")  # --device cuda
REPEATS, BUDGET_S = 3, 12.0
MEMORY_SHARE = 0.6  # of MemAvailable: the cap on the torch reference path's logits
DENSE_COPIES = 3  # (N, V) float arrays the torch reference path holds at its peak
CHILD_TIMEOUT_S = 3600


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


def payload_for(rows: list[LargeVocabRow], cap_bytes: int | None, cap_source: str) -> dict:
    return {"memory_cap_bytes": cap_bytes, "memory_cap_source": cap_source, "torch_batch_chunk_size": TORCH_CHUNK,
            "rows": [dict(asdict(r), flops=r.flops) for r in rows]}
