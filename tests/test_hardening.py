"""Issue 10's classes of wrong results and lost files: each test fails without its fix."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest

from backends import get_backend
from core.base.files import atomic_write_text, current_umask, remove_stale_temporaries

# ---- wrong results -----------------------------------------------------------------------------------


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


# ---- lost or damaged files ------------------------------------------------------------------------


def test_writes_go_through_a_symlink_to_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_anything_but_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text("/dev/null", "x")


def test_a_name_at_the_length_limit_can_be_written(tmp_path):
    name = "h" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 5) + ".json"
    atomic_write_text(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}"


def test_the_file_mode_follows_the_umask_without_changing_it(tmp_path):
    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "f", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o640
        assert current_umask() == 0o027
    finally:
        os.umask(before)


def test_temporaries_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    import datasets
    from core.training import MLP, fit

    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".sg-xyz.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = tmp_path / "notes.tmp"
    keep.write_text("mine")
    data = datasets.synthetic(n_train=60, n_test=20, num_features=5, num_classes=2, seed=0)
    fit(MLP([5, 2]), data, epochs=1, batch_size=20, checkpoint_path=tmp_path / "checkpoint.npz", progress=False,
        log=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "notes.tmp"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
