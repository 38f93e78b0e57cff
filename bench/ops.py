"""Op throughput: softmax, log_softmax, cross-entropy with its gradient, sgd_step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from softgrad.bench.timing import Timing, ready, time_call
from softgrad.numerics.protocol import Backend

# (N, C): an MNIST batch, a large batch of 10 classes, ImageNet-sized classes.
SIZES = [(64, 10), (1024, 10), (1024, 1000), (8192, 1000)]
QUICK_SIZES = [(64, 10), (1024, 1000)]
# On a GPU also the size where memory bandwidth is the limit, beside a plain device copy.
GPU_SIZES = [(65536, 1000)]
# The parameters of the 784-512-256-128-64-10 MLP: weights and biases.
MLP_WIDTHS = [784, 512, 256, 128, 64, 10]


@dataclass(frozen=True)
class OpResult:
    backend: str
    op: str
    size: str  # "N x C" or "<k> params"
    dtype: str
    timing: Timing
    items: int  # rows (or parameters) processed per call
    bytes_moved: int  # the least memory traffic the op needs: its inputs read once, outputs written once

    @property
    def items_per_s(self) -> float:
        return self.items / self.timing.median_s

    @property
    def gb_per_s(self) -> float:
        return self.bytes_moved / self.timing.median_s / 1e9


def _op_cases(be: Backend, n: int, c: int, dtype) -> list[tuple[str, Callable[[], object], int]]:
    """(op, call, bytes it must move) for logits of shape (n, c)."""
    rng = np.random.default_rng(0)
    logits = be.asarray(rng.standard_normal((n, c)).astype(dtype) * 3)
    labels = be.asarray(rng.integers(0, c, n))
    matrix = n * c * np.dtype(dtype).itemsize
    cases = [
        ("softmax", lambda: be.softmax(logits), 2 * matrix),
        ("log_softmax", lambda: be.log_softmax(logits), 2 * matrix),
        ("cross_entropy + grad", lambda: be.cross_entropy_and_grad(logits, labels), 2 * matrix + 8 * n),
    ]
    if be.on_gpu:  # the copy bandwidth the fused kernels are read against
        cases.append(("device copy", lambda: ready(be.xp.asarray(logits, copy=True)), 2 * matrix))
    return cases


def _sgd_case(be: Backend, dtype) -> tuple[int, Callable[[], object]]:
    rng = np.random.default_rng(0)
    shapes = [s for a, b in zip(MLP_WIDTHS, MLP_WIDTHS[1:]) for s in ((a, b), (b,))]
    params = [be.asarray(rng.standard_normal(s).astype(dtype) * 0.01) for s in shapes]
    grads = [be.asarray(rng.standard_normal(s).astype(dtype) * 1e-3) for s in shapes]
    state = [be.sgd_init(params)]
    size = sum(int(np.prod(s)) for s in shapes)

    def step():
        # lr 0 keeps the parameters fixed, so every repeat does the same work
        _, state[0] = be.sgd_step(params, grads, state[0], lr=0.0, momentum=0.9, weight_decay=1e-4)

    return size, step


def measure_ops(be: Backend, dtype=np.float32, *, quick: bool = False, repeats: int = 5,
                progress: Callable[[str], None] = lambda _: None) -> list[OpResult]:
    results = []
    min_block_s = 0.02 if quick else 0.1
    dtype_name = np.dtype(dtype).name
    sizes = QUICK_SIZES if quick else SIZES
    for n, c in sizes + (GPU_SIZES if be.on_gpu else []):
        for op, fn, moved in _op_cases(be, n, c, dtype):
            progress(f"{be.name}: {op} {n}x{c}")
            timing = time_call(fn, be.synchronize, repeats=repeats, min_block_s=min_block_s)
            results.append(OpResult(be.name, op, f"{n} x {c}", dtype_name, timing, n, moved))
    progress(f"{be.name}: sgd_step")
    size, step = _sgd_case(be, dtype)
    timing = time_call(step, be.synchronize, repeats=repeats, min_block_s=min_block_s)
    # reads param, grad and buffer, writes param and buffer
    moved = 5 * size * np.dtype(dtype).itemsize
    label = f"{size:,} params"
    results.append(OpResult(be.name, "sgd_step (momentum)", label, dtype_name, timing, size, moved))
    # What memory traffic allows: a copy of the same number of elements, at the same size (the same
    # caches), gives the rate; the update's floor is its 5 arrays' bytes at that rate (render_ops says it).
    progress(f"{be.name}: copy of {size:,} elements")
    flat = be.asarray(np.zeros(size, dtype=dtype))
    copy = time_call(lambda: ready(be.xp.asarray(flat, copy=True)), be.synchronize, repeats=repeats,
                     min_block_s=min_block_s)
    results.append(OpResult(be.name, "device copy", label, dtype_name, copy, size, 2 * size * np.dtype(dtype).itemsize))
    return results


def sgd_floor_s(results: list[OpResult], backend: str) -> float | None:
    """The least time an SGD-with-momentum update of the bench's parameters can take on ``backend``: its
    bytes (parameters, gradients and buffers read; parameters and buffers written) at the copy rate."""
    sgd = next((r for r in results if r.backend == backend and r.op.startswith("sgd_step")), None)
    copy = next((r for r in results if r.backend == backend and r.op == "device copy" and sgd is not None
                 and r.size == sgd.size), None)
    if sgd is None or copy is None:
        return None
    return sgd.bytes_moved / copy.gb_per_s / 1e9
