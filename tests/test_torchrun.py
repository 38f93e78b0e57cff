"""The torchrun smoke test: ``softgrad train --distributed`` on 2 gloo ranks launched by torchrun, one rank
killed at epoch 2 by the SOFTGRAD_FAULT hook, torchrun restarting the round (--max-restarts 1), and the
resumed run's checkpoint bitwise equal to an uninterrupted 2-rank run's; that run in turn equals one
process's training on the same global batches to rounding (float64)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch.distributed")

EPOCHS = 4


def _torchrun() -> list[str]:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _data(folder: Path) -> Path:
    """A small classification file: 120 training rows (8 steps of 16, the last short), 40 test rows."""
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(3, 6)) * 2
    y = rng.integers(0, 3, size=160)
    x = centers[y] + rng.normal(size=(160, 6))
    path = folder / "blobs.npz"
    np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    return path


def _train_flags(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--hidden", "16,8", "--epochs", str(EPOCHS),
            "--batch-size", "16", "--dtype", "float64", "--optimizer", "adam", "--lr", "0.01", "--quiet"]


def _launch(data: Path, out: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # pytorch/pytorch#135712: a restart
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}      # must not rejoin the dead round's store
    env.pop("SOFTGRAD_FAULT", None)
    if fault:
        env["SOFTGRAD_FAULT"] = fault
    command = [*_torchrun(), "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
               "--monitor-interval", "0.5", "-m", "softgrad", "train", "--distributed", *_train_flags(data, out)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent, timeout=300)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files if key != "meta"}


def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_ends_as_an_uninterrupted_one(tmp_path):
    data = _data(tmp_path)
    began = time.perf_counter()
    whole = _launch(data, tmp_path / "whole", None)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _launch(data, tmp_path / "killed", "rank=1,epoch=2,step=3,restart=0")
    took = time.perf_counter() - began
    assert killed.returncode == 0, killed.stderr[-3000:]
    # torchrun saw rank 1 fail and started a second round (its agent logs both)
    assert "restart" in killed.stderr.lower() and "exitcode: 1" in killed.stderr.lower(), killed.stderr[-3000:]

    reference, resumed = _arrays(tmp_path / "whole" / "checkpoint.npz"), _arrays(tmp_path / "killed" /
                                                                                   "checkpoint.npz")
    assert sorted(reference) == sorted(resumed) and any(k.startswith("state.") for k in reference)
    for key, value in reference.items():
        assert value.dtype == np.float64 and np.array_equal(value, resumed[key]), key  # bitwise
    for folder in ("whole", "killed"):
        history = json.loads((tmp_path / folder / "history.json").read_text())
        assert [record["epoch"] for record in history] == list(range(1, EPOCHS + 1))
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
    stdout = [line for line in whole.stdout.splitlines() if line.strip()]
    assert len(stdout) == 1 and stdout[0].startswith("test accuracy"), whole.stdout  # rank 0 alone prints

    # one process on the same global batches, in this process: equal to rounding (the ranks' sums differ
    # from one process's in the order of their additions only)
    from softgrad.commands.train import main

    assert main(_train_flags(data, tmp_path / "alone")) == 0
    alone = _arrays(tmp_path / "alone" / "checkpoint.npz")
    for key, value in alone.items():
        np.testing.assert_allclose(reference[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    print(f"two torchruns (one restarted) in {took:.1f} s")


def test_bad_input_on_rank_0_stops_every_rank_at_once(tmp_path):
    """--json naming someone else's file is refused by rank 0 alone (it checks the run's outputs); rank 1,
    ready to train, hears it at the start gate and stops too, long before the 1-minute --dist-timeout."""
    data = _data(tmp_path)
    theirs = tmp_path / "notes.json"
    theirs.write_text('{"not": "a history"}')
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SOFTGRAD_FAULT", None)
    command = [*_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "softgrad", "train", "--distributed",
               *_train_flags(data, tmp_path / "run"), "--json", str(theirs), "--dist-timeout", "1"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    took = time.perf_counter() - began
    assert done.returncode != 0
    # Rank 0's line, the one that says why, is there once and whole (the ranks share one stderr). Rank 1 stops
    # at the start gate with exit status 2 too, unless torchrun, seeing rank 0 exit, stops it first (SIGTERM,
    # -15): its own line is then missing, never another one.
    reason = (f"softgrad train: --json {theirs} exists and holds something other than a training history: "
              "give a new path (a run never replaces files it did not write)")
    follower = "softgrad train: another rank stopped before training (its line says why); this one stops with it"
    assert done.stderr.count(reason) == 1, done.stderr[-3000:]
    assert done.stderr.count(follower) <= 1
    assert done.stderr.count("softgrad train:") == 1 + done.stderr.count(follower)
    codes = re.findall(r"exitcode  : (-?\d+)", done.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, done.stderr[-3000:]
    assert took < 60, took
    assert not (tmp_path / "run").exists() and theirs.read_text() == '{"not": "a history"}'
