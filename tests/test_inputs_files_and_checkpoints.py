"""Optimizer steps under threads and on read-only arrays, writes through links and umasks, damaged and crafted
checkpoints, and the errors that name bad input (each test fails without its fix)."""

from __future__ import annotations

import os
import stat
import threading
import warnings

import numpy as np
import pytest
from softgrad.backends import get_backend
from softgrad.numerics.files import atomic_write_text, current_umask, remove_stale_temporaries

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
    from softgrad import datasets
    from softgrad.training import MLP, fit

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


# ---- damaged and crafted checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from softgrad import datasets
    from softgrad.training import MLP, fit

    path = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    data = datasets.synthetic(n_train=60, n_test=20, num_features=5, num_classes=3, seed=0)
    fit(MLP([5, 4, 3], seed=0), data, epochs=1, batch_size=20, checkpoint_path=path, progress=False, log=None)
    return path.read_bytes()


def _rewrite(tmp_path, good: bytes, change) -> os.PathLike:
    import io
    import json

    with np.load(io.BytesIO(good)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "crafted.npz"
    np.savez(path, **arrays)
    return path


def test_truncated_and_bit_flipped_checkpoints_raise_a_checkpoint_error(tmp_path, good_checkpoint):
    from softgrad.training.checkpoint import CheckpointError, load

    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.npz"
    cuts = sorted(set(rng.integers(0, len(good_checkpoint), 40).tolist()) | {0, 1, 30, len(good_checkpoint) - 1})
    for cut in cuts:
        path.write_bytes(good_checkpoint[:cut])
        with pytest.raises(CheckpointError, match="damaged.npz"):
            load(path)
    survived = 0
    for position in rng.integers(0, len(good_checkpoint), 60):
        damaged = bytearray(good_checkpoint)
        damaged[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            load(path)  # a flip in the raw float data can leave a valid checkpoint; nothing else may pass
            survived += 1
        except CheckpointError as error:
            assert "damaged.npz" in str(error)
    assert survived < 60


@pytest.mark.parametrize("change, message", [
    (lambda m, a: m["model"].update(widths=[100_000, 100_000, 3]), r"the model needs \(100000, 100000\)"),
    (lambda m, a: m["model"].update(widths="5-4-3"), "widths"),
    (lambda m, a: m.update(model=[5, 4, 3]), "model description"),
    (lambda m, a: m.pop("history"), "history"),
    (lambda m, a: m.update(format="softgrad-checkpoint-9"), "format"),
    (lambda m, a: a.update(param_0=a["param_0"].astype(np.complex128)), "complex128, not float32"),
    (lambda m, a: a.update(param_1=np.array(["a", "b", "c", "d"])), "not float32"),
    (lambda m, a: a.update({"state.momentum_buffers.0": np.zeros((4, 5), np.float32)}),
     "momentum_buffers 0 of its sgd state has shape"),
    (lambda m, a: m["optimizer"].update(name="lion"), "unknown optimizer 'lion'"),
    (lambda m, a: m["optimizer"].update(state=[]), "optimizer state"),
])
def test_crafted_checkpoints_are_refused_before_anything_is_allocated(tmp_path, good_checkpoint, change, message):
    from softgrad.training.checkpoint import CheckpointError, load

    with pytest.raises(CheckpointError, match=message):
        load(_rewrite(tmp_path, good_checkpoint, change))


def test_a_member_that_inflates_far_beyond_the_model_is_refused(tmp_path, good_checkpoint):
    from softgrad.training.checkpoint import CheckpointError, load

    path = _rewrite(tmp_path, good_checkpoint, lambda m, a: a.update(param_0=np.zeros((5, 4), np.float32)))
    import zipfile

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "param_0.npy":
                data = data + bytes(200 << 20)  # 200 MB of zeros, a few hundred kB compressed
            target.writestr(item, data)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="would take"):
        load(bomb)


# ---- errors that name the problem ------------------------------------------------------------------------


@pytest.mark.parametrize("row, why", [([1.0, np.nan], "holds NaN"), ([np.inf, 1.0], r"holds \+inf"),
                                      ([-np.inf, -np.inf], "is all -inf")])
def test_one_dimensional_inputs_without_a_softmax_are_named(be, row, why):
    for op in (be.softmax, be.log_softmax):
        with pytest.raises(ValueError, match=f"the input {why}"):
            op(be.asarray(np.array(row)))


def test_numpy_scalar_arguments_are_accepted_as_torch_accepts_them(be):
    z, y = be.asarray(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]])), be.asarray(np.array([2, -100]))
    plain = be.to_numpy(be.cross_entropy(z, y, label_smoothing=0.1, ignore_index=-100))
    numpy_args = be.to_numpy(be.cross_entropy(z, y, label_smoothing=np.float32(0.1), ignore_index=np.int64(-100)))
    np.testing.assert_allclose(numpy_args, plain, rtol=1e-7)
    np.testing.assert_allclose(be.to_numpy(be.softmax(z, axis=np.int64(0))), be.to_numpy(be.softmax(z, axis=0)))


def test_huge_unsigned_labels_are_printed_as_they_are():
    be = get_backend("numpy")
    with pytest.raises(ValueError, match=r"label 9223372036854775813 \(sample 0\) is out of range"):
        be.cross_entropy(np.ones((2, 3)), np.array([2**63 + 5, 1], dtype=np.uint64))


def test_sgd_names_bad_parameters_hyperparameters_and_states(be):
    from softgrad.numerics import SGDState

    p = [be.asarray(np.ones(3))]
    with pytest.raises(ValueError, match="lr must be finite and >= 0"):
        be.sgd_step(p, [be.asarray(np.ones(3))], be.sgd_init(p), lr=10**400)
    for dtype in (np.int64, np.bool_):
        q = [be.asarray(np.ones(3, dtype))]
        with pytest.raises(TypeError, match="parameter 0 must be float32 or float64"):
            be.sgd_step(q, q, be.sgd_init(q), lr=0.1)
    with pytest.raises(TypeError, match="the state's step must be an int"):
        be.sgd_step(p, [be.asarray(np.ones(3))], SGDState("one", None), lr=0.1)
    with pytest.raises(TypeError, match="momentum_buffers must be None or one array per parameter"):
        be.sgd_step(p, [be.asarray(np.ones(3))], SGDState(1, 5), lr=0.1, momentum=0.9)


def test_a_state_from_another_backend_is_named_as_such():
    torch_backend = pytest.importorskip("torch") and get_backend("torch")
    from softgrad.numerics import SGDState

    p = [torch_backend.asarray(np.ones(3))]
    with pytest.raises(TypeError, match="momentum buffer 0 of the state is a numpy.ndarray, not an array of the "
                                        "'torch' backend"):
        torch_backend.sgd_step(p, [torch_backend.asarray(np.ones(3))], SGDState(1, (np.ones(3),)), lr=0.1,
                               momentum=0.9)


# ---- predict, auto ------------------------------------------------------------------------------------


def test_predict_takes_images_and_single_samples_and_names_other_shapes(be):
    from softgrad.training import MLP, evaluate, predict

    model = MLP([784, 10], seed=0, backend=be)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 784)).astype(np.float32)
    expected = predict(model, rows)
    np.testing.assert_array_equal(predict(model, rows.reshape(5, 28, 28)), expected)
    np.testing.assert_array_equal(predict(model, rows[0]), expected[:1])
    np.testing.assert_array_equal(predict(model, rows[0].reshape(28, 28)), expected[:1])
    np.testing.assert_array_equal(predict(model, rows[::-1]), expected[::-1])  # a reversed view
    assert evaluate(model, rows.reshape(5, 28, 28), expected)["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"the model takes rows of 784 features, \(N, 784\); got an array of shape "
                                         r"\(5, 27, 27\)"):
        predict(model, rows[:, :729].reshape(5, 27, 27))


def test_a_damaged_auto_cache_is_ignored_and_an_enormous_batch_is_not_probed(tmp_path, monkeypatch):
    import json

    from softgrad import datasets
    from softgrad.training import MLP, auto, fit

    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    probed = []
    monkeypatch.setattr(auto, "probe", lambda name, widths, batch_size, dtype: probed.append(batch_size) or 1.0)
    data = datasets.synthetic(n_train=50, n_test=10, num_features=4, num_classes=2, seed=0)
    for damaged, warned in (("[1, 2, 3]", True), ("{not json", True), (json.dumps({"anything": "else"}), False)):
        (tmp_path / "auto-backend.json").write_text(damaged)
        with warnings.catch_warnings(record=True) as caught:  # one warning for a cache that does not parse
            warnings.simplefilter("always")
            fit(MLP([4, 2]), data, backend="auto", epochs=1, batch_size=10**9, progress=False, log=None)
        said = [str(w.message) for w in caught if "ignoring the cache" in str(w.message)]
        assert len(said) == warned, said
    assert probed and set(probed) == {50}
    assert isinstance(json.loads((tmp_path / "auto-backend.json").read_text()), dict)


def test_losses_name_the_input_that_is_not_finite(be):
    z = be.asarray(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]]))
    y = be.asarray(np.array([0, 1]))
    for bad in (np.nan, np.inf):
        weight = be.asarray(np.array([1.0, bad, 1.0]))
        for op in ("cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"):
            with pytest.raises(ValueError, match=f"the class weight holds {bad} at 1; it must be finite"):
                getattr(be, op)(z, y, weight=weight)
        target = be.asarray(np.array([[0.5, bad, 0.5], [1.0, 0.0, 0.0]]))
        with pytest.raises(ValueError, match=rf"the probability target holds {bad} at \(0, 1\)"):
            be.cross_entropy(z, target)


def test_logits_too_far_apart_for_float32_are_named(be):
    z = be.asarray(np.array([[3e38, -3e38], [0.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match="row 0 of the logits spans more than float32 can hold"):
        be.cross_entropy(z, be.asarray(np.array([1, 0])))
