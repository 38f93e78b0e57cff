"""``softgrad train`` end to end: the run folder, --resume, --help and errors.

The command runs in the test's process (tests/in_process.py); a new interpreter only where the process is
what is tested: a base install without torch, Ctrl-C."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from softgrad.commands import evaluate
from softgrad.commands import train as train_command

from tests import in_process

ROOT = Path(__file__).resolve().parents[1]


def train(*args: str) -> in_process.Finished:
    """``python -m softgrad.commands.train ARGS``, in this process."""
    return in_process.run(train_command.main, *args)


def test_train_writes_the_run_folder_and_resumes(tmp_path):
    out = tmp_path / "run"
    result = train("--model", "linear", "--epochs", "2", "--out", str(out), "--json", str(tmp_path / "h.json"))
    assert result.returncode == 0, result.stderr
    assert "MNIST subset shipped with softgrad" in result.stdout
    assert "epoch   2/2" in result.stdout and "per class" in result.stdout
    for name in ("checkpoint.npz", "history.json", "curves.png", "predictions.png", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and history[-1]["test_accuracy"] > 0.85
    assert json.loads((tmp_path / "h.json").read_text()) == history

    resumed = train("--resume", str(out), "--epochs", "3", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch" not in resumed.stdout.split("test accuracy")[0]  # --quiet: no per-epoch lines
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]

    refused = train("--resume", str(out), "--dataset", "synthetic")
    assert refused.returncode == 2 and "drop --dataset" in refused.stderr


def test_help_documents_every_flag():
    result = train("--help")
    assert result.returncode == 0
    for flag in ("--backend", "--model", "--hidden", "--activation", "--dataset", "--root", "--download",
                 "--epochs", "--batch-size", "--lr", "--momentum", "--nesterov", "--weight-decay",
                 "--lr-schedule", "--seed", "--dtype", "--out", "--json", "--resume", "--quiet"):
        assert flag in result.stdout


def test_errors_are_one_line(tmp_path):
    for args, message in (
        # where CuPy is not installed (pip install without the [cupy] extra) the reason is that instead
        (["--backend", "cupy"], "no CUDA device" if importlib.util.find_spec("cupy") else "needs CuPy"),
        (["--backend", "mlx"], "unknown backend 'mlx'"),
        (["--dataset", "cifar10", "--root", str(tmp_path)], "--download"),
        (["--resume", str(tmp_path / "nothing")], "no checkpoint.npz and run.json"),
    ):
        result = train(*args, "--out", str(tmp_path / "out"))
        if "cupy" in args and result.returncode == 0:
            continue  # a GPU machine
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_the_loss_and_the_optimizer_are_flags(tmp_path):
    out = tmp_path / "run"
    result = train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--quiet",
                   "--loss", "cross_entropy", "--optimizer", "sgd", "--momentum", "0.5", "--no-nesterov",
                   "--optimizer-option", "dampening=0.25")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "run.json").read_text())
    assert saved["optimizer"] == "sgd" and saved["loss"] == "cross_entropy" and saved["backend"] == "numpy"
    assert saved["optimizer_options"] == {"dampening": 0.25}
    from softgrad.training import checkpoint

    settings = checkpoint.load(out / "checkpoint.npz")[3]
    assert settings["hyperparameters"] == {"momentum": 0.5, "dampening": 0.25, "nesterov": False,
                                           "weight_decay": 2e-3}
    for args, message in ((["--optimizer-option", "betas=(0.9, 0.99)"], "sgd has no hyperparameter 'betas'"),
                          (["--optimizer-option", "no-equals-sign"], "expected NAME=VALUE"),
                          (["--optimizer", "lion"], "invalid choice: 'lion'")):
        refused = train("--dataset", "synthetic", "--out", str(tmp_path / "refused"), *args)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
    assert not (tmp_path / "refused").exists()  # refused before anything was written


def test_a_resumed_run_stays_on_its_backend(tmp_path):
    out = tmp_path / "run"
    first = train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--backend", "torch",
                  "--out", str(out), "--quiet")
    if first.returncode == 2 and "torch" in first.stderr:
        return  # no torch here
    assert first.returncode == 0, first.stderr
    resumed = train("--resume", str(out), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert " on torch " in resumed.stdout
    assert json.loads((out / "run.json").read_text())["backend"] == "torch"


def test_bad_arguments_are_refused_before_the_data_is_read_and_leave_no_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    for args, message in (
        (["--hidden", "abc"], "--hidden must be positive widths separated by commas"),
        (["--hidden", ",,,"], "--hidden must be positive widths"),
        (["--hidden", "64,0"], "--hidden must be positive widths"),
        (["--model", "linear", "--hidden", "64"], "--hidden shapes the MLP; --model linear has no hidden layers"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--chunked-head", "--loss", "mse"], "--chunked-head fuses the last layer with cross_entropy"),
        (["--json", str(tmp_path / "folder")], "is a directory"),
        (["--json", "/dev/null"], "not a regular file"),
    ):
        out = tmp_path / "out"
        result = train("--dataset", "synthetic", "--out", str(out), *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and not out.exists(), args


def test_an_existing_run_is_never_replaced_without_resume(tmp_path):
    out = tmp_path / "run"
    first = train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    before = (out / "checkpoint.npz").read_bytes()
    again = train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--quiet")
    assert again.returncode == 2 and f"--resume {out}" in again.stderr and "new folder" in again.stderr
    assert (out / "checkpoint.npz").read_bytes() == before


def test_a_damaged_run_json_is_named(tmp_path):
    out = tmp_path / "run"
    assert train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--out", str(out),
                 "--quiet").returncode == 0
    for text in ("{not json", '["a", "list"]', '{"no_such_setting": 1}'):
        (out / "run.json").write_text(text)
        result = train("--resume", str(out), "--epochs", "2")
        assert result.returncode == 2 and str(out / "run.json") in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_quiet_epochs_zero_and_extending_a_finished_cosine_run(tmp_path):
    out = tmp_path / "run"
    # 0 epochs would leave a folder that neither evaluate nor --resume can use: refused, nothing written
    nothing = train("--model", "linear", "--dataset", "synthetic", "--epochs", "0", "--out", str(out))
    assert nothing.returncode == 2 and "--epochs must be at least 1" in nothing.stderr and not out.exists()
    out = tmp_path / "run2"
    quiet = train("--model", "linear", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--quiet")
    assert quiet.returncode == 0 and quiet.stdout.strip().splitlines() == [
        quiet.stdout.strip().splitlines()[0]] and f"run folder: {out}" in quiet.stdout
    extended = train("--resume", str(out), "--epochs", "2")
    assert extended.returncode == 0, extended.stderr
    assert "finished its cosine schedule at lr 0" in extended.stdout and "lr_schedule='constant'" in extended.stdout


def test_an_unusable_out_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, message in ((tmp_path / ("n" * 300), "bytes long; this file system allows"),
                         (blocker / "run", "cannot create or write in")):
        result = train("--dataset", "synthetic", "--out", str(out))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_curves_have_a_loss_axis_and_an_accuracy_axis(tmp_path):
    import matplotlib.image
    from softgrad.training.reports import plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_accuracy": 0.8 + e / 100,
                "test_accuracy": 0.78 + e / 100} for e in (1, 2, 3)]
    plot_curves(history, tmp_path / "curves.png")
    height, width = matplotlib.image.imread(tmp_path / "curves.png").shape[:2]
    assert width > 1.8 * height  # two panels side by side
    plot_curves([{k: (None if "accuracy" in k else v) for k, v in r.items()} for r in history],
                tmp_path / "loss-only.png")
    height, width = matplotlib.image.imread(tmp_path / "loss-only.png").shape[:2]
    assert width < 1.8 * height


def test_the_default_command_runs_without_torch(tmp_path):
    # a base install (pip install -e . without extras): torch and torchvision absent
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from softgrad.commands.train import main\n"
            f"sys.exit(main(['--model', 'linear', '--epochs', '1', '--out', {str(tmp_path / 'run')!r}, '--quiet']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


def test_ctrl_c_before_the_first_epoch_says_nothing_was_saved(tmp_path):
    import signal

    out = tmp_path / "run"
    # a process started in the background inherits SIGINT ignored (as under nohup or `make &`): restore
    # Python's own handler, as an interactive terminal would have it
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from softgrad.commands.train import main\n"
            f"sys.exit(main(['--epochs', '5', '--out', {str(out)!r}]))\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("model:"):
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    if (out / "checkpoint.npz").exists():  # the first epoch finished before the signal arrived
        assert f"--resume {out}" in stderr
    else:
        assert "interrupted before the first epoch finished; nothing was saved to resume" in stderr


def test_regression_runs_write_the_fit_and_resume(tmp_path):
    """The tutorial's linear regression from the command line: fit.png, RMSE/MAE/R² in the history, resume."""
    out = tmp_path / "toy"
    result = train("--dataset", "toy-regression", "--model", "linear", "--loss", "mse", "--optimizer", "sgd",
                   "--lr", "0.001", "--momentum", "0", "--weight-decay", "0", "--lr-schedule", "constant",
                   "--batch-size", "15", "--epochs", "30", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "test RMSE" in result.stdout and "fit.png" in result.stdout and "per class" not in result.stdout
    assert (out / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert {"test_rmse", "test_mae", "test_r2"} <= set(history[-1]) and "test_accuracy" not in history[-1]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert json.loads((out / "run.json").read_text())["loss"] == "mse_loss"
    resumed = train("--resume", str(out), "--epochs", "35", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == list(range(1, 36))
    # the default loss for regression data is mse; a classification loss is refused before anything is written
    refused = train("--dataset", "toy-regression", "--loss", "cross_entropy", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and "cross_entropy is a classification loss" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_a_binary_task_from_the_command_line(tmp_path):
    out = tmp_path / "zero"
    result = train("--dataset", "mnist", "--binary", "0", "--model", "linear", "--optimizer", "adam", "--epochs",
                   "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "not 0" in result.stdout and "per class" in result.stdout
    saved = json.loads((out / "run.json").read_text())
    assert saved["binary"] == "0" and saved["loss"] == "binary_cross_entropy_with_logits"
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["test_accuracy"] > 0.98
    from softgrad.training import checkpoint

    model, state, _, settings = checkpoint.load(out / "checkpoint.npz")
    assert model.widths == [784, 1] and settings["optimizer"] == "adam" and settings["lr"] == 1e-3
    evaluated = in_process.run(evaluate.main, out)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {history[-1]['test_accuracy']:.2%}" in evaluated.stdout
    refused = train("--dataset", "mnist", "--loss", "bce_with_logits", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and "--binary" in refused.stderr and not (tmp_path / "no").exists()


def test_every_hyperparameter_of_every_optimizer_is_a_flag():
    from softgrad.numerics import OPTIMIZERS

    result = train("--help")
    assert result.returncode == 0
    for optimizer in OPTIMIZERS.values():
        assert f"  {optimizer.name}: lr " in result.stdout  # the epilog lists each with its defaults
        for key in optimizer.defaults:
            assert f"--{key.replace('_', '-')}" in result.stdout, key
    assert "--binary" in result.stdout and "bce_with_logits" in result.stdout


def test_adam_hyperparameters_from_flags_reach_the_checkpoint(tmp_path):
    out = tmp_path / "adam"
    result = train("--dataset", "synthetic", "--model", "linear", "--epochs", "1", "--optimizer", "adamw",
                   "--betas", "0.8,0.99", "--eps", "1e-6", "--amsgrad", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    from softgrad.training import checkpoint

    settings = checkpoint.load(out / "checkpoint.npz")[3]
    assert settings["hyperparameters"]["betas"] in ([0.8, 0.99], (0.8, 0.99))
    assert settings["hyperparameters"]["eps"] == 1e-6 and settings["hyperparameters"]["amsgrad"] is True
    assert settings["hyperparameters"]["weight_decay"] == 0.01  # AdamW's default
    refused = train("--dataset", "synthetic", "--optimizer", "adam", "--momentum", "0.9", "--out",
                    str(tmp_path / "no"))
    assert refused.returncode == 2 and "adam has no hyperparameter 'momentum'" in refused.stderr


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path):
    out = tmp_path / "run"
    first = train("--dataset", "toy-regression", "--model", "linear", "--optimizer", "adam", "--epochs", "2",
                  "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    before = (out / "run.json").read_text()
    for args, message in ((["--optimizer", "adamw"], "cannot switch to 'adamw'"),
                          (["--loss-option", "delta=-1", "--loss", "huber"], "delta must be finite and > 0")):
        refused = train("--resume", str(out), "--epochs", "4", *args)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
        assert (out / "run.json").read_text() == before  # still resumable as it was
    resumed = train("--resume", str(out), "--epochs", "3", "--quiet")
    assert resumed.returncode == 0, resumed.stderr


def test_loss_options_from_the_command_line(tmp_path):
    out = tmp_path / "huber"
    result = train("--dataset", "diabetes", "--model", "linear", "--loss", "huber", "--loss-option", "delta=0.5",
                   "--optimizer", "adam", "--epochs", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["loss_options"] == {"delta": 0.5}
    from softgrad.training import checkpoint

    assert checkpoint.load(out / "checkpoint.npz")[3]["loss_options"] == {"delta": 0.5}
    weighted = train("--dataset", "mnist", "--binary", "0", "--model", "linear", "--loss-option", "pos_weight=2.0",
                     "--epochs", "1", "--out", str(tmp_path / "pw"), "--quiet")
    assert weighted.returncode == 0, weighted.stderr
    refused = train("--dataset", "diabetes", "--loss", "mse", "--loss-option", "reduction='sum'", "--out",
                    str(tmp_path / "no"))
    assert refused.returncode == 2 and "'reduction' is not an option of training" in refused.stderr
    assert not (tmp_path / "no").exists()
