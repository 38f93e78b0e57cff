"""``softgrad evaluate`` and ``softgrad predict``: a run's test accuracy, per-class table and confusion matrix; predictions for files.

The commands run in the test's process (tests/in_process.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.datasets.idx import read_idx

from tests import in_process


def command(module: str, *args: str) -> in_process.Finished:
    """``python -m MODULE ARGS``, in this process."""
    return in_process.run(importlib.import_module(module).main, *args)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    result = command("softgrad.commands.train", "--model", "linear", "--epochs", "1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_evaluate_a_run_writes_the_confusion_matrix(run_folder):
    result = command("softgrad.commands.evaluate", str(run_folder))
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 85 and "per class" in result.stdout
    cm = np.loadtxt(run_folder / "confusion-numpy.csv", delimiter=",", dtype=np.int64)
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    np.testing.assert_array_equal(cm.sum(axis=1), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert np.trace(cm) / cm.sum() * 100 == pytest.approx(accuracy, abs=0.01)
    assert (run_folder / "confusion-numpy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_torch = command("softgrad.commands.evaluate", str(run_folder / "checkpoint.npz"), "--backend", "torch",
                       "--out", str(run_folder / "torch"))
    assert on_torch.returncode == 0 and f"test accuracy {accuracy:.2f}%" in on_torch.stdout


def test_predict_arrays_and_image_files(run_folder, tmp_path):
    import matplotlib.image
    from softgrad.training import checkpoint, predict

    images = read_idx(datasets.SHIPPED_MNIST / "t10k-images-idx3-ubyte.gz")[:5]
    np.save(tmp_path / "five.npy", images)
    matplotlib.image.imsave(tmp_path / "first.png", images[0], cmap="gray", vmin=0, vmax=255)
    model = checkpoint.load(run_folder / "checkpoint.npz")[0]
    expected = predict(model, datasets.load("mnist").x_test[:5])
    result = command("softgrad.commands.evaluate", str(run_folder), "--predict", str(tmp_path / "five.npy"),
                     str(tmp_path / "first.png"))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines[str(tmp_path / "five.npy")] == ", ".join(str(c) for c in expected)
    assert lines[str(tmp_path / "first.png")] == str(expected[0])


def test_evaluate_names_what_it_cannot_use(run_folder, tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    matplotlib_png = tmp_path / "small.png"
    import matplotlib.image

    matplotlib.image.imsave(matplotlib_png, np.zeros((10, 12)), cmap="gray")
    for args, message in (([str(tmp_path / "nothing")], "no checkpoint.npz there"),
                          ([str(run_folder), "--predict", str(tmp_path / "bad.npy")], "cannot read it as a NumPy array"),
                          ([str(run_folder), "--predict", str(matplotlib_png)], "the image is 12x10; mnist images are 28x28"),
                          ([str(run_folder), "--backend", "no-such"], "unknown backend 'no-such'")):
        result = command("softgrad.commands.evaluate", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
