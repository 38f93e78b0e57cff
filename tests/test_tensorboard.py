"""TensorBoardCallback writes each epoch's figures as TensorBoard scalars, on disk as the epoch ends (issue 23,
item 4). The event files are read back here with a reader of this file's own: the TFRecord framing (length,
masked CRC-32C of it, the bytes, their masked CRC-32C) and a CRC-32C written here from its definition (the
Castagnoli polynomial, checked against the standard check value), with only the protocol-buffer schema
taken from tensorboardX; ``tensorboard``'s own reader is used as well where it is installed."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from softgrad import MLP, fit, from_arrays
from softgrad.datasets import synthetic

pytest.importorskip("tensorboardX")
from softgrad.training.tensorboard import PIP_TENSORBOARD, TensorBoardCallback, scalar_tags  # noqa: E402
from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: E402

QUIET = {"progress": False, "log": None}


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the Castagnoli polynomial, reflected
        table.append(crc)
    return table


TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:  # TFRecord's masking of a CRC
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path) -> list[Event]:
    """Every event of a TFRecord event file, each record's two checksums checked."""
    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert header_crc == masked(crc32c(header)) and body_crc == masked(crc32c(body)), f"{path} at byte {at}"
        events.append(Event.FromString(body))
        at += 16 + length
    return events


def scalars(events: list[Event]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] in the file's order."""
    found: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def expected(history: list[dict], names: dict[str, str]) -> dict[str, list[tuple[int, float]]]:
    """The history's figures as TensorBoard stores them: float32, the epoch as the step."""
    return {tag: [(r["epoch"], float(np.float32(r[key]))) for r in history] for tag, key in names.items()}


CLASSES = {"train/loss": "train_loss", "train/accuracy": "train_accuracy", "test/loss": "test_loss",
           "test/accuracy": "test_accuracy", "lr": "lr", "epoch/seconds": "seconds",
           "epoch/samples_per_s": "samples_per_s"}


def small(seed: int = 0):
    return synthetic(n_train=64, n_test=16, num_features=6, num_classes=3, seed=seed)


def test_each_epoch_is_on_disk_when_it_ends_and_the_scalars_are_the_history(tmp_path):
    seen = []
    with TensorBoardCallback(tmp_path / "tb") as tensorboard:
        def look(record):  # after the callback: its event file already holds this epoch
            seen.append((record["epoch"], scalars(read_events(tensorboard.path))))

        history = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=3, batch_size=16,
                      callbacks=[tensorboard, look], **QUIET)
        path = tensorboard.path
    assert tensorboard.path is None and [p.name for p in (tmp_path / "tb").iterdir()] == [path.name]
    for epoch, found in seen:
        assert found == expected(history[:epoch], CLASSES)
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    assert events[1].session_log.status == SessionLog.START and events[1].step == 1  # the purge step
    assert scalars(events) == expected(history, CLASSES)
    assert [e.step for e in events[2:]] == [1, 2, 3] and all(e.wall_time > 0 for e in events)


def test_regression_figures_and_no_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = x @ np.arange(1.0, 5.0)
    data = from_arrays(x[:64], y[:64], x[64:], y[64:], task="regression", standardise_targets=True)
    with TensorBoardCallback(tmp_path / "reg") as tensorboard:
        history = fit(MLP([4, 8, 1], seed=0), data, backend="numpy", epochs=2, callbacks=[tensorboard], **QUIET)
        path = tensorboard.path
    names = {"train/loss": "train_loss", "test/loss": "test_loss", "test/rmse": "test_rmse",
             "test/mae": "test_mae", "test/r2": "test_r2", "lr": "lr", "epoch/seconds": "seconds",
             "epoch/samples_per_s": "samples_per_s"}
    assert scalars(read_events(path)) == expected(history, names)

    no_test = from_arrays(x[:64], np.arange(64) % 3)
    with TensorBoardCallback(tmp_path / "no-test") as tensorboard:
        history = fit(MLP([4, 3], seed=0), no_test, backend="numpy", epochs=2, callbacks=[tensorboard], **QUIET)
        path = tensorboard.path
    kept = {tag: key for tag, key in CLASSES.items() if not tag.startswith("test/")}  # None is left out
    assert scalars(read_events(path)) == expected(history, kept)


def test_a_resumed_run_writes_a_second_file_and_leaves_the_first(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    tensorboard = TensorBoardCallback(tmp_path / "tb")
    first = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=2, checkpoint_path=checkpoint,
                callbacks=[tensorboard], **QUIET)
    first_path = tensorboard.path
    tensorboard.close()
    before = first_path.read_bytes()
    resumed = fit(MLP([6, 8, 3], seed=0), small(), backend="numpy", epochs=4, checkpoint_path=checkpoint,
                  resume=checkpoint, callbacks=[tensorboard], **QUIET)
    second_path = tensorboard.path
    tensorboard.close()
    assert first_path != second_path and first_path.read_bytes() == before
    # in name order, TensorBoard's reading order, the files are in writing order (here most likely within
    # one second, which tensorboardX's part of the name does not tell apart)
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == [first_path.name, second_path.name]
    assert scalars(read_events(first_path)) == expected(first, CLASSES)
    events = read_events(second_path)
    assert events[1].session_log.status == SessionLog.START and events[1].step == 3  # epochs >= 3 replace any older
    assert scalars(events) == expected(resumed[2:], CLASSES)


def test_tensorboards_own_reader_reads_the_same_scalars(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with TensorBoardCallback(tmp_path / "tb") as tensorboard:
        history = fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=3, callbacks=[tensorboard], **QUIET)
    reader = accumulator.EventAccumulator(str(tmp_path / "tb"))
    reader.Reload()
    found = {tag: [(s.step, s.value) for s in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}
    assert found == expected(history, CLASSES)


def test_tensorboard_shows_a_run_resumed_from_an_earlier_checkpoint_once(tmp_path):
    """The purge step at work in TensorBoard's own reader: epochs 2 and 3 trained again (from a copy of the
    checkpoint after epoch 1) replace the first run's, they are not drawn twice."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    first, second = tmp_path / "first" / "checkpoint.npz", tmp_path / "second" / "checkpoint.npz"
    tensorboard = TensorBoardCallback(tmp_path / "tb")
    fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=1, checkpoint_path=first, **QUIET)
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    with tensorboard:
        fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=3, checkpoint_path=first, resume=first,
            callbacks=[tensorboard], lr_schedule="constant", **QUIET)
    with tensorboard:  # the run again from epoch 1's checkpoint, with another learning rate
        again = fit(MLP([6, 3], seed=0), small(), backend="numpy", epochs=3, checkpoint_path=second,
                    resume=second, callbacks=[tensorboard], lr=0.01, lr_schedule="constant", **QUIET)
    reader = accumulator.EventAccumulator(str(tmp_path / "tb"))
    reader.Reload()
    assert [(s.step, s.value) for s in reader.Scalars("train/loss")] == expected(again[1:], CLASSES)["train/loss"]


def test_scalar_tags_groups_the_figures_and_leaves_out_what_a_record_lacks():
    record = {"epoch": 4, "train_loss": 0.5, "train_accuracy": None, "test_loss": 0.75, "test_rmse": 2,
              "seconds": 1.5, "samples_per_s": 100.0, "lr": 0.01, "note": "text", "flag": True}
    assert scalar_tags(record) == {"train/loss": 0.5, "test/loss": 0.75, "test/rmse": 2.0, "epoch/seconds": 1.5,
                                   "epoch/samples_per_s": 100.0, "lr": 0.01}


def test_missing_tensorboardx_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboardX" or m.startswith("tensorboardX.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ImportError) as error:
        TensorBoardCallback(tmp_path / "tb")
    message = str(error.value)
    assert "\n" not in message and "tensorboardX" in message and PIP_TENSORBOARD in message
    assert "pip install 'softgrad[tensorboard]'" in message
    assert not (tmp_path / "tb").exists()


def test_a_log_folder_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "notes").write_text("the user's")
    with pytest.raises(NotADirectoryError, match="TensorBoard log folder .*notes.* is a file, not a folder"):
        TensorBoardCallback(tmp_path / "notes" / "tb")
    assert (tmp_path / "notes").read_text() == "the user's"


def test_the_module_imports_without_tensorboardx():
    code = ("import sys, softgrad, softgrad.training.tensorboard as t; "
            "assert 'tensorboardX' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_softgrad_train_tensorboard_writes_the_history_and_resume_adds_a_file(tmp_path, monkeypatch):
    from softgrad.commands import train

    for name in ("plot_curves", "plot_regression", "plot_predictions"):  # the figures are not what is checked
        monkeypatch.setattr(train.reports, name, lambda *args, **kwargs: None)
    out, logdir = tmp_path / "run", tmp_path / "tb"
    fast = ["--dataset", "toy-regression", "--model", "linear", "--quiet", "--tensorboard", str(logdir)]
    assert train.main([*fast, "--out", str(out), "--epochs", "2"]) == 0
    assert train.main([*fast, "--resume", str(out), "--epochs", "3"]) == 0
    history = json.loads((out / "history.json").read_text())
    files = sorted(logdir.iterdir())  # TensorBoard's reading order: the run's, then the resumed run's
    assert [(read_events(path)[1].session_log.status, read_events(path)[1].step) for path in files] == \
        [(SessionLog.START, 1), (SessionLog.START, 3)]
    names = {"train/loss": "train_loss", "test/loss": "test_loss", "test/rmse": "test_rmse", "test/mae": "test_mae",
             "test/r2": "test_r2", "lr": "lr", "epoch/seconds": "seconds", "epoch/samples_per_s": "samples_per_s"}
    assert scalars(read_events(files[0])) == expected(history[:2], names)
    assert scalars(read_events(files[1])) == expected(history[2:], names)


def test_the_crc32c_here_is_the_standard_one():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C (RFC 3720, B.4)
