"""pytest-benchmark: ops and training steps, one case per backend, samples/s in extra_info.

``make test`` runs these once each with benchmarking disabled (a smoke test);
``make benchmark`` times them and saves the JSON under bench/results/.
"""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.training import TrainSettings, train_step
from softgrad.training.models import classic_mlp

pytest.importorskip("pytest_benchmark")


@pytest.fixture
def be(be):
    """Every backend of the suite's fixture but the emulated CuPy one: its speed means nothing."""
    if "emulated" in be.device:
        pytest.skip("cupy-on-cpu runs the CUDA kernels in an emulator: a correctness check, not a speed")
    return be


def record_rate(benchmark, items: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
        benchmark.extra_info["samples_per_s"] = items / stats.stats.median


def synchronized(be, fn):
    def call():
        out = fn()
        be.synchronize()
        return out

    return call


@pytest.mark.parametrize("n, c", [(256, 10), (4096, 1000)], ids=["256x10", "4096x1000"])
def test_bench_cross_entropy_and_grad(benchmark, be, n, c):
    rng = np.random.default_rng(0)
    logits = be.asarray(rng.standard_normal((n, c)).astype(np.float32))
    labels = be.asarray(rng.integers(0, c, n))
    loss, grad = benchmark(synchronized(be, lambda: be.cross_entropy_and_grad(logits, labels)))
    assert grad.shape == (n, c) and np.isfinite(float(be.to_numpy(loss)))
    record_rate(benchmark, n)


def test_bench_log_softmax(benchmark, be):
    logits = be.asarray(np.random.default_rng(0).standard_normal((4096, 1000)).astype(np.float32))
    out = benchmark(synchronized(be, lambda: be.log_softmax(logits)))
    assert out.shape == (4096, 1000)
    record_rate(benchmark, 4096)


def test_bench_sgd_step(benchmark, be):
    model = classic_mlp(backend=be)
    grads = [p * 0.0 + 1e-3 for p in model.params]
    state = [be.sgd_init(model.params)]

    def step():
        _, state[0] = be.sgd_step(model.params, grads, state[0], lr=0.0, momentum=0.9, weight_decay=1e-4)

    benchmark(synchronized(be, step))
    assert state[0].step >= 1
    record_rate(benchmark, model.num_parameters)


@pytest.mark.parametrize("batch_size", [64, 256])
def test_bench_mlp_train_step(benchmark, be, batch_size):
    rng = np.random.default_rng(0)
    model = classic_mlp(backend=be)
    x = be.asarray(rng.standard_normal((batch_size, 784)).astype(np.float32))
    y = be.asarray(rng.integers(0, 10, batch_size))
    settings = TrainSettings()
    state = [be.sgd_init(model.params)]

    def step():
        loss, _, state[0] = train_step(model, x, y, state[0], 1e-3, settings)
        return loss

    loss = benchmark(synchronized(be, step))
    assert np.isfinite(float(be.to_numpy(loss)))
    record_rate(benchmark, batch_size)
