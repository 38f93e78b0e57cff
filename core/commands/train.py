"""``softgrad train``: train a classifier or a regressor on any backend and write a run folder.

    softgrad train --backend numpy --model mlp --dataset mnist --epochs 10
    softgrad train --dataset mnist --binary 0 --optimizer adam --lr 1e-3     # "is it a 0?"
    softgrad train --dataset diabetes --model linear --optimizer adam --lr 0.01
    softgrad train --data flowers.csv --target species --model linear      # your own data (docs/your-data.md)

(``python -m softgrad train`` is the same command; in a checkout, so is ``python -m softgrad.commands.train``.)

One line per epoch, then per-class accuracy (classification) or RMSE, MAE and
R² (regression). The run folder holds ``checkpoint.npz``, ``history.json``,
``metrics.jsonl`` (one line per epoch, written as each ends), ``curves.png``, ``predictions.png`` (images) or ``fit.png`` (regression) and
``run.json`` (the settings, which ``--resume`` reads back).

The flags parse into a :class:`~softgrad.training.settings.RunSettings` (:mod:`.train_flags`); the run
folder's checks are :mod:`.run_folder`'s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from softgrad import datasets
from softgrad.commands.cli import run_main
from softgrad.commands.run_folder import (
    RUN_FILES,
    check_new_run_folder,
    check_run_targets,
    continues_run,
    default_out,
)
from softgrad.commands.train_distributed import (
    FaultyCommunicator,
    StartGate,
    check_launch,
    make_communicator,
    on_rank_zero,
    run_backend,
)
from softgrad.commands.train_flags import (
    PROG,
    Resolved,
    build_parser,
    check_settings,
    checked_flags,
    resolve_settings,
)
from softgrad.numerics.files import FolderBusyError, atomic_write_text, claim_folder
from softgrad.numerics.losses import Loss, get_loss
from softgrad.training import checkpoint, reports
from softgrad.training.auto import network_of, resolve_backend
from softgrad.training.communicator import Communicator, DistributedError
from softgrad.training.convnet import ConvNet
from softgrad.training.data_checks import check_data
from softgrad.training.fitting import TrainingDivergedError, fit
from softgrad.training.inference import predict
from softgrad.training.loss_options import check_loss_options
from softgrad.training.metrics import confusion_matrix, per_class_accuracy, regression_metrics
from softgrad.training.models import MLP, check_fits_in_memory
from softgrad.training.runs import check_resume
from softgrad.training.settings import RunSettings, TrainSettings, default_loss
from softgrad.training.tensorboard import TensorBoardCallback


@dataclass(frozen=True)
class Call:
    """One ``softgrad train``: its settings (and where they came from), the run folder, and the flags that
    shape the output."""

    resolved: Resolved
    out: Path
    pick_free: bool  # out is the default folder: another name where a run takes it meanwhile
    resume: str | None = None  # --resume as given
    json: str | None = None
    quiet: bool = False
    tensorboard: str | None = None  # --tensorboard DIR: the epochs' figures as TensorBoard scalars there
    communicator: Communicator | None = None  # --distributed: this rank's; None: one process
    gate: StartGate | None = None  # --distributed: where the ranks meet before training
    args: argparse.Namespace | None = None  # --distributed: this rank's own command line

    @property
    def settings(self) -> RunSettings:
        return self.resolved.settings

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files and prints: one process, or rank 0 of several."""
        return self.communicator is None or self.communicator.rank == 0

    def continues_run(self) -> bool:
        """Whether the run folder is the resumed run's own."""
        return continues_run(self.out, self.resume, self.resolved.restarted)


def build_model(settings: RunSettings, num_features: int, num_outputs: int, hidden_given: bool = False, *,
                image_shape: tuple[int, ...] | None = None, data_name: str = "the data") -> MLP | ConvNet:
    """The network the settings name, for the data's features (a ConvNet: its images, ``image_shape``) and the
    loss's outputs, checked to fit in memory (and a ConvNet's layers to fit the images)."""
    model = settings.model
    if model.is_convnet:
        if image_shape is None:
            raise ValueError(f"--model {model.model} takes images; {data_name} is rows of {num_features} features "
                             "with no image shape: use --model mlp or linear")
        try:
            return ConvNet(model.conv_layers(), image_shape, num_outputs, seed=settings.training.seed,
                           dtype=model.dtype)
        except ValueError as error:
            text = str(error)  # "layer 5 conv(4,5): ..." in the terms of the flag that named the layers
            flag = "--layers" if model.model == "convnet" else f"--model {model.model}"
            raise ValueError(f"--{text}" if text.startswith("layers:") else f"{flag}: {text}") from None
    hidden = model.hidden_widths(hidden_given)
    try:  # before anything is allocated: a clear line, not NumPy's MemoryError
        check_fits_in_memory([num_features, *hidden, num_outputs], np.dtype(model.dtype))
    except ValueError as error:
        raise ValueError(f"--hidden {model.hidden}: {error}" if model.model == "mlp" else str(error)) from None
    return MLP([num_features, *hidden, num_outputs], model.activation, seed=settings.training.seed, dtype=model.dtype)


def loss_and_outputs(settings: RunSettings, data: datasets.Dataset) -> tuple[Loss, int]:
    """The run's loss and the model's outputs: --loss and the outputs it takes, else the data's loss
    (:func:`~softgrad.training.settings.default_loss`, the rule fit follows) for the outputs the data ask
    for (one with --binary)."""
    if settings.training.loss is not None:
        loss = get_loss(settings.training.loss)
        return loss, 1 if loss.targets == "binary" else data.num_outputs
    outputs = 1 if settings.data.binary is not None else data.num_outputs
    return get_loss(default_loss(data, outputs)), outputs


def fit_keywords(training: TrainSettings) -> dict:
    """The settings as :func:`~softgrad.training.fitting.fit` takes them."""
    return dict(loss=training.loss, loss_options=dict(training.loss_options), optimizer=training.optimizer,
                epochs=training.epochs, batch_size=training.batch_size, lr=training.lr,
                lr_schedule=training.lr_schedule, seed=training.seed, chunked_head=training.chunked_head,
                **training.hyperparameters)


def run(args: argparse.Namespace) -> int:
    if args.distributed:
        call = _distributed_call(args)
    else:
        if args.dist_timeout is not None:
            raise ValueError("--dist-timeout is for --distributed runs (launched by torchrun)")
        resolved = resolve_settings(args)
        resume_from, restarted = resolved.resume_from, resolved.restarted
        out = Path(args.out) if args.out else (resume_from.parent if resume_from else restarted or
                                               default_out(resolved.settings))
        pick_free = not (args.out or resume_from or restarted)  # the default folder: another name if it is taken
        call = Call(resolved, out, pick_free, resume=args.resume, json=args.json, quiet=args.quiet,
                    tensorboard=args.tensorboard)
    out = call.out
    try:
        return _claimed_run(call) if call.communicator is None else _rank_run(call)
    except KeyboardInterrupt:
        if not call.writes:
            return 130
        if (out / "checkpoint.npz").is_file():
            print(f"{PROG}: interrupted; the last finished epoch is in {out / 'checkpoint.npz'} "
                  f"(continue with --resume {out})", file=sys.stderr)
        elif (out / "run.json").is_file():
            print(f"{PROG}: interrupted before the first epoch finished; nothing was saved to resume (--resume "
                  f"{out} starts the run again from the beginning)", file=sys.stderr)
        else:
            print(f"{PROG}: interrupted before the first epoch finished; nothing was saved to resume",
                  file=sys.stderr)
        return 130


def _distributed_call(args: argparse.Namespace) -> Call:
    """This rank's call of a ``--distributed`` run: torchrun's environment checked (before torch is imported),
    the communicator made, and the settings resolved on rank 0 and shared, so that every rank trains the same
    run. A run in ``--out`` already (a checkpoint, or the run.json of a run that stopped before its first
    epoch ended) is continued: that is how a round torchrun restarts picks up where the last one stopped."""
    check_launch(args.out, args.dist_timeout)
    communicator = make_communicator(run_backend(args.backend, args.out), args.dist_timeout)

    def resolve() -> tuple[Resolved, str | None]:
        out = Path(args.out)
        restart = (out / "checkpoint.npz").is_file() or (out / "run.json").is_file()
        resume = str(out) if restart else args.resume
        return resolve_settings(argparse.Namespace(**{**vars(args), "resume": resume})), resume

    resolved, resume = on_rank_zero(communicator, resolve)
    return Call(resolved, Path(args.out), False, resume=resume, json=args.json, quiet=args.quiet,
                tensorboard=args.tensorboard, communicator=communicator, gate=StartGate(communicator), args=args)


def _rank_run(call: Call) -> int:
    """One rank's part: rank 0 claims the run folder and writes in it; the others train alongside. A rank
    that stops before training tells the others at the start gate, so that none waits for the timeout."""
    assert call.gate is not None and call.communicator is not None and call.args is not None
    try:
        if not call.writes:
            _check_same_flags(call.communicator.rank, checked_flags(call.args), call.resolved.given)
        status = _claimed_run(call) if call.writes else _run(call)
    except Exception:
        call.gate.fail()
        raise  # the process group goes with the process: closing it after a failure may wait on the dead
    close = getattr(call.communicator, "close", None)
    if close is not None:
        close()
    return status


def _check_same_flags(rank: int, mine: dict, rank_zero: dict) -> None:
    """Every rank trains rank 0's settings: a rank started with other flags is refused (at the start gate, so
    every rank stops), naming them."""
    differ = sorted(key for key in {*mine, *rank_zero} if mine.get(key) != rank_zero.get(key))
    if differ:
        shown = "; ".join(f"--{k.replace('_', '-')} {_shown(mine.get(k))} here, {_shown(rank_zero.get(k))} on rank 0"
                          for k in differ)
        raise ValueError(f"rank {rank} was started with other flags than rank 0 ({shown}): start every rank with "
                         "the same command line")


def _shown(value) -> str:
    return "not given" if value is None else str(value)


def check_arguments(call: Call) -> None:
    """Everything that can be checked before the data is read and before anything is written."""
    check_settings(call.settings, "hidden" in call.resolved.given, "activation" in call.resolved.given)
    check_run_targets(call.out, call.json, continues=call.continues_run(), pick_free=call.pick_free)
    if call.tensorboard:
        _tensorboard(call.tensorboard)  # tensorboardX installed and the folder writable, before any work


def _tensorboard(logdir: str) -> TensorBoardCallback:
    """--tensorboard's callback; a missing tensorboardX is bad input (one line saying what to install)."""
    try:
        return TensorBoardCallback(logdir)
    except ImportError as error:
        raise ValueError(f"--tensorboard: {error}") from None


def _claimed_run(call: Call) -> int:
    """The run with its folder claimed first: made (a clear error where it cannot be) and locked, so a
    second run into it is refused; a folder this run made and wrote nothing in is removed again. With
    ``pick_free`` (the default folder) a folder another run took meanwhile is passed over for the next name."""
    check_arguments(call)  # before the data is read or anything written
    for _ in range(100):
        try:
            with claim_folder(call.out, "--out"):  # a refused run's folder, empty, goes with the claim
                if not call.continues_run():  # again, now that no other run can write there
                    if call.pick_free and any(os.path.lexists(call.out / name) for name in RUN_FILES):
                        raise FolderBusyError(f"{call.out} was taken by another run")
                    check_new_run_folder(call.out)
                return _run(call)
        except FolderBusyError:
            if not call.pick_free:
                raise
            call = replace(call, out=default_out(call.settings))  # two runs started in the same second: the next name
    raise FolderBusyError(f"no free run folder beside {call.out}: give one with --out")


def _run(call: Call) -> int:
    say = (lambda _: None) if call.quiet or not call.writes else print
    settings, out = call.settings, call.out
    data = _load(settings, call.resolved.resume_from if call.writes else None)  # rank 0 holds the checkpoint
    model, settings = _checked_model(call, data)
    if settings.data.data is not None:  # run.json records what was inferred, so a resume reads the same data
        options = data.recipe["options"]
        settings = replace(settings, data=replace(settings.data, task=options["task"],
                                                  test_fraction=options["test_fraction"]))
    say(f"data: {data.source}: {len(data.y_train):,} train / {len(data.y_test):,} test")
    training = settings.training
    model.to(resolve_backend(settings.backend, network_of(model), min(training.batch_size, len(data.y_train)),
                             settings.model.dtype, log=say))  # with --distributed never auto: named, the same
    say(f"model: {model}; run folder: {out}")
    settings = replace(settings, backend=model.be.name)  # the backend that runs, never "auto"
    if call.gate is not None:  # before rank 0 writes: a run stopped here leaves no file
        call.gate.ready()
    if call.writes:
        atomic_write_text(out / "run.json", json.dumps(settings.to_record(), indent=2))
    history = _fit(call, model, data, training, say)
    if call.writes:
        _write_results(call, model, data, settings.training.loss_definition, history)
        written = [name for name in RUN_FILES if (out / name).is_file()]
        say(f"wrote {out}/: {', '.join(written)}")
    return 0


def _fit(call: Call, model: MLP | ConvNet, data: datasets.Dataset, training: TrainSettings, say) -> list[dict]:
    """fit with the run's checkpoint, --tensorboard's callback (on the writing rank) and, with --distributed,
    this rank's communicator (the SOFTGRAD_FAULT test hook armed with the steps of an epoch)."""
    callbacks: list = [_tensorboard(call.tensorboard)] if call.tensorboard and call.writes else []
    distributed: dict = {}
    if call.communicator is not None:
        distributed["communicator"] = call.communicator
        if isinstance(call.communicator, FaultyCommunicator) and call.resolved.resume_from is None:
            call.communicator.arm(math.ceil(len(data.y_train) / training.batch_size))
    try:
        return fit(model, data, **fit_keywords(training), checkpoint_path=call.out / "checkpoint.npz",
                   resume=call.resolved.resume_from, progress=False if call.quiet or not call.writes else None,
                   log=say, callbacks=callbacks, **distributed)
    finally:
        for callback in callbacks:
            if hasattr(callback, "close"):
                callback.close()


def _load(settings: RunSettings, resume_from: Path | None = None) -> datasets.Dataset:
    data = settings.data
    if data.data is not None:  # your own file; a resumed run's must be the file it was trained on
        digest = _recorded_digest(resume_from) if resume_from is not None else None
        return datasets.load_file(data.data, data.target, task=data.task, test_fraction=data.test_fraction,
                                  sha256=digest)
    options = {"binary": data.binary} if data.binary is not None else {}
    return datasets.load(data.dataset, root=data.root, download=bool(data.download), **options)


def _recorded_digest(checkpoint_path: Path) -> str | None:
    """The sha256 of the file a checkpoint's model was trained on, as its data record holds it."""
    record = getattr(checkpoint.load(checkpoint_path, "numpy")[0], "trained_on", None)
    recipe = None if record is None else record.recipe
    if recipe is None or recipe.get("name") != datasets.FILE_RECIPE:
        return None
    return (recipe.get("options") or {}).get("sha256")


def _checked_model(call: Call, data: datasets.Dataset) -> tuple[MLP | ConvNet, RunSettings]:
    """The model, built for the data and the loss, with the settings naming the loss; checked before the run
    folder is written in: the loss suits the data, its options are good, a resumed checkpoint continues it."""
    settings = call.settings
    loss, outputs = loss_and_outputs(settings, data)
    settings = replace(settings, training=replace(settings.training, loss=loss.name))
    model = build_model(settings, data.num_features, outputs, "hidden" in call.resolved.given,
                        image_shape=data.image_shape, data_name=data.name)
    check_data(data, model, loss)
    loss_options = dict(settings.training.loss_options)
    check_loss_options(model, data, loss, loss_options,
                       label="--loss-option " + " ".join(f"{k}={v!r}" for k, v in loss_options.items()))
    resume_from, epochs = call.resolved.resume_from, settings.training.epochs
    if resume_from is not None and call.writes:  # the checkpoint continues this model and optimizer (before
        # run.json changes; on rank 0, which holds it)
        trained = len(check_resume(model, resume_from, settings.training.optimizer)[2])
        if epochs < trained:
            raise ValueError(f"--epochs {epochs}: the run in {resume_from.parent} has trained {trained} "
                             f"epochs already (--epochs counts them all: give {trained + 1} or more to train on)")
    return model, settings


def _write_results(call: Call, model: MLP | ConvNet, data: datasets.Dataset, loss: Loss,
                   history: list[dict]) -> None:
    """history.json (and --json's copy), the curves, and the test set's figures and plots."""
    out = call.out
    history_text = json.dumps(history, indent=2)
    atomic_write_text(out / "history.json", history_text)
    if call.json:
        atomic_write_text(call.json, history_text)
    if history:
        reports.plot_curves(history, out / "curves.png", title=f"{data.name} {model}")
    if len(data.y_test) == 0:  # --test-fraction 0: nothing held out to report on
        print(f"no test split: no test figures; run folder: {out}" if call.quiet else "no test split: no test figures")
    elif loss.targets == "value":
        report_regression(model, data, loss, out, quiet=call.quiet)
    else:
        report_classification(model, data, loss, out, quiet=call.quiet)


def report_classification(model: MLP | ConvNet, data: datasets.Dataset, loss: Loss, out: Path,
                          quiet: bool) -> None:
    """The test accuracy and the accuracy of each class; the test images with their predictions."""
    predictions = predict(model, data.x_test, loss=loss)
    cm = confusion_matrix(data.y_test, predictions, data.num_classes)
    accuracy = f"test accuracy {np.mean(predictions == data.y_test):.2%}"
    if quiet:  # one line: the result and where the run is
        print(f"{accuracy}; run folder: {out}")
    else:
        print(f"{accuracy}; per class:")
        for name, value, total in zip(data.classes, per_class_accuracy(cm), cm.sum(axis=1)):
            print(f"  {name:>12}  {'n/a' if np.isnan(value) else f'{value:.2%}'}  ({total} samples)")
    if data.image_shape is not None:
        reports.plot_predictions(data.x_test, data.y_test, predictions, data.classes, image_shape=data.image_shape,
                                 mean=data.mean, std=data.std, path=out / "predictions.png")


def report_regression(model: MLP | ConvNet, data: datasets.Dataset, loss: Loss, out: Path,
                      quiet: bool) -> None:
    """RMSE, MAE and R² on the test set, in the data's units; fit.png: the fitted line over the points for
    one feature and one target (as the tutorials draw it), else predicted against true values."""
    def original(y):
        return np.asarray(y, np.float64) * np.asarray(data.target_std) + np.asarray(data.target_mean)

    predictions = predict(model, data.x_test, loss=loss, target_mean=data.target_mean, target_std=data.target_std)
    figures = regression_metrics(original(data.y_test), predictions)
    line = f"test RMSE {figures['rmse']:.4g}  MAE {figures['mae']:.4g}  R² {figures['r2']:.4f}"
    print(f"{line}; run folder: {out}" if quiet else line)
    reports.plot_regression(data, lambda x: predict(model, x, loss=loss, target_mean=data.target_mean,
                                                    target_std=data.target_std), out / "fit.png",
                            title=f"{data.name}: {model}")


def main(argv: list[str] | None = None) -> int:
    """``softgrad train``'s exit status: 0; 2 for bad input, 1 for a run that diverged or a bug, each with one
    line (:func:`softgrad.commands.cli.run_main` maps them); 130 when interrupted."""
    return run_main(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (TrainingDivergedError, DistributedError) as error:  # one line; 1, so torchrun restarts a round
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
