"""The command ``softgrad`` (the console script, and ``python -m softgrad``): its subcommands, ``--help`` and
``--version``, and the one place that maps what a subcommand raises to its exit status (2 with one line for bad
input; 1 with one line for a bug, whose traceback ``SOFTGRAD_DEBUG=1`` shows; 130 for Ctrl-C).

``main`` runs in the test's process; a new one only for the console script's and ``python -m softgrad``'s
exit status."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["train", "evaluate", "predict", "export", "bench", "conformance"]
SCRIPT = shutil.which("softgrad", path=str(Path(sys.executable).parent))


def softgrad(capsys, *args: str) -> tuple[int, str, str]:
    """``softgrad ARGS`` in this process: (status, stdout, stderr)."""
    from softgrad.__main__ import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOFTGRAD_DEBUG")}
    return {**env, **extra}


@pytest.mark.parametrize("runner", ["console script", "python -m softgrad"])
def test_version(runner, tmp_path):
    if runner == "console script" and SCRIPT is None:
        pytest.skip("the console script softgrad is not installed in this environment (pip install -e .)")
    argv = [SCRIPT] if runner == "console script" else [sys.executable, "-m", "softgrad"]
    result = subprocess.run([*argv, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"softgrad {importlib.metadata.version('softgrad')}\n"


def test_help_names_every_subcommand(capsys):
    status, out, _ = softgrad(capsys, "--help")
    assert status == 0 and out.startswith("usage: softgrad COMMAND")
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == SUBCOMMANDS
    assert "SOFTGRAD_DEBUG=1" in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(capsys, name):
    status, out, err = softgrad(capsys, name, "--help")
    assert status == 0 and err == ""
    assert out.startswith("usage: ")
    assert out.startswith(f"usage: softgrad {name} ")
    assert softgrad(capsys, "help", name)[:2] == (0, out)


def test_no_command_shows_the_help_and_fails(capsys):
    status, out, _ = softgrad(capsys)
    assert status == 2 and out.startswith("usage: softgrad COMMAND")


@pytest.mark.parametrize("args, words", [
    (["trian"], ["unknown command 'trian'", "did you mean train?", "--help"]),
    (["--epochs", "1"], ["unknown option '--epochs'", "train"]),
    (["help", "nope"], ["unknown command 'nope'"]),
])
def test_a_wrong_command_is_one_line(capsys, args, words):
    status, out, err = softgrad(capsys, *args)
    assert status == 2 and out == "" and one_line(err) and err.startswith("softgrad: error: "), err
    for word in words:
        assert word in err


@pytest.mark.parametrize("args, prefix", [
    (["train", "--dataset", "synthetic", "--epochs", "0"], "softgrad train: "),
    (["train", "--epochs", "two"], "softgrad train: error: "),
    (["evaluate", "no-such-run"], "softgrad evaluate: "),
    (["predict", "no-such-run", "x.npy"], "softgrad predict: "),
    (["conformance", "no-such-backend"], "conformance: "),
])
def test_bad_input_is_one_line_and_status_2(capsys, monkeypatch, tmp_path, args, prefix):
    monkeypatch.chdir(tmp_path)
    status, _, err = softgrad(capsys, *args)
    assert status == 2 and one_line(err) and err.startswith(prefix), err


def boom(*args, **kwargs):
    raise KeyError("boom")


@pytest.mark.parametrize("name, module, function, args", [
    ("train", "softgrad.commands.train", "run", ["--dataset", "synthetic"]),
    ("evaluate", "softgrad.commands.evaluate", "run", ["some-run"]),
    ("predict", "softgrad.commands.evaluate", "run", ["some-run", "x.npy"]),
    ("conformance", "softgrad.backends.conformance.__main__", "get_backend", ["numpy"]),
])
def test_a_bug_is_one_line_status_1_and_names_softgrad_debug(capsys, monkeypatch, name, module, function, args):
    monkeypatch.delenv("SOFTGRAD_DEBUG", raising=False)
    monkeypatch.setattr(importlib.import_module(module), function, boom)
    status, _, err = softgrad(capsys, name, *args)
    assert status == 1 and one_line(err), err
    assert err.startswith(f"softgrad {name}: internal error") and "KeyError: 'boom'" in err
    assert "set SOFTGRAD_DEBUG=1 for the traceback" in err


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("softgrad.commands.evaluate"), "run", interrupted)
    status, _, err = softgrad(capsys, "evaluate", "some-run")
    assert status == 130 and err == "softgrad evaluate: interrupted\n"


# train's run with a bug on line 3 of its own source, which the traceback names
BUGGY_RUN = ("import softgrad.commands.train as train\n"
             "def run(args):\n"
             "    raise ZeroDivisionError('a bug')\n")


@pytest.mark.parametrize("debug", [False, True])
def test_softgrad_debug_shows_the_traceback_of_a_bug(capsys, monkeypatch, tmp_path, debug):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOFTGRAD_DEBUG", raising=False)
    if debug:
        monkeypatch.setenv("SOFTGRAD_DEBUG", "1")
    namespace: dict = {}
    exec(compile(BUGGY_RUN, "<buggy train>", "exec"), namespace)
    monkeypatch.setattr(importlib.import_module("softgrad.commands.train"), "run", namespace["run"])
    status, _, err = softgrad(capsys, "train", "--dataset", "synthetic")
    assert status == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("softgrad train: internal error, a bug in softgrad: ZeroDivisionError: a bug")
    if debug:
        assert "Traceback (most recent call last)" in err and "line 3, in run" in err
        assert "SOFTGRAD_DEBUG" not in last
    else:
        assert one_line(err) and last.endswith("; set SOFTGRAD_DEBUG=1 for the traceback")


@pytest.fixture
def no_plots(monkeypatch):
    """Stand-in files for the run's figures: what these tests check is the command, and drawing is slow."""
    def stand_in(*args, **kwargs):
        next(a for a in (*args, *kwargs.values()) if isinstance(a, Path)).write_bytes(b"figure")

    train = importlib.import_module("softgrad.commands.train")
    for name in ("plot_curves", "plot_regression", "plot_predictions"):
        monkeypatch.setattr(train.reports, name, stand_in)


def test_predict_is_evaluate_predict_and_the_model_s_values(capsys, tmp_path, no_plots):
    run = tmp_path / "run"
    status, _, err = softgrad(capsys, "train", "--dataset", "toy-regression", "--model", "linear", "--epochs", "1",
                              "--quiet", "--out", run)
    assert status == 0, err
    samples = tmp_path / "samples.npy"
    np.save(samples, np.array([[1.0], [2.5], [-3.0]]))
    status, predicted, err = softgrad(capsys, "predict", run, samples)
    assert status == 0, err
    assert softgrad(capsys, "evaluate", run, "--predict", samples) == (0, predicted, "")
    # the reference: the linear model y = x w + b, with w and b read from the checkpoint by NumPy alone
    # (toy-regression is raw: no input or target scaling)
    with np.load(run / "checkpoint.npz") as saved:
        weight, bias = saved["param_0"].astype(np.float64), saved["param_1"].astype(np.float64)
    values = np.load(samples) @ weight + bias
    assert predicted == f"{samples}: " + ", ".join(f"{v:.4g}" for v in values[:, 0]) + "\n"
