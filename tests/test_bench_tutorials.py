"""The tutorial runs' bench (bench.tutorials): both sides train the same network from the same weights in the
same order, on tiny slices of the data; the report names altered data by its folder; outputs are kept."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from softgrad.bench import tutorials  # noqa: E402
from softgrad.bench.tutorial_data import TutorialData, mnist_subset  # noqa: E402
from softgrad.bench.tutorial_recipes import RECIPES  # noqa: E402
from softgrad.bench.tutorial_softgrad import softgrad_model  # noqa: E402
from softgrad.bench.tutorial_torch import torch_initialised  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_cifar_shaped(rows: int = 24) -> TutorialData:
    """HWC-flattened rows shaped like CIFAR-10's, drawn at random (the layout is what is under test)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (rows, 32 * 32 * 3)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    return TutorialData("random, cifar10-shaped", x, y, x[:8], y[:8], (32, 32, 3), tuple("abcdefghij"))


def test_both_sides_start_from_the_same_network_hwc_rows_and_dense_layout_included():
    # torch's nn.Sequential on NCHW images against softgrad's ConvNet on HWC-flattened rows, the same weights
    data = tiny_cifar_shaped()
    with torch.no_grad():
        expected = torch_initialised(RECIPES["cifar"], data)(torch.from_numpy(data.nchw(data.x_train))).numpy()
    logits, _ = softgrad_model(RECIPES["cifar"], data).forward(data.x_train)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory) -> Path:
    """Both sides of the softmax-regression and LeNet recipes, 2 epochs on 96 MNIST rows, as parts."""
    from softgrad.bench.tutorials import _part

    folder = tmp_path_factory.mktemp("parts")
    mnist = mnist_subset()
    data = replace(mnist, x_train=mnist.x_train[:96], y_train=mnist.y_train[:96], x_test=mnist.x_test[:64],
                   y_test=mnist.y_test[:64])
    for name in ("fashion", "lenet"):  # the fashion recipe (softmax regression) on MNIST rows: the mechanics
        recipe = replace(RECIPES[name], epochs=2, batch_size=32)
        for side in ("torch", "softgrad"):
            part = _part(recipe, side, data, log=lambda _: None, threads=1)
            (folder / f"{name}-{side}.json").write_text(json.dumps(part))
    return folder


@pytest.mark.parametrize("name", ["fashion", "lenet"])
def test_softgrad_follows_torchs_trajectory_from_the_same_start_and_order(tiny_parts, name):
    sides = {side: json.loads((tiny_parts / f"{name}-{side}.json").read_text()) for side in ("torch", "softgrad")}
    for mine, reference in zip(sides["softgrad"]["history"], sides["torch"]["history"]):
        assert mine["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-4)
        assert mine["train_accuracy"] == reference["train_accuracy"]
        assert mine["test_accuracy"] == reference["test_accuracy"]
    assert sides["softgrad"]["per_class"] == sides["torch"]["per_class"]
    assert sides["softgrad"]["threads_asked"] == 1 and sides["torch"]["threads"] == 1


def test_the_report_has_both_sides_the_curves_and_keeps_what_exists(tiny_parts, tmp_path, capsys):
    out = tmp_path / "report"
    assert tutorials.main(["report", "--parts", str(tiny_parts), "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "softgrad (numpy)" in text and "torch autograd" in text and "softgrad minus torch" in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(json.loads(out.with_suffix(".json").read_text())["runs"]) == {"lenet", "fashion"}
    before = text
    from softgrad.commands.cli import run_main

    assert run_main("python -m bench.tutorials", tutorials.main,
                    ["report", "--parts", str(tiny_parts), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.with_suffix(".md").read_text() == before


def test_altered_data_is_named_by_its_folder_in_the_report(tiny_parts, tmp_path):
    from softgrad.bench.tutorial_report import render_markdown

    part = json.loads((tiny_parts / "fashion-torch.json").read_text())
    text = render_markdown([dict(part, data="fashion-mnist-approx")], "curves.png")
    assert "`fashion-mnist-approx`" in text and "not official test-set figures" in text


@pytest.mark.skipif(not (SHARED / "fashion-mnist-approx").is_dir(), reason="../shared/data is absent")
def test_fashion_mnist_approx_is_read_as_d2l_feeds_it():
    from softgrad.bench.tutorial_data import fashion_mnist_approx

    data = fashion_mnist_approx(SHARED)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.float32 and 0.0 == data.x_train.min() and data.x_train.max() == 1.0
    assert np.bincount(data.y_test).tolist() == [1000] * 10


def test_a_missing_data_folder_is_one_line_naming_it(tmp_path):
    from softgrad.bench.tutorial_data import cifar10_jpeg

    with pytest.raises(FileNotFoundError, match="cifar10-jpeg/train-jpeg-bytes.npz is missing"):
        cifar10_jpeg(tmp_path)


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--seed", "-1"], ["--threads", "0"], ["--run", "nope"]])
def test_bad_run_flags_are_one_line_before_any_training(flag, tmp_path, capsys):
    argv = ["run", "--run", "fashion", "--parts", str(tmp_path / "parts"), *flag]
    with pytest.raises(SystemExit) as stopped:
        tutorials.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m bench.tutorials")
    assert not (tmp_path / "parts").exists()
