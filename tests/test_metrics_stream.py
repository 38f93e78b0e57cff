"""metrics.jsonl grows as a run trains, callbacks see each epoch and can stop it, and data without a test
split trains (issue 23, item 4 and item 1's "fit without a test split")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from softgrad import MLP, StopTraining, fit, from_arrays
from softgrad.datasets import synthetic
from softgrad.training import checkpoint
from softgrad.training.metrics_stream import METRICS_NAME, read_metrics

QUIET = {"progress": False, "log": None}


def small(seed: int = 0):
    return synthetic(n_train=64, n_test=16, num_features=6, num_classes=3, seed=seed)


def test_the_file_grows_one_line_per_epoch_while_the_run_trains(tmp_path):
    path = tmp_path / "run" / "checkpoint.npz"
    seen = []

    def watch(record):
        lines = (tmp_path / "run" / METRICS_NAME).read_text().splitlines()
        seen.append((record["epoch"], len(lines), json.loads(lines[-1])))

    history = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=4, batch_size=16,
                  checkpoint_path=path, callbacks=[watch], **QUIET)
    assert [(epoch, count) for epoch, count, _ in seen] == [(k, k) for k in range(1, 5)]
    assert [last for _, _, last in seen] == history  # the line as the history holds the epoch
    assert read_metrics(tmp_path / "run") == history == checkpoint.load(path, "numpy")[2]


def test_a_callback_gets_a_copy_of_the_record(tmp_path):
    def meddle(record):
        record["train_loss"] = "changed"

    history = fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=2, callbacks=[meddle], **QUIET)
    assert all(isinstance(r["train_loss"], float) for r in history)


def test_resume_keeps_exactly_one_line_per_epoch(tmp_path):
    path = tmp_path / "run" / "checkpoint.npz"
    fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=2, batch_size=16, lr_schedule="constant",
        checkpoint_path=path, **QUIET)
    # a run killed after its third epoch's line, before its checkpoint: that line is not the checkpoint's
    stream = tmp_path / "run" / METRICS_NAME
    with open(stream, "a") as handle:
        handle.write(json.dumps({"epoch": 3, "train_loss": 9.0}) + "\n" + '{"epoch": 4, "tr')
    history = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=5, batch_size=16,
                  checkpoint_path=path, resume=path, **QUIET)
    records = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records == history
    uninterrupted = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=5, batch_size=16,
                        lr_schedule="constant", checkpoint_path=tmp_path / "whole" / "checkpoint.npz", **QUIET)
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in uninterrupted]


def test_a_file_that_is_not_a_metrics_stream_is_not_replaced(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / METRICS_NAME).write_text("the user's notes\n")
    with pytest.raises(FileExistsError, match="never replaces files it did not write"):
        fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=1,
            checkpoint_path=tmp_path / "run" / "checkpoint.npz", **QUIET)
    assert (tmp_path / "run" / METRICS_NAME).read_text() == "the user's notes\n"
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.parametrize("how", ["return True", "raise StopTraining"])
def test_a_callback_stops_training_after_its_epoch(tmp_path, how):
    calls = []

    def stop_at_3(record):
        calls.append(record["epoch"])
        if record["epoch"] == 3:
            if how == "raise StopTraining":
                raise StopTraining
            return True
        return 1  # only True stops

    def later(record):
        calls.append(("later", record["epoch"]))

    path = tmp_path / "run" / "checkpoint.npz"
    lines = []
    history = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=10, checkpoint_path=path,
                  callbacks=[stop_at_3, later], progress=False, log=lines.append)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert calls[-1] == (("later", 3) if how == "return True" else 3)  # a raise skips the callbacks after it
    assert lines[-1] == "stopped by a callback after epoch 3"
    assert checkpoint.load(path, "numpy")[2] == history == read_metrics(path.parent)
    # and the stopped run resumes from its checkpoint, up to its epochs
    resumed = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", checkpoint_path=path, resume=path, **QUIET)
    assert [r["epoch"] for r in resumed] == list(range(1, 11))
    assert [r["epoch"] for r in read_metrics(path.parent)] == list(range(1, 11))


def test_callbacks_must_be_callables():
    with pytest.raises(TypeError, match="callbacks"):
        fit(MLP([6, 3], seed=0), small(), epochs=1, callbacks=["stop"], **QUIET)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_data_without_a_test_split_trains(tmp_path, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    full = small()
    data = from_arrays(full.x_train, full.y_train)  # no test split
    assert data.x_test.shape == (0, 6) and len(data.y_test) == 0
    path = tmp_path / "run" / "checkpoint.npz"
    history = fit(MLP([6, 8, 3], seed=0), data, backend=backend, epochs=2, checkpoint_path=path, **QUIET)
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(r["test_loss"] is None and r["test_accuracy"] is None for r in history)
    assert all(np.isfinite(r["train_loss"]) and r["train_accuracy"] is not None for r in history)
    assert read_metrics(path.parent) == history


def test_none_test_arrays_train_with_the_epoch_line_saying_no_test_figures(tmp_path):
    full = synthetic(n_train=64, n_test=16, num_features=6, num_classes=3, seed=0)
    from dataclasses import replace

    data = replace(full, x_test=None, y_test=None)
    lines = []
    history = fit(MLP([6, 3], seed=0), data, backend="numpy", epochs=1, progress=False, log=lines.append)
    assert history[0]["test_accuracy"] is None and "test" not in lines[0]


def test_regression_without_a_test_split_trains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    data = from_arrays(x, x @ np.arange(1.0, 5.0), task="regression", standardise_targets=True)
    lines = []
    history = fit(MLP([4, 8, 1], seed=0), data, backend="numpy", epochs=2, progress=False, log=lines.append)
    assert all(r[key] is None for r in history for key in ("test_loss", "test_rmse", "test_mae", "test_r2"))
    assert len(lines) == 2 and "rmse" not in lines[0]


def test_one_test_array_without_the_other_is_refused():
    full = small()
    with pytest.raises(ValueError, match="both x_test and y_test"):
        from_arrays(full.x_train, full.y_train, full.x_test)


def test_softgrad_train_writes_the_stream_beside_its_checkpoint_and_resume_continues_it(tmp_path, monkeypatch):
    from softgrad.commands import train

    for name in ("plot_curves", "plot_regression", "plot_predictions"):  # the figures are not what is checked
        monkeypatch.setattr(train.reports, name, lambda *args, **kwargs: None)
    out = tmp_path / "run"
    fast = ["--dataset", "toy-regression", "--model", "linear", "--quiet", "--out", str(out)]
    assert train.main([*fast, "--epochs", "2"]) == 0
    assert read_metrics(out) == json.loads((out / "history.json").read_text())
    assert train.main(["--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and read_metrics(out) == history
    assert "test_rmse" in history[0]
