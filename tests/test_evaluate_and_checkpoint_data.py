"""softgrad evaluate, predict and checkpoints: inputs scaled as the run's training data were, the data a
checkpoint was trained on recorded, NaN/inf refused, crafted .npy headers refused before any allocation,
non-checkpoints named in one line, and readable plots that never replace a training run's files.

Runs are tiny and made in-process (fit with checkpoint_path, softgrad.evaluate's main), so the file takes seconds.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.commands.evaluate import (
    main as evaluate_main,  # the command's module (softgrad.evaluate: the function)
)
from softgrad.training import MLP, checkpoint, fit, predict, reports
from softgrad.training import evaluate as evaluate_model

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _evaluate(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = evaluate_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)


def _shown(out: str, file: Path) -> str:
    return dict(line.split(": ", 1) for line in out.strip().splitlines())[str(file)]


def _raw_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """The raw features from the shipped file and the split as diabetes() documents it: an independent reading."""
    with gzip.open(datasets.SHIPPED_DIABETES / "diabetes_data_raw.csv.gz", "rt") as stream:
        raw = np.loadtxt(stream)
    order = np.random.default_rng(0).permutation(442)
    return raw[order[:353]], raw[order[353:]]


@pytest.fixture(scope="module")
def diabetes_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diabetes")
    data = datasets.load("diabetes")
    model = MLP([10, 1])
    fit(model, data, optimizer="adam", lr=0.05, epochs=2, checkpoint_path=out / "checkpoint.npz", log=None)
    return out


# ---- --predict scales inputs exactly as the run's training data were -----------------------------


def test_predict_on_diabetes_raw_rows_prints_what_predict_gives(diabetes_run, tmp_path, capsys):
    raw_train, raw_test = _raw_diabetes()
    np.save(tmp_path / "three.npy", raw_test[:3])
    model = checkpoint.load(diabetes_run / "checkpoint.npz")[0]
    # reference: the standardisation from its definition, float64 statistics of the raw training rows
    reference = ((raw_test[:3] - raw_train.mean(axis=0)) / raw_train.std(axis=0)).astype(np.float32)
    want = predict(model, reference)
    np.testing.assert_allclose(want, predict(model, datasets.load("diabetes").x_test[:3]), rtol=1e-5)
    rc, out, err = _evaluate(capsys, diabetes_run, "--predict", tmp_path / "three.npy")
    assert rc == 0, err
    assert _shown(out, tmp_path / "three.npy") == ", ".join(f"{v:.4g}" for v in want[:, 0])
    assert len(set(_shown(out, tmp_path / "three.npy").split(", "))) == 3  # not one value for every patient


def test_scale_inputs_reproduces_every_loaded_split_exactly():
    raw_train, raw_test = _raw_diabetes()
    diabetes = datasets.load("diabetes")
    np.testing.assert_array_equal(diabetes.scale_inputs(raw_test), diabetes.x_test)
    np.testing.assert_array_equal(diabetes.scale_inputs(raw_train), diabetes.x_train)
    from softgrad.datasets.idx import read_idx

    mnist = datasets.load("mnist", binary="0")
    pixels = read_idx(datasets.SHIPPED_MNIST / "t10k-images-idx3-ubyte.gz")[:500].reshape(500, -1)
    np.testing.assert_array_equal(mnist.scale_inputs(pixels), mnist.x_test[:500])
    np.testing.assert_allclose(mnist.scale_inputs(pixels), (pixels / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    synthetic = datasets.load("synthetic", n_train=20, n_test=5, num_features=3)
    np.testing.assert_array_equal(synthetic.scale_inputs(synthetic.x_test), synthetic.x_test)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[Path, datasets.Dataset]:
    out = tmp_path_factory.mktemp("synthetic")
    data = datasets.load("synthetic", n_train=300, n_test=60, num_features=8, num_classes=3, seed=4)
    fit(MLP([8, 3]), data, epochs=2, checkpoint_path=out / "checkpoint.npz", log=None)
    return out, data


def test_predict_on_synthetic_rows_and_evaluate_without_run_json(synthetic_run, tmp_path, capsys):
    folder, data = synthetic_run
    model = checkpoint.load(folder / "checkpoint.npz")[0]
    np.save(tmp_path / "rows.npy", data.x_test[:20])
    rc, out, err = _evaluate(capsys, folder, "--predict", tmp_path / "rows.npy")
    assert rc == 0, err
    assert _shown(out, tmp_path / "rows.npy") == ", ".join(data.classes[i] for i in predict(model, data.x_test[:20]))
    # no run.json: the checkpoint's record gives the data set and its options, never MNIST
    rc, out, err = _evaluate(capsys, folder / "checkpoint.npz", "--out", tmp_path / "eval")
    assert rc == 0, err
    accuracy = float(np.mean(predict(model, data.x_test) == data.y_test))
    assert f"test accuracy {accuracy:.2%}" in out and "synthetic" in out
    cm = np.loadtxt(tmp_path / "eval" / "confusion-numpy.csv", delimiter=",", dtype=np.int64)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(data.y_test, minlength=3))


def _pixel_dataset() -> tuple[datasets.Dataset, np.ndarray]:
    """A data set of 4x4 grey images with 0..255 raw pixels, as the image loaders make them."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (120, 16), dtype=np.uint8)
    labels = (pixels[:, :8].mean(axis=1) > pixels[:, 8:].mean(axis=1)).astype(np.int64)
    x = (pixels.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    return datasets.Dataset("tiny-images", x[:100], labels[:100], x[100:], labels[100:], ("top", "bottom"), "test",
                            image_shape=(4, 4), mean=(0.5,), std=(0.25,), raw_scale=255.0), pixels


def test_predict_reads_pixels_from_the_recorded_scale_not_from_the_values(tmp_path, capsys):
    from PIL import Image

    data, pixels = _pixel_dataset()
    model = MLP([16, 2])
    fit(model, data, epochs=3, lr=0.1, checkpoint_path=tmp_path / "checkpoint.npz", log=None)
    dark = np.minimum(pixels[100:110], 1)  # every value 0 or 1: raw pixels all the same, never "0..1 intensities"
    for name, raw in (("pixels", pixels[100:110]), ("dark", dark)):
        for dtype in (np.uint8, np.float32):
            np.save(tmp_path / f"{name}.npy", raw.astype(dtype))
            reference = (raw / 255.0 - 0.5) / 0.25  # from the definition, float64
            rc, out, err = _evaluate(capsys, tmp_path / "checkpoint.npz", "--predict", tmp_path / f"{name}.npy")
            assert rc == 0, err
            assert _shown(out, tmp_path / f"{name}.npy") == ", ".join(
                data.classes[i] for i in predict(model, reference.astype(np.float32)))
    Image.fromarray(pixels[100].reshape(4, 4), "L").save(tmp_path / "one.png")
    rc, out, err = _evaluate(capsys, tmp_path / "checkpoint.npz", "--predict", tmp_path / "one.png")
    assert rc == 0 and _shown(out, tmp_path / "one.png") == data.classes[predict(model, data.x_test[:1])[0]], err
    np.save(tmp_path / "bright.npy", np.full((2, 16), 300.0))
    _one_line_error(*_evaluate(capsys, tmp_path / "checkpoint.npz", "--predict", tmp_path / "bright.npy")[::2],
                    "0..255")


# ---- the checkpoint records the data; own arrays; a differing --dataset ---------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_checkpoint_of_your_own_arrays_predicts_from_the_command_line(task, tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(50, 20, (120, 5))
    if task == "regression":
        y = 0.3 * x[:, :1] + 1
        data = datasets.from_arrays(x[:100], y[:100], x[100:], y[100:], task="regression", normalise=True)
    else:
        y = (x[:, 0] > 50).astype(np.int64)
        data = datasets.from_arrays(x[:100], y[:100], x[100:], y[100:], classes=["low", "high"], normalise=True)
    model = MLP([5, data.num_outputs])
    fit(model, data, epochs=2, lr=0.01, checkpoint_path=tmp_path / "checkpoint.npz", log=None)
    np.save(tmp_path / "raw.npy", x[100:106])
    rc, out, err = _evaluate(capsys, tmp_path / "checkpoint.npz", "--predict", tmp_path / "raw.npy")
    assert rc == 0, err
    # reference: the normalisation from its definition, with the training rows' float64 statistics
    reference = ((x[100:106] - x[:100].mean()) / x[:100].std()).astype(np.float32)
    want = predict(model, reference)
    text = (", ".join(f"{v:.4g}" for v in want[:, 0]) if task == "regression"
            else ", ".join(data.classes[i] for i in want))
    assert _shown(out, tmp_path / "raw.npy") == text
    _one_line_error(*_evaluate(capsys, tmp_path / "checkpoint.npz")[::2], "--predict", "arrays")
    _one_line_error(*_evaluate(capsys, tmp_path / "checkpoint.npz", "--dataset", "mnist")[::2], "arrays", "mnist")


def test_dataset_flag_that_differs_from_the_recorded_one_names_both(diabetes_run, tmp_path, capsys):
    for other in ("toy-regression", "mnist", "cifar10"):  # cifar10 is not here: named before any data is read
        _one_line_error(*_evaluate(capsys, diabetes_run, "--dataset", other)[::2], "diabetes", other)
    run_json = tmp_path / "run" / "run.json"
    shutil.copytree(diabetes_run, run_json.parent)
    run_json.write_text(json.dumps({"dataset": "diabetes", "binary": None, "root": None}))
    _one_line_error(*_evaluate(capsys, run_json.parent, "--dataset", "synthetic")[::2], "diabetes", "synthetic")


def _strip_record(src: Path, dst: Path) -> Path:
    """``src`` as softgrad wrote checkpoints before they recorded their data."""
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["data"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


def test_checkpoints_that_record_no_data_ask_for_it_and_load_as_before(diabetes_run, tmp_path, capsys):
    shutil.copy(FIXTURES / "checkpoint-v1.npz", tmp_path / "v1.npz")
    _one_line_error(*_evaluate(capsys, tmp_path / "v1.npz")[::2], "--dataset")
    _one_line_error(*_evaluate(capsys, tmp_path / "v1.npz", "--dataset", "diabetes")[::2], "20")  # features named
    old = _strip_record(diabetes_run / "checkpoint.npz", tmp_path / "old.npz")
    assert checkpoint.load(old)[0].trained_on is None
    _one_line_error(*_evaluate(capsys, old)[::2], "--dataset")
    rc, out, err = _evaluate(capsys, old, "--dataset", "diabetes")
    rc2, out2, _ = _evaluate(capsys, diabetes_run / "checkpoint.npz")
    assert rc == rc2 == 0, err
    assert out.split("test RMSE ")[1].split()[0] == out2.split("test RMSE ")[1].split()[0]


def test_the_data_record_survives_json_and_is_checked_at_load(diabetes_run, tmp_path):
    record = datasets.load("mnist", binary="even").record()
    assert datasets.DataRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert record.recipe == {"name": "mnist", "binary": "even", "options": {}, "root": None}
    assert datasets.from_arrays(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [1, 0]).record().recipe is None
    with np.load(diabetes_run / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    good = json.loads(str(arrays["meta"]))
    for change in ({"num_features": 9}, {"scaling": {**good["data"]["scaling"], "feature_std": [0.0] * 10}},
                   {"recipe": {"name": "nope"}}, {"classes": "ab"}, {"task": "clustering"}):
        arrays["meta"] = np.array(json.dumps({**good, "data": {**good["data"], **change}}))
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(checkpoint.CheckpointError, match="bad.npz"):
            checkpoint.load(tmp_path / "bad.npz")


# ---- NaN and inf ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_and_evaluate_refuse_non_finite_samples(backend, bad):
    if backend == "torch":
        pytest.importorskip("torch")
    model = MLP([4, 3], backend=backend)
    x = np.ones((5, 4), np.float32)
    x[3, 2] = bad
    with pytest.raises(ValueError, match="sample 3 holds NaN or inf"):
        predict(model, model.be.asarray(x))
    with pytest.raises(ValueError, match="sample 3 holds NaN or inf"):
        evaluate_model(model, x, np.zeros(5, np.int64))


def test_predict_refuses_a_value_beyond_float32():
    with pytest.raises(ValueError, match="sample 1 holds NaN or inf"):
        predict(MLP([2, 3]), np.array([[1.0, 2.0], [1e39, 0.0]]))


def test_non_finite_files_and_checkpoints_are_refused(diabetes_run, tmp_path, capsys):
    _, raw_test = _raw_diabetes()
    rows = raw_test[:4].copy()
    rows[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", rows)
    _one_line_error(*_evaluate(capsys, diabetes_run, "--predict", tmp_path / "nan.npy")[::2], "nan.npy", "sample 2")
    with np.load(diabetes_run / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    state = next(k for k in arrays if k.startswith("state.") and arrays[k].ndim)
    for key, fill in (("param_0", np.nan), ("param_1", np.inf), (state, np.nan)):
        changed = {**arrays, key: np.full_like(arrays[key], fill)}
        np.savez(tmp_path / "bad.npz", **changed)
        with pytest.raises(checkpoint.CheckpointError, match=f"'{key}' holds .* NaN or infinite"):
            checkpoint.load(tmp_path / "bad.npz")
    _one_line_error(*_evaluate(capsys, tmp_path / "bad.npz", "--dataset", "diabetes")[::2], "NaN")


# ---- crafted .npy headers refused from the headers ----------------------------------------------


def _crafted(src: Path, dst: Path, member: str, shape, descr: str, payload: bytes = b"") -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == f"{member}.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
                data = header.getvalue() + payload
            zout.writestr(info.filename, data)
    return dst


@pytest.mark.parametrize("member, shape, descr, payload", [
    ("param_0", (3_000_000_000,), "<f4", b""),
    ("param_0", (1_000_000, 1_000_000), "<f4", b""),
    ("param_1", (2_000_000_000,), "<f8", b"\0" * 16),
    ("param_0", (10, 1), "<f8", b"\0" * 40),  # the model's shape, but half its data
    ("param_0", (10, 1), "|O", b"\0" * 80),
    ("meta", (100_000_000,), "<U10", b""),
    ("state.exp_avg.0", (3_000_000_000,), "<f4", b""),
])
def test_a_crafted_header_is_refused_before_any_allocation(diabetes_run, tmp_path, member, shape, descr, payload):
    path = _crafted(diabetes_run / "checkpoint.npz", tmp_path / "crafted.npz", member, shape, descr, payload)
    tracemalloc.start()
    try:
        with pytest.raises(checkpoint.CheckpointError, match=f"'{member}'"):
            checkpoint.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak:,} bytes allocated before the refusal"


# ---- a seed below zero, files that are not checkpoints -------------------------------------------


@pytest.mark.parametrize("seed", [-1, True, -(2**70)])
def test_a_checkpoint_with_a_bad_seed_is_refused(diabetes_run, tmp_path, seed):
    with np.load(diabetes_run / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    meta["model"]["seed"] = seed
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "seed.npz", **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="seed"):
        checkpoint.load(tmp_path / "seed.npz")


def test_files_that_are_not_checkpoints_get_one_line_without_numpy_advice(diabetes_run, tmp_path, capsys):
    np.savez(tmp_path / "objects.npz", meta=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "plain.npz", x=np.arange(3))
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "array.npy", np.arange(3))
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object))
    for name in ("objects.npz", "plain.npz", "text.npz", "array.npy"):
        rc, _, err = _evaluate(capsys, tmp_path / name)
        _one_line_error(rc, err, name)
        assert "allow_pickle" not in err and "pickle.load" not in err
    rc, _, err = _evaluate(capsys, diabetes_run, "--predict", tmp_path / "objects.npy")
    _one_line_error(rc, err, "objects.npy", "Python objects")
    assert "allow_pickle" not in err


# ---- plots: readable, and never over the training run's files --------------------------------------------


def _figure(monkeypatch, draw):
    """The figure ``draw`` makes, drawn with Agg, as reports saves it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = []
    monkeypatch.setattr(reports, "_save", lambda fig, path: figures.append(fig))
    draw()
    canvas = FigureCanvasAgg(figures[0])
    canvas.draw()
    return figures[0], canvas.get_renderer()


@pytest.mark.parametrize("n", [2, 10, 20])
def test_confusion_matrix_shows_small_counts_in_readable_text(monkeypatch, tmp_path, n):
    cm = np.diag(np.full(n, 1000))
    cm[0, 1] = 1
    fig, _ = _figure(monkeypatch, lambda: reports.plot_confusion_matrix(cm, [str(i) for i in range(n)],
                                                                          tmp_path / "cm.png"))
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the colour bar
    assert min(t.get_fontsize() for t in ax.texts) >= 8 and len(ax.texts) == n * n
    image = ax.images[0]
    colours = image.cmap(image.norm(np.ma.masked_less(np.asarray(cm, float), 1)))

    def luminance(c):
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    assert luminance(colours[1, 0]) - luminance(colours[0, 1]) > 0.08  # a count of 1 is no empty cell


def test_prediction_titles_with_long_class_names_do_not_overlap(monkeypatch, tmp_path):
    classes = tuple(f"a rather long class name, number {i}" for i in range(10))
    x = np.zeros((32, 16), np.float32)
    labels, predicted = np.arange(32) % 10, (np.arange(32) * 3) % 10
    fig, renderer = _figure(monkeypatch, lambda: reports.plot_predictions(
        x, labels, predicted, classes, image_shape=(4, 4), mean=(0.0,), std=(1.0,), path=tmp_path / "p.png"))
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    pictures = [ax.get_window_extent(renderer) for ax in axes]
    assert not [(i, j) for i, a in enumerate(titles) for j, b in enumerate(titles) if i < j and a.overlaps(b)]
    assert not [(i, j) for i, a in enumerate(titles) for j, b in enumerate(pictures) if i != j and a.overlaps(b)]
    assert all("number" in ax.get_title() for ax in axes)  # shortened from the middle: the ends still differ


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_evaluations_never_replace_the_runs_files_nor_each_others(synthetic_run, diabetes_run, tmp_path, capsys):
    pytest.importorskip("torch")
    folder = tmp_path / "run"
    shutil.copytree(synthetic_run[0], folder)
    (folder / "predictions.png").write_bytes(b"the training run's picture")
    (folder / "confusion.png").write_bytes(b"a file of the user's")
    before = _digests(folder)
    assert _evaluate(capsys, folder)[0] == 0
    after_numpy = _digests(folder)
    assert _evaluate(capsys, folder, "--backend", "torch")[0] == 0
    after_torch = _digests(folder)
    assert all(after_torch[name] == digest for name, digest in {**before, **after_numpy}.items())
    assert {"confusion-numpy.png", "confusion-numpy.csv", "confusion-torch.png", "confusion-torch.csv"} <= set(after_torch)
    regression = tmp_path / "regression"
    shutil.copytree(diabetes_run, regression)
    (regression / "fit.png").write_bytes(b"the training run's fit")
    assert _evaluate(capsys, regression)[0] == 0
    assert (regression / "fit.png").read_bytes() == b"the training run's fit" and (regression / "fit-numpy.png").is_file()


def test_a_binary_task_is_recorded_and_evaluated_as_trained(tmp_path, capsys):
    data = datasets.load("synthetic", n_train=200, n_test=40, num_features=6, num_classes=4, binary="0,2")
    model = MLP([6, 1])
    fit(model, data, epochs=2, checkpoint_path=tmp_path / "checkpoint.npz", log=None)
    rc, out, err = _evaluate(capsys, tmp_path / "checkpoint.npz")
    assert rc == 0, err
    assert f"test accuracy {np.mean(predict(model, data.x_test) == data.y_test):.2%}" in out
    assert dataclasses.replace(data, recipe=None).record().recipe is None
    again = checkpoint.load(tmp_path / "checkpoint.npz")[0].trained_on.load()  # the data, from the record alone
    np.testing.assert_array_equal(again.y_test, data.y_test)
    np.testing.assert_array_equal(again.x_test, data.x_test)
