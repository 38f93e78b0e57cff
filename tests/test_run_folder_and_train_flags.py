"""softgrad train and the run folder: optimizer checks before any work, flags named, one-line
parser errors, a run folder owned by one process, no output over a file the run did not write, writability
first, a resume before the first checkpoint, a model too big refused, and the confusing results."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.commands import run_folder, train
from softgrad.numerics.files import atomic_write, claim_folder, remove_stale_temporaries
from softgrad.training import MLP, fit
from softgrad.training import fitting as fitting_module

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "toy-regression", "--model", "linear", "--epochs", "1", "--quiet"]


def cli(*argv: str, forbid_data: bool = False) -> tuple[int, str, str]:
    """softgrad.commands.train.main in this process: (status, stdout, stderr); with forbid_data, reading the data fails
    the test (the argument must be refused before any work)."""
    out, err = io.StringIO(), io.StringIO()

    def load(*args, **kwargs):
        raise AssertionError(f"the data were read for {argv}")

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if forbid_data:
            patch.setattr(train.datasets, "load", load)
        try:
            status = train.main(list(argv))
        except SystemExit as error:
            status = error.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def no_plots(monkeypatch):
    """The run's figures as stand-in files: what these tests check is which files a run writes, and
    drawing them is most of a tiny run's time."""
    def stand_in(*args, **kwargs):
        path = next(a for a in (*args, *kwargs.values()) if isinstance(a, Path))
        path.write_bytes(b"figure")

    for name in ("plot_curves", "plot_regression", "plot_predictions"):
        monkeypatch.setattr(train.reports, name, stand_in)


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


# ---- the optimizer's own checks, before any work, in the flags' terms ------------------------------

# (flags, the optimizer, its keyword arguments for torch.optim, the flag the message must name)
TORCH_REFUSES = [
    (["--nesterov", "--momentum", "0"], "SGD", {"lr": 0.05, "momentum": 0.0, "nesterov": True}, "--nesterov"),
    (["--momentum", "0", "--optimizer-option", "nesterov=True"], "SGD", {"lr": 0.05, "momentum": 0.0, "nesterov": True},
     "--optimizer-option nesterov"),
    (["--nesterov", "--dampening", "0.5"], "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "nesterov": True},
     "--dampening"),
    (["--momentum", "-1"], "SGD", {"lr": 0.05, "momentum": -1.0}, "--momentum"),
    (["--lr", "-1"], "SGD", {"lr": -1.0}, "--lr"),
    (["--weight-decay", "-0.1"], "SGD", {"lr": 0.05, "weight_decay": -0.1}, "--weight-decay"),
    (["--optimizer", "adam", "--betas", "1.0,0.999"], "Adam", {"betas": (1.0, 0.999)}, "--betas"),
    (["--optimizer", "adam", "--betas", "0.9,-0.1"], "Adam", {"betas": (0.9, -0.1)}, "--betas"),
    (["--optimizer", "adam", "--eps", "-1"], "Adam", {"eps": -1.0}, "--eps"),
    (["--optimizer", "adamw", "--weight-decay", "-1"], "AdamW", {"weight_decay": -1.0}, "--weight-decay"),
    (["--optimizer", "rmsprop", "--alpha", "-1"], "RMSprop", {"alpha": -1.0}, "--alpha"),
    (["--optimizer", "rmsprop", "--momentum", "-1"], "RMSprop", {"momentum": -1.0}, "--momentum"),
    (["--optimizer", "adagrad", "--lr-decay", "-1"], "Adagrad", {"lr_decay": -1.0}, "--lr-decay"),
    (["--optimizer", "adagrad", "--initial-accumulator-value", "-1"], "Adagrad",
     {"initial_accumulator_value": -1.0}, "--initial-accumulator-value"),
]


@pytest.mark.parametrize("flags,optimizer,kwargs,flag", TORCH_REFUSES, ids=[" ".join(c[0]) for c in TORCH_REFUSES])
def test_what_torch_optim_refuses_the_command_line_refuses_before_any_work(flags, optimizer, kwargs, flag, tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError):  # the reference: torch.optim refuses these settings
        getattr(torch.optim, optimizer)([torch.zeros(2, requires_grad=True)], **kwargs)
    out = tmp_path / "run"
    status, _, err = cli(*FAST, *flags, "--out", str(out), forbid_data=True)
    assert status == 2 and one_line(err) and flag in err, err
    assert "_step" not in err and "_init" not in err  # the flag, not the function that checked it
    assert not out.exists()


def test_fit_refuses_nesterov_without_momentum_before_any_work(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Nesterov"):
        torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.0, nesterov=True)
    data = datasets.synthetic(n_train=40, n_test=10, num_features=5, num_classes=2, seed=0)
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    with pytest.raises(ValueError, match="nesterov"):
        fit(MLP([5, 2]), data, epochs=1, batch_size=20, momentum=0.0, nesterov=True, checkpoint_path=checkpoint,
            progress=False, log=None)
    assert not checkpoint.exists()
    # momentum 0 alone is plain SGD (fit's default Nesterov goes with it), as torch.optim.SGD(momentum=0) is
    history = fit(MLP([5, 2]), data, epochs=1, batch_size=20, momentum=0.0, progress=False, log=None)
    assert len(history) == 1


@pytest.mark.parametrize("flags,flag,internal", [
    (["--batch-size", "0"], "--batch-size", "batch_size"),
    (["--epochs", "-1"], "--epochs", "epochs must be an int"),
    (["--epochs", "0"], "--epochs", "epochs must be an int"),  # refused: it would leave an unusable folder
    (["--lr", "nan"], "--lr", "sgd_step"),
    (["--optimizer-option", "dampening=-1"], "--optimizer-option dampening", "sgd_step"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum", "adam_step"),
    (["--loss-option", "foo=1"], "--loss-option foo=1", "unexpected keyword"),
    (["--loss", "huber", "--loss-option", "delta=-1"], "--loss-option delta=-1", "loss_options {"),
])
def test_messages_name_the_flag_the_user_typed(flags, flag, internal, tmp_path):
    out = tmp_path / "run"
    status, _, err = cli(*FAST, *flags, "--out", str(out), forbid_data="--loss-option" not in flags)
    assert status == 2 and one_line(err) and flag in err and internal not in err, err
    assert not out.exists()


def test_fit_names_an_unknown_loss_option_with_the_ones_the_loss_takes():
    data = datasets.synthetic(n_train=40, n_test=10, num_features=5, num_classes=2, seed=0)
    with pytest.raises(TypeError, match=r"cross_entropy has no option 'foo'; it takes .*label_smoothing"):
        fit(MLP([5, 2]), data, epochs=1, loss_options={"foo": 1}, progress=False, log=None)


def test_parser_errors_are_one_line_for_every_command():
    import importlib

    import softgrad.bench.__main__ as bench

    evaluate = importlib.import_module("softgrad.commands.evaluate")  # the command's module (softgrad.evaluate: the function)

    for parse in (lambda: train.build_parser().parse_args(["--dataset", "nope"]),
                  lambda: evaluate.build_parser().parse_args(["run", "--dataset", "nope"]),
                  lambda: evaluate.build_parser().parse_args([]),
                  lambda: bench.parse_args(["--dataset", "nope"])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
            parse()
        assert exited.value.code == 2
        assert one_line(err.getvalue()) and "usage:" not in err.getvalue() and "--help" in err.getvalue(), \
            err.getvalue()


# ---- a run folder is one process's at a time ---------------------------------------------------------

HOLD = ("import sys, time\nfrom softgrad.numerics.files import claim_folder\n"
        "with claim_folder(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_holder_claims_nothing(tmp_path, no_plots):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, _, err = cli(*FAST, "--out", str(out))
        assert status == 2 and one_line(err) and "in use by another run" in err and str(holder.pid) in err, err
        assert not (out / "run.json").exists()
        # fit's own claim on its checkpoint's folder, too
        data = datasets.synthetic(n_train=40, n_test=10, num_features=5, num_classes=2, seed=0)
        with pytest.raises(OSError, match="in use by another run"):
            fit(MLP([5, 2]), data, epochs=1, checkpoint_path=out / "checkpoint.npz", progress=False, log=None)
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's lock went with it; its lock file is no claim
    status, _, err = cli(*FAST, "--out", str(out))
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "curves.png", "fit.png", "history.json",
                                                       "metrics.jsonl", "run.json"]  # the lock file goes when the run ends


def test_the_default_folder_taken_by_a_run_started_in_the_same_second_passes_to_the_next_name(
        tmp_path, monkeypatch, no_plots):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder.time, "strftime", lambda *args: "T")
    taken = tmp_path / "runs" / "toy-regression-linear-numpy-T"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(taken)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, out, err = cli(*FAST)
    finally:
        holder.kill()
        holder.wait()
    assert status == 0 and "run folder: runs/toy-regression-linear-numpy-T-2" in out, (out, err)
    assert (tmp_path / "runs" / "toy-regression-linear-numpy-T-2" / "run.json").is_file()
    assert not (taken / "run.json").exists()


def test_another_thread_cannot_claim_a_held_folder_but_the_holding_thread_can(tmp_path):
    errors = []
    with claim_folder(tmp_path / "run"):
        with claim_folder(tmp_path / "run"):  # the command line claims, then fit does: the same thread
            pass

        def other():
            try:
                with claim_folder(tmp_path / "run"):
                    errors.append("claimed")
            except OSError as error:
                errors.append(str(error))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "another thread" in errors[0]
    with claim_folder(tmp_path / "run"):  # released: free again
        pass


def test_stale_temporary_cleanup_spares_a_live_write(tmp_path):
    started, release, failures = threading.Event(), threading.Event(), []

    def slow(handle):
        handle.write(b"new")
        started.set()
        release.wait(10)

    def writer():
        try:
            atomic_write(tmp_path / "checkpoint.npz", slow)
        except Exception as error:  # noqa: BLE001  (reported below)
            failures.append(error)

    stale = tmp_path / ".sg-killed.tmp"  # what a killed writer left: no one holds it
    stale.write_bytes(b"partial")
    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(10)
    removed = remove_stale_temporaries(tmp_path)
    release.set()
    thread.join()
    assert removed == [stale] and not failures
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"new"


# ---- no output over a file the run did not write --------------------------------------------------

@pytest.mark.parametrize("name", ["history.json", "metrics.jsonl", "curves.png", "predictions.png", "fit.png",
                                  "run.json", "checkpoint.npz"])
def test_an_existing_folder_holding_any_output_name_is_refused(name, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("the user's")
    status, _, err = cli(*FAST, "--out", str(out), forbid_data=True)
    said = "holds a run already: continue it with --resume" if name in ("run.json", "checkpoint.npz") else name
    assert status == 2 and one_line(err) and said in err, err
    assert (out / name).read_text() == "the user's" and sorted(os.listdir(out)) == [name]


def test_json_never_replaces_a_run_output_or_a_users_file(tmp_path, no_plots):
    out = tmp_path / "run"
    link = tmp_path / "link.json"
    link.symlink_to(out / "checkpoint.npz")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for target in [*(out / name for name in train.RUN_FILES), out / "." / "checkpoint.npz", link, notes]:
        status, _, err = cli(*FAST, "--out", str(out), "--json", str(target), forbid_data=True)
        assert status == 2 and one_line(err) and "--json" in err, (target, err)
        assert not out.exists()
    assert notes.read_text() == '{"mine": 1}'
    # a history written by an earlier run may be replaced: the file is this command's own
    status, _, err = cli(*FAST, "--out", str(out), "--json", str(tmp_path / "h.json"))
    assert status == 0, err
    status, _, err = cli(*FAST, "--out", str(tmp_path / "run2"), "--json", str(tmp_path / "h.json"))
    assert status == 0, err
    assert json.loads((tmp_path / "h.json").read_text()) == json.loads((tmp_path / "run2" / "history.json").read_text())
    # another run's history.json is that run's, not this one's to replace
    before = (tmp_path / "run2" / "history.json").read_bytes()
    status, _, err = cli(*FAST, "--out", str(tmp_path / "run3"), "--json", str(tmp_path / "run2" / "history.json"))
    assert status == 2 and "of the run in" in err and (tmp_path / "run2" / "history.json").read_bytes() == before
    # resuming: the run's own checkpoint is still no place for the history
    before = (out / "checkpoint.npz").read_bytes()
    status, _, err = cli("--resume", str(out), "--epochs", "2", "--quiet", "--json", str(out / "checkpoint.npz"))
    assert status == 2 and (out / "checkpoint.npz").read_bytes() == before


# ---- every output's writability before any work ----------------------------------------------------

@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_unwritable_outputs_are_refused_before_the_data_is_read(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for flags in (["--json", "/proc/softgrad-h.json"], ["--json", str(blocker / "h.json")],
                  ["--out", "/proc/softgrad-run"], ["--out", str(blocker / "run")]):
        extra = ["--out", str(tmp_path / "run")] if flags[0] == "--json" else []
        status, _, err = cli(*FAST, *extra, *flags, forbid_data=True)
        assert status == 2 and one_line(err) and flags[0] in err and "cannot create or write" in err, (flags, err)
        assert not (tmp_path / "run").exists()


# ---- resume ----------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "checkpoint path"])
def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(form, tmp_path, no_plots):
    out = tmp_path / "run"
    assert cli(*FAST, "--epochs", "2", "--out", str(out))[0] == 0
    uninterrupted = json.loads((out / "history.json").read_text())
    for path in out.iterdir():
        if path.name != "run.json":  # as a run killed before its first epoch ended leaves it
            path.unlink()
    status, _, err = cli("--resume", str(out if form == "folder" else out / "checkpoint.npz"))
    assert status == 0, err
    assert "no checkpoint" in err and "from the beginning" in err
    again = json.loads((out / "history.json").read_text())
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in uninterrupted]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in again] == strip


def test_resume_with_fewer_epochs_than_trained_is_refused_and_changes_nothing(tmp_path, no_plots):
    out = tmp_path / "run"
    assert cli(*FAST, "--epochs", "3", "--out", str(out))[0] == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    status, _, err = cli("--resume", str(out), "--epochs", "2")
    assert status == 2 and one_line(err) and "--epochs 2" in err and "trained 3 epochs" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    status, out_text, err = cli("--resume", str(out), "--epochs", "3")  # as many: nothing to train, said
    assert status == 0 and "nothing to train" in out_text, err
    assert json.loads((out / "run.json").read_text())["epochs"] == 3
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2, 3]


def test_fit_refuses_to_resume_with_fewer_epochs(tmp_path):
    data = datasets.synthetic(n_train=40, n_test=10, num_features=5, num_classes=2, seed=0)
    checkpoint = tmp_path / "checkpoint.npz"
    fit(MLP([5, 2]), data, epochs=2, batch_size=20, checkpoint_path=checkpoint, progress=False, log=None)
    with pytest.raises(ValueError, match="trained 2 epochs already; epochs=1 is fewer"):
        fit(MLP([5, 2]), data, epochs=1, resume=checkpoint, progress=False, log=None)


# ---- a model too big for memory, refused before allocating -------------------------------------------

def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    import tracemalloc

    from softgrad.training.models import available_memory

    if available_memory() is None:
        pytest.skip("this system does not say how much memory is available")
    widths = [784, 10**9, 10]
    count = 784 * 10**9 + 10**9 + 10**9 * 10 + 10  # weights and biases of both layers, counted by hand
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"{count:,} parameters") as refused:
            MLP(widths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and "TiB as float32" in str(refused.value)  # refused before any array was made
    monkeypatch.setattr(train.datasets, "load", lambda *a, **k: datasets.synthetic(
        n_train=20, n_test=10, num_features=784, num_classes=10, seed=0))
    status, _, err = cli("--hidden", "1000000000", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert status == 2 and one_line(err) and "--hidden 1000000000" in err and "parameters" in err, err
    assert not (tmp_path / "run").exists()


# ---- divergence with momentum >= 1; the progress bar's loss is the epoch line's -----------------------------

def test_a_divergence_from_momentum_above_one_names_the_momentum():
    torch = pytest.importorskip("torch")
    torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=2.0)  # torch allows it: no refusal
    data = datasets.synthetic(n_train=200, n_test=20, num_features=5, num_classes=3, seed=0)
    with pytest.raises(fitting_module.TrainingDivergedError, match=r"momentum 2 >= 1 .* momentum below 1"):
        fit(MLP([5, 3]), data, epochs=30, batch_size=10, momentum=2.0, lr=0.1, lr_schedule="constant",
            progress=False, log=None)


def test_the_progress_bar_ends_at_the_epoch_lines_mean_loss(monkeypatch):
    shown = []

    class Bar:  # records what the bar would show
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, description, total, loss):
            return 0

        def update(self, task, completed, loss):
            shown.append(loss)

    monkeypatch.setattr(fitting_module, "_progress_bar", lambda enabled: Bar())
    data = datasets.synthetic(n_train=103, n_test=10, num_features=5, num_classes=3, seed=0)
    history = fit(MLP([5, 3]), data, epochs=1, batch_size=4, progress=True, log=None)
    # what was asked: the bar's last figure is the epoch line's (the epoch's mean loss), not the last batch's
    assert shown[-1] == f"{history[0]['train_loss']:.4f}"
    assert len(set(shown)) > 1 and np.isfinite([float(v) for v in shown]).all()


def test_a_loss_registered_after_the_command_is_imported_is_a_loss_choice(tmp_path, no_plots):
    """--loss offers the registry's losses when the command runs (as a plugged-in one joins it), not a list
    fixed at import; the run trains with it and run.json names it."""
    from softgrad.numerics.losses import LOSSES, Loss, register_loss

    register_loss(Loss("mse_for_the_train_test", LOSSES["mse_loss"].compute, targets="value"))
    try:
        assert "mse_for_the_train_test" in train.build_parser().format_help()
        status, _, err = cli(*FAST, "--loss", "mse_for_the_train_test", "--out", str(tmp_path / "run"))
        assert status == 0, err
        assert json.loads((tmp_path / "run" / "run.json").read_text())["loss"] == "mse_for_the_train_test"
    finally:
        LOSSES.pop("mse_for_the_train_test")
    status, _, err = cli(*FAST, "--loss", "mse_for_the_train_test", "--out", str(tmp_path / "gone"))
    assert status == 2 and "invalid choice: 'mse_for_the_train_test'" in err


def test_the_default_loss_rule_is_one_for_fit_and_the_command(tmp_path, no_plots):
    """The loss a run takes unnamed: mse for regression data, bce_with_logits for one output on two classes
    (the command's --binary builds one output), else cross_entropy; fit and softgrad train ask the same rule."""
    from softgrad.training.settings import default_loss

    regression, blobs = datasets.load("toy-regression"), datasets.load("synthetic", n_train=40, n_test=10,
                                                                        num_features=4, num_classes=2, seed=0)
    assert default_loss(regression, 1) == "mse_loss"
    assert default_loss(blobs, 1) == "binary_cross_entropy_with_logits"
    assert default_loss(blobs, 2) == "cross_entropy"
    for outputs in (1, 2):
        model = MLP([4, outputs], seed=0)
        fit(model, blobs, epochs=1, progress=False, log=None)
        assert model.loss == default_loss(blobs, outputs)
    for flags, loss in ((["--binary", "0"], "binary_cross_entropy_with_logits"), ([], "cross_entropy")):
        out = tmp_path / f"run{len(flags)}"
        status, _, err = cli("--dataset", "synthetic", "--model", "linear", "--epochs", "1", "--quiet", *flags,
                             "--out", str(out))
        assert status == 0, err
        assert json.loads((out / "run.json").read_text())["loss"] == loss


def test_run_json_is_the_run_settings_record_and_reads_back_the_same():
    """run.json is RunSettings' record: flags given and defaults in one flat mapping, hyperparameters given as
    --optimizer-option kept apart; it reads back to the same settings, and an older run.json (lr null, no
    chunked_head) reads with the defaults."""
    from softgrad.training.settings import RunSettings, TrainSettings

    args = train.build_parser().parse_args(["--dataset", "synthetic", "--optimizer", "adam", "--eps", "1e-6",
                                            "--optimizer-option", "amsgrad=True", "--loss-option", "label_smoothing=0.1"])
    settings = train.resolve_settings(args).settings
    record = settings.to_record()
    assert record["eps"] == 1e-6 and record["amsgrad"] is None and record["optimizer_options"] == {"amsgrad": True}
    assert record["lr"] == 1e-3 and record["loss"] is None and record["loss_options"] == {"label_smoothing": 0.1}
    assert RunSettings.from_record(json.loads(json.dumps(record))) == settings
    assert settings.training.hyperparameters == {"eps": 1e-6, "amsgrad": True}
    old = {key: value for key, value in RunSettings().to_record().items() if key != "chunked_head"}
    assert RunSettings.from_record({**old, "lr": None, "optimizer": "adam"}).training == TrainSettings(
        optimizer="adam")
    with pytest.raises(TypeError, match="unknown run settings: nope"):
        RunSettings.from_record({"nope": 1})
