"""sgd_step on the arrays it may be given: the sequential answer under concurrent use, NumPy scalar parameters,
read-only parameters refused before anything is written, and torch copying read-only and reversed arrays."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from softgrad.backends import get_backend


def _train_alone(be, seed: int, steps: int = 60):
    rng = np.random.default_rng(seed)
    params = [be.asarray(rng.standard_normal((64, 32)).astype(np.float32)), be.asarray(np.zeros(32, np.float32))]
    grads = [[be.asarray(rng.standard_normal(p.shape).astype(np.float32)) for p in params] for _ in range(steps)]
    return params, grads


def _run(be, params, grads):
    state = be.sgd_init(params)
    for g in grads:
        params, state = be.sgd_step(params, g, state, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return [be.to_numpy(p).copy() for p in params]


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_sgd_gives_the_sequential_answer_under_concurrent_use(name):
    be = get_backend(name) if name == "numpy" else pytest.importorskip("torch") and get_backend(name)
    cases = [_train_alone(be, seed) for seed in range(4)]
    expected = [_run(be, [be.asarray(be.to_numpy(p).copy()) for p in params], grads) for params, grads in cases]
    results: dict[int, list] = {}
    barrier = threading.Barrier(len(cases))

    def work(i):
        params, grads = cases[i]
        barrier.wait()
        results[i] = _run(be, params, grads)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        for got, exp in zip(results[i], want):
            np.testing.assert_array_equal(got, exp)


def test_sgd_updates_numpy_scalar_parameters():
    be = get_backend("numpy")
    params = [np.float32(1.0), np.ones(2, np.float32)]
    grads = [np.float32(0.5), np.ones(2, np.float32)]
    new, state = be.sgd_step(params, grads, be.sgd_init(params), lr=0.1)
    assert float(new[0]) == pytest.approx(0.95) and new[0].dtype == np.float32
    np.testing.assert_allclose(new[1], 0.9)


def test_a_read_only_parameter_is_refused_before_anything_is_written(tmp_path):
    be = get_backend("numpy")
    first = np.ones(3)
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 1 is read-only"):
        be.sgd_step([first, frozen], [np.ones(3), np.ones(3)], be.sgd_init([first, frozen]), lr=0.1)
    np.testing.assert_array_equal(first, 1.0)  # untouched


def test_torch_copies_read_only_and_reversed_arrays_instead_of_sharing_them(tmp_path):
    pytest.importorskip("torch")
    be = get_backend("torch")
    path = tmp_path / "p.npy"
    np.save(path, np.arange(4.0))
    mapped = np.load(path, mmap_mode="r")
    params = [be.asarray(mapped)]
    params, _ = be.sgd_step(params, [be.asarray(np.ones(4))], be.sgd_init(params), lr=0.5)  # no crash
    np.testing.assert_array_equal(be.to_numpy(params[0]), np.arange(4.0) - 0.5)
    np.testing.assert_array_equal(np.load(path), np.arange(4.0))  # the file is untouched
    np.testing.assert_array_equal(be.to_numpy(be.asarray(np.arange(5)[::-1])), [4, 3, 2, 1, 0])
