"""The true ceiling of a training step: the time of the matmuls the step needs, and nothing else.

For a network of widths ``w0 .. wL`` and a batch of N, one SGD step needs
``L`` forward products ``x W``, ``L`` weight gradients ``x^T dy`` and ``L - 1``
input gradients ``dy W^T`` (the first layer needs none). This module times
exactly those products with the backend's own ``be.matmul``, on its own
arrays and in the layout its layers pass them (``x^T`` and ``W^T`` are
transposed views, as in :mod:`core.training.layers`), and reports the
samples per second a step could reach if everything else cost nothing.

OpenBLAS and OpenMP leave their worker threads spinning after a call, and one
library's spinning threads would slow another's matmuls by up to 40%, so each
library is measured with no other loaded: ``python -m bench`` times one block
of :func:`measure` per repeat in a process that trains on that library
(:mod:`bench.worker`); with ``--same-process``, and ``python -m bench.ceiling``,
each backend is measured beforehand in a process of its own
(:func:`measure_in_subprocess`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from softgrad.bench.timing import ready

ROOT = Path(__file__).resolve().parents[1]

#: which backend's ceiling an anchor is read against: the library whose matmuls it runs
ANCHOR_LIBRARY = {"anchor:torch-autograd": "torch", "anchor:torch-autograd:cuda": "torch:cuda",
                  "anchor:sklearn": "numpy"}


def step_products(widths: Sequence[int], batch_size: int) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """``(what, a shape, b shape)`` of every matmul one training step does, as the layers call them
    (``a`` given as the shape of the array before any transposition)."""
    products = []
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        products.append((f"forward {i + 1}: x W", (batch_size, fan_in), (fan_in, fan_out)))
        products.append((f"weight grad {i + 1}: x^T dy", (batch_size, fan_in), (batch_size, fan_out)))
        if i > 0:
            products.append((f"input grad {i + 1}: dy W^T", (batch_size, fan_out), (fan_in, fan_out)))
    return products


def product_flops(widths: Sequence[int], batch_size: int) -> float:
    return float(sum(2 * a[0] * a[1] * b[1] if what.startswith("forward") else
                     2 * a[1] * a[0] * b[1] if what.startswith("weight") else
                     2 * a[0] * a[1] * b[0] for what, a, b in step_products(widths, batch_size)))


def measure(backend_name: str, widths: Sequence[int], batch_size: int, *, repeats: int = 5,
            min_block_s: float = 0.1, calls: int | None = None) -> dict:
    """The step's matmuls on ``backend_name``, timed: median and best seconds per step, and samples/s.

    Each timed block repeats the step ``calls`` times; by default as many as take ``min_block_s`` (the first
    block, which calibrates, is then the first timed one). ``calls`` in the result is the count used."""
    from softgrad.numerics.registry import get_backend

    be = get_backend(backend_name)
    rng = np.random.default_rng(0)
    arrays = []
    for what, a_shape, b_shape in step_products(widths, batch_size):
        a = be.asarray(rng.standard_normal(a_shape, dtype=np.float32))
        b = be.asarray(rng.standard_normal(b_shape, dtype=np.float32))
        if what.startswith("weight"):
            arrays.append((a, b, "a^T"))  # x^T dy: x is (N, in), C-ordered; its transpose a view
        elif what.startswith("input"):
            arrays.append((a, b, "b^T"))  # dy W^T: W is (in, out); its transpose a view
        else:
            arrays.append((a, b, ""))

    def step() -> None:
        out = None
        for a, b, transpose in arrays:
            if transpose == "a^T":
                out = be.matmul(a.T, b)
            elif transpose == "b^T":
                out = be.matmul(a, b.T)
            else:
                out = be.matmul(a, b)
        ready(out)  # JAX dispatches asynchronously: the products are queued in order, so the last one waits for all

    for _ in range(3):
        step()
    be.synchronize()
    calibrate, calls = calls is None, calls or 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        be.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= min_block_s or not calibrate:
            break
        calls = max(calls * 2, int(calls * min_block_s / max(elapsed, 1e-9) * 1.2) + 1)
    per_step = [elapsed / calls]
    for _ in range(repeats - 1):
        time.sleep(0.05)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        be.synchronize()
        per_step.append((time.perf_counter() - start) / calls)
    median = statistics.median(per_step)
    flops = product_flops(widths, batch_size)
    return {"backend": backend_name, "widths": list(widths), "batch_size": batch_size,
            "seconds_per_step": median, "best_seconds_per_step": min(per_step),
            "samples_per_s": batch_size / median, "gflops": flops / median / 1e9, "products": len(arrays),
            "calls": calls, "on_gpu": bool(getattr(be, "on_gpu", False))}


def measure_in_subprocess(backend_name: str, cases: Sequence[tuple[Sequence[int], int]], *, repeats: int = 5,
                          quick: bool = False, timeout: float = 600.0) -> list[dict] | str:
    """:func:`measure` for every ``(widths, batch size)`` in a fresh process that loads only that backend's
    library (no other library's threads spin beside it). A string says why it could not be measured."""
    spec = json.dumps({"backend": backend_name, "cases": [[list(w), b] for w, b in cases], "repeats": repeats,
                       "min_block_s": 0.03 if quick else 0.1})
    try:
        result = subprocess.run([sys.executable, "-m", "softgrad.bench.ceiling", "--spec", spec], cwd=ROOT, env=os.environ,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the ceiling of {backend_name} took over {timeout:.0f} s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the ceiling of {backend_name} could not be measured: {last}"
    try:  # the last line: whatever a library printed on loading comes before it
        return json.loads((result.stdout.strip().splitlines() or [""])[-1])
    except ValueError:
        return f"the ceiling of {backend_name} could not be read from its process's output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling",
        description="Time the matmuls one MLP training step needs, on one backend, in this process alone.")
    parser.add_argument("backend", nargs="?", help="a backend name (default: from --spec)")
    parser.add_argument("--widths", type=int, nargs="+", default=[784, 512, 256, 128, 64, 10])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--spec", help=argparse.SUPPRESS)  # JSON from measure_in_subprocess
    args = parser.parse_args(argv)
    if args.spec:
        spec = json.loads(args.spec)
        out = [measure(spec["backend"], w, b, repeats=spec["repeats"], min_block_s=spec["min_block_s"])
               for w, b in spec["cases"]]
        print(json.dumps(out))
        return 0
    if not args.backend:
        parser.error("name a backend")
    from softgrad.numerics.errors import BackendUnavailableError

    try:
        for batch in args.batch_size:
            r = measure(args.backend, args.widths, batch, repeats=args.repeats)
            print(f"{args.backend} batch {batch}: {r['seconds_per_step'] * 1e3:.3f} ms per step of matmuls, "
                  f"{r['samples_per_s']:,.0f} samples/s, {r['gflops']:.1f} GFLOP/s")
    except BackendUnavailableError as error:
        print(f"bench.ceiling: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
