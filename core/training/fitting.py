"""The training loop: :func:`fit`, one loop for every backend, loss and optimizer, epoch after epoch.

The data goes to the backend once. Each epoch draws a permutation from a
NumPy generator seeded with ``(seed, epoch)``, gathers the data in that order
on the device once, and takes batches as contiguous slices: every backend
sees the same batches in the same order, and a resumed run repeats exactly
what an uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from softgrad.numerics.files import claim_folder, remove_stale_temporaries
from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.optim import Optimizer, get_optimizer
from softgrad.numerics.protocol import Backend
from softgrad.training import checkpoint
from softgrad.training.communicator import Communicator, DistributedError, shard
from softgrad.training.data_parallel import DataParallelStep, start_on_ranks
from softgrad.training.inference import batches, count_correct, evaluate
from softgrad.training.loss_options import host_options
from softgrad.training.metrics_stream import MetricsStream
from softgrad.training.models import MLP
from softgrad.training.runs import Run, start_run
from softgrad.training.settings import TrainSettings, default_loss
from softgrad.training.step import backend_scope, train_step


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class StopTraining(Exception):  # noqa: N818 - a signal, not an error: the run ends well
    """Raised by a :func:`fit` callback: training stops after the epoch that called it."""


#: an epoch-end callback: it receives the epoch's history record; ``True`` (or StopTraining) stops training
Callback = Callable[[dict[str, Any]], Any]


def fit(model: MLP, data, backend: Backend | str | None = None, *, loss: Loss | str | None = None,
        optimizer: Optimizer | str | None = None, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, lr_schedule: str | None = None, seed: int | None = None,
        loss_options: Mapping[str, Any] | None = None, checkpoint_path: str | Path | None = None,
        resume: str | Path | None = None, progress: bool | None = None,
        log: Callable[[str], None] | None = print, chunked_head: bool | None = None,
        callbacks: Sequence[Callback] = (), communicator: Communicator | None = None,
        **hyperparameters: Any) -> list[dict]:
    """Train ``model`` on ``data`` (a :class:`datasets.Dataset`); returns the history.

    ``backend``: a name, a Backend, ``"auto"`` (the fastest available for this
    network and batch size, from a short cached probe; see
    :mod:`softgrad.training.auto`), or ``None`` to stay on the model's backend.
    ``loss`` and ``optimizer``: names from :data:`softgrad.LOSSES` and
    :data:`softgrad.OPTIMIZERS` or definitions (default: the data's loss,
    :func:`~softgrad.training.settings.default_loss`, and SGD). The optimizer's hyperparameters are keyword
    arguments (``momentum=0.9``); ``loss_options`` are the loss's (``{"label_smoothing": 0.1}``).

    Everything left as ``None`` takes the :class:`TrainSettings` defaults
    (10 epochs, batch 64, lr 0.05 with a cosine schedule, SGD with Nesterov
    momentum 0.9 and weight decay 2e-3, seed 0), or, when resuming, the
    checkpoint's.

    The history has one record per epoch: ``epoch``, ``train_loss``,
    ``train_accuracy``, ``test_loss``, ``test_accuracy`` (accuracies for class
    targets only), ``seconds`` (training time, device synchronised),
    ``samples_per_s`` and ``lr`` (at the epoch's end). With ``checkpoint_path``
    the model, optimizer state and history are saved atomically after every
    epoch; ``resume`` continues from such a checkpoint up to ``epochs``,
    exactly as the uninterrupted run would have. ``progress`` shows a bar per
    epoch (default: when stderr is a terminal). ``chunked_head=True`` fuses the
    last layer with cross-entropy (``be.linear_cross_entropy_and_grad``): the
    batch's logits are never held, for a large number of classes; the loss and
    gradients are the dense path's, and ``train_accuracy`` is None. A NaN or infinite loss raises
    :class:`TrainingDivergedError` and leaves the last good checkpoint.

    With ``checkpoint_path`` each epoch's record is also appended, as one JSON line flushed to disk at once,
    to ``metrics.jsonl`` beside the checkpoint, so a long run can be watched while it trains (a resumed run
    continues the file, one line per epoch). ``callbacks``: callables called with each epoch's record (a
    copy) once the epoch is saved and logged; one that returns ``True``, or raises :class:`StopTraining`,
    stops training after that epoch (the checkpoint and the history then end there). Data without a test
    split (``x_test`` and ``y_test`` None or empty) trains; its records' test figures are None.

    ``communicator``: the ranks of a data-parallel run (:mod:`softgrad.training.communicator`; None, or
    one of a single rank, trains in this process alone, as ever). Every rank calls ``fit`` with the same
    arguments and the whole data; ``batch_size`` is the global batch, of which each rank takes its share,
    and the result is one process's on the global batch, to rounding (see docs/distributed.md). Rank 0
    reads ``resume`` and writes the checkpoint, metrics, log lines and progress bar and runs the callbacks;
    every rank returns the same history.
    """
    given = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                                   seed=seed).items() if v is not None}
    given.update(_named(model, data, loss=loss, optimizer=optimizer, loss_options=loss_options, resume=resume))
    if chunked_head is not None:
        given["chunked_head"] = chunked_head
    given["hyperparameters"] = {k: v for k, v in hyperparameters.items() if v is not None}
    if resume is None:  # the settings as the optimizer checks them, before any work (a resumed run's: in start_run)
        TrainSettings.from_dict(given).check()
    show = sys.stderr.isatty() if progress is None else progress
    callbacks = tuple(callbacks)
    if not all(callable(callback) for callback in callbacks):
        raise TypeError("fit: callbacks must be a list of callables, each taking an epoch's record (a dict)")
    ending = _EpochEnd(log=log, callbacks=callbacks, checkpoint_path=checkpoint_path)
    if communicator is not None and communicator.world_size > 1:
        return _fit_on_ranks(model, data, given, comm=communicator, backend=backend, resume=resume, show=show,
                             ending=ending)
    if checkpoint_path is None:
        return _fit(model, data, start_run(model, data, given, backend=backend, resume=resume, log=log),
                    show=show, ending=ending)
    folder = Path(checkpoint_path).parent
    # the checkpoint's folder is this run's while it trains: a second run there is refused, not interleaved
    with claim_folder(folder, "the checkpoint's folder"):
        remove_stale_temporaries(folder)  # what a killed run's write left behind
        run = start_run(model, data, given, backend=backend, resume=resume, log=log)
        with MetricsStream.start(folder, run.history) as ending.metrics:
            return _fit(model, data, run, show=show, ending=ending)


def _named(model: MLP, data, *, loss, optimizer, loss_options, resume) -> dict[str, Any]:
    """The loss (by name; the data's when none is given to a new run), the optimizer and the loss's options
    (on the host) as settings hold them, each checked as it comes."""
    named: dict[str, Any] = {}
    if loss is not None:
        named["loss"] = loss.name if isinstance(loss, Loss) else loss
        get_loss(loss)
    elif resume is None:  # a resumed run keeps its checkpoint's loss
        named["loss"] = default_loss(data, model.num_outputs)
    if optimizer is not None:
        named["optimizer"] = optimizer.name if isinstance(optimizer, Optimizer) else optimizer
        get_optimizer(optimizer)
    if loss_options is not None:
        named["loss_options"] = host_options(model.be, loss_options)
    return named


@dataclass(kw_only=True)
class _EpochEnd:
    """What follows each epoch's training: the checkpoint, the metrics line, the log line, the callbacks."""

    log: Callable[[str], None] | None
    callbacks: tuple[Callback, ...]
    checkpoint_path: str | Path | None
    metrics: MetricsStream | None = None

    def __call__(self, model: MLP, data, run: Run, record: dict[str, Any]) -> bool:
        """Save and report the epoch ``record`` (already in the history); whether a callback stops the run."""
        if self.checkpoint_path is not None:
            checkpoint.save(self.checkpoint_path, model, run.state, run.history, run.saved_settings,
                            optimizer=run.settings.optimizer, data=data)  # what it trains on: evaluate reads it
        if self.metrics is not None:
            self.metrics.append(record)
        if self.log is not None:
            self.log(_epoch_line(record, run.settings.epochs))
        stop = False
        for callback in self.callbacks:
            try:
                stop = callback(dict(record)) is True or stop
            except StopTraining:
                stop = True
                break
        if stop and self.log is not None:
            self.log(f"stopped by a callback after epoch {record['epoch']}")
        return stop


def _fit(model: MLP, data, run: Run, *, show: bool, ending: _EpochEnd) -> list[dict]:
    """The run's epochs, each trained, evaluated on the test set (where there is one), saved and logged, until
    the last or until a callback stops the run; returns the history."""
    settings = run.settings
    for epoch in range(len(run.history) + 1, settings.epochs + 1):
        with backend_scope(run.be):
            record = _train_epoch(model, run, epoch, show, ending.checkpoint_path)
        record = _evaluated(model, data, run, record)
        run.history.append(record)
        if ending(model, data, run, record):
            break
    return run.history


def _evaluated(model: MLP, data, run: Run, record: dict[str, Any]) -> dict[str, Any]:
    """The epoch's record with the test set's figures (None without a test set)."""
    settings, test = run.settings, None
    if run.x_test is not None:
        test = evaluate(model, run.x_test, run.y_test, loss=settings.loss_definition,
                        loss_options=settings.loss_options, target_mean=getattr(data, "target_mean", None),
                        target_std=getattr(data, "target_std", None))
    return _epoch_record(record, test, classes=settings.loss_definition.targets != "value")


# ---- on several ranks (a communicator of world_size > 1) ----------------------------------------------------

def _fit_on_ranks(model: MLP, data, given: dict[str, Any], *, comm: Communicator, backend, resume, show: bool,
                  ending: _EpochEnd) -> list[dict]:
    """``fit`` on this rank of ``comm``: the run started alike on every rank (rank 0 claims the folder, reads
    the checkpoint and broadcasts the start), then the epochs; only rank 0 writes and logs."""
    lead = comm.rank == 0
    if not lead:
        ending = _EpochEnd(log=None, callbacks=(), checkpoint_path=ending.checkpoint_path)
    with contextlib.ExitStack() as stack:
        def lead_start() -> Run:
            path = ending.checkpoint_path
            if path is not None:
                folder = Path(path).parent
                stack.enter_context(claim_folder(folder, "the checkpoint's folder"))
                remove_stale_temporaries(folder)
            run = start_run(model, data, given, backend=backend, resume=resume, log=ending.log)
            if path is not None:
                ending.metrics = stack.enter_context(MetricsStream.start(Path(path).parent, run.history))
            return run

        try:
            run = start_on_ranks(comm, model, data, given, backend=backend, resume=resume, lead_start=lead_start)
        except DistributedError as error:
            raise DistributedError(f"rank {comm.rank}: at the start: {' '.join(str(error).split())}") from None
        return _epochs_on_ranks(model, data, run, comm=comm, show=show and lead, ending=ending)


def _rank_line(comm: Communicator, where: str, error: Exception, resume_from) -> str:
    """The one line a rank stops with: the rank, where training was, the engine's message, the checkpoint."""
    message = " ".join(str(error).split())
    last = (f" Resume from the last checkpoint, {resume_from}." if resume_from is not None
            else " There is no checkpoint to resume from yet.")
    return f"rank {comm.rank}: training stopped {where}: {message}.{last}"


def _epochs_on_ranks(model: MLP, data, run: Run, *, comm: Communicator, show: bool, ending: _EpochEnd):
    """The epochs on every rank; rank 0 evaluates the test set, writes and runs the callbacks, then
    broadcasts the epoch's record and whether to stop, so every rank keeps the same history."""
    for epoch in range(len(run.history) + 1, run.settings.epochs + 1):
        with backend_scope(run.be):
            record = _train_epoch_on_ranks(model, run, epoch, show, ending.checkpoint_path, comm)
        last = ending.checkpoint_path if ending.checkpoint_path is not None and epoch > 1 else None
        try:
            outcome = _epoch_end_on_ranks(model, data, run, record, comm=comm, ending=ending)
            if "error" not in outcome:
                comm.barrier()  # rank 0's files of the epoch are written
        except DistributedError as error:
            raise DistributedError(_rank_line(comm, f"after epoch {epoch}", error, last)) from None
        if "error" in outcome:  # rank 0 raised it itself
            raise DistributedError(_rank_line(comm, f"after epoch {epoch}", f"rank 0 failed: {outcome['error']}",
                                              last))
        if comm.rank != 0:
            run.history.append(outcome["record"])
        if outcome["stop"]:
            break
    return run.history


def _epoch_end_on_ranks(model: MLP, data, run: Run, record: dict[str, Any], *, comm: Communicator,
                        ending: _EpochEnd) -> dict[str, Any]:
    """Rank 0's record of the epoch and its callbacks' verdict, on every rank (rank 0's error, if any)."""
    if comm.rank != 0:
        return comm.broadcast(None)
    try:
        record = _evaluated(model, data, run, record)
        run.history.append(record)
        stop = ending(model, data, run, record)
    except Exception as error:  # the other ranks stop at once, told why, instead of at the timeout
        comm.broadcast({"error": f"{type(error).__name__}: {error}"})
        raise
    return comm.broadcast({"record": record, "stop": stop})


def _epoch_record(record: dict[str, Any], test: dict[str, float] | None, *, classes: bool) -> dict[str, Any]:
    """The epoch's history record: its training figures and the test set's (None without a test set), in
    the order the history keeps."""
    figures = (("train_loss", "train_accuracy", "test_loss", "test_accuracy") if classes
               else ("train_loss", "test_loss", "test_rmse", "test_mae", "test_r2"))
    record = {**record, **{f"test_{key}": value for key, value in (test or {}).items()}}
    return {key: record.get(key) for key in ("epoch", *figures, "seconds", "samples_per_s", "lr")}


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    """The line an epoch logs: its loss, the accuracies (or the test loss, RMSE and R²), the speed."""
    train = "-" if record.get("train_accuracy") is None else f"{record['train_accuracy']:.2%}"
    if "train_accuracy" in record:
        test = "" if record["test_accuracy"] is None else f"  test {record['test_accuracy']:.2%}"
        accuracy = f"train {train}{test}  "
    elif record["test_loss"] is None:  # no test set
        accuracy = ""
    else:
        accuracy = (f"test loss {record['test_loss']:.4f}  rmse {record['test_rmse']:.4g}  "
                    f"r2 {record['test_r2']:.3f}  ")
    return (f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}  {accuracy}"
            f"{record['samples_per_s']:,.0f} samples/s  ({record['seconds']:.1f} s)")


def _progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("mean loss {task.fields[loss]}"), TimeRemainingColumn(),
                    transient=True, disable=not enabled)


def _train_epoch(model: MLP, run: Run, epoch: int, show: bool, checkpoint_path) -> dict[str, Any]:
    """One epoch over the training set; returns its record without the test figures."""
    settings, be = run.settings, run.be
    n = run.x_train.shape[0]
    steps_per_epoch = math.ceil(n / settings.batch_size)
    loss_definition = settings.loss_definition
    classes = loss_definition.targets != "value" and not settings.chunked_head  # a fused head has no logits
    order = be.asarray(np.random.default_rng([settings.seed, epoch]).permutation(n))
    be.synchronize()
    start = time.perf_counter()
    xs, ys = be.take(run.x_train, order, axis=0), be.take(run.y_train, order, axis=0)
    total_loss = correct = 0
    # overflow shows up as a non-finite loss, which stops training with a clear error below;
    # NumPy's own overflow warnings would only repeat it as noise
    with _progress_bar(show) as bar, np.errstate(over="ignore", invalid="ignore"):
        task = bar.add_task(f"epoch {epoch}/{settings.epochs}", total=steps_per_epoch, loss="-")
        for step, s in enumerate(batches(n, settings.batch_size), start=1):
            step_lr = settings.lr_at(epoch, step - 1, steps_per_epoch)
            try:
                loss, logits, run.state = train_step(model, xs[s, ...], ys[s, ...], run.state, step_lr, settings)
            except ValueError as error:
                where = f" The last good checkpoint is {checkpoint_path}." if checkpoint_path and epoch > 1 else ""
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, step {step}: {error}. {_divergence_hint(settings, step_lr)}"
                    f"{where}") from None
            total_loss = total_loss + loss * (s.stop - s.start)
            if classes:
                correct = correct + count_correct(be, loss_definition, logits, ys[s, ...])
            if show and (step % 20 == 0 or step == steps_per_epoch):
                # the mean over the epoch so far, not this batch's: at the epoch's end it is the epoch line's
                bar.update(task, completed=step, loss=f"{float(be.to_numpy(total_loss)) / s.stop:.4f}")
    train_loss = float(be.to_numpy(total_loss)) / n
    train_accuracy = int(be.to_numpy(correct)) / n if classes else None
    be.synchronize()
    seconds = time.perf_counter() - start
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy, "seconds": seconds,
            "samples_per_s": n / seconds, "lr": settings.lr_at(epoch, steps_per_epoch, steps_per_epoch)}


def _train_epoch_on_ranks(model: MLP, run: Run, epoch: int, show: bool, checkpoint_path,
                          comm: Communicator) -> dict[str, Any]:
    """One epoch on this rank's share of every global batch of the (seed, epoch) permutation; returns the
    record of the whole epoch (the same on every rank, but for the time) without the test figures."""
    settings, be = run.settings, run.be
    n = run.x_train.shape[0]
    global_batches = list(batches(n, settings.batch_size))
    shares = [shard(s.start, s.stop, comm.rank, comm.world_size) for s in global_batches]
    order = np.random.default_rng([settings.seed, epoch]).permutation(n)
    mine = np.concatenate([order[share] for share in shares])  # this rank's rows, batch after batch
    stepper = DataParallelStep(model, settings, comm)
    be.synchronize()
    start = time.perf_counter()
    xs = ys = None
    if len(mine):  # a rank may hold no row of any batch (fewer samples than ranks)
        local = be.asarray(mine)
        xs, ys = be.take(run.x_train, local, axis=0), be.take(run.y_train, local, axis=0)
    total_loss = correct = 0
    offset = 0
    with _progress_bar(show) as bar, np.errstate(over="ignore", invalid="ignore"):
        task = bar.add_task(f"epoch {epoch}/{settings.epochs}", total=len(global_batches), loss="-")
        for step, (s, share) in enumerate(zip(global_batches, shares), start=1):
            rows = share.stop - share.start
            x = xs[offset:offset + rows, ...] if rows else None
            y = ys[offset:offset + rows, ...] if rows else None
            offset += rows
            step_lr = settings.lr_at(epoch, step - 1, len(global_batches))
            try:
                totals, run.state = stepper(x, y, run.state, step_lr)
            except ValueError as error:
                where = f" The last good checkpoint is {checkpoint_path}." if checkpoint_path and epoch > 1 else ""
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, step {step}: {error}. {_divergence_hint(settings, step_lr)}"
                    f"{where}") from None
            except DistributedError as error:
                last = checkpoint_path if checkpoint_path is not None and epoch > 1 else None
                raise DistributedError(_rank_line(comm, f"at epoch {epoch}, step {step}", error, last)) from None
            total_loss = total_loss + totals.loss * (s.stop - s.start)
            correct = correct + totals.correct
            if show and (step % 20 == 0 or step == len(global_batches)):
                bar.update(task, completed=step, loss=f"{float(total_loss) / s.stop:.4f}")
    be.synchronize()
    seconds = time.perf_counter() - start
    return {"epoch": epoch, "train_loss": float(total_loss) / n,
            "train_accuracy": int(round(float(correct))) / n if stepper.classes else None, "seconds": seconds,
            "samples_per_s": n / seconds, "lr": settings.lr_at(epoch, len(global_batches), len(global_batches))}


def _divergence_hint(settings: TrainSettings, step_lr: float) -> str:
    """What to change after a divergence: a momentum >= 1 (each step larger than the last, which torch
    allows) where there is one, else the learning rate; with every hyperparameter the run used."""
    values = settings.resolved_hyperparameters
    used = ", ".join(f"{k} {v}" for k, v in {"lr": f"{step_lr:g}", **values}.items())
    momentum = values.get("momentum")
    if isinstance(momentum, (int, float)) and momentum >= 1:
        return (f"momentum {momentum:g} >= 1 makes every step larger than the last: use a momentum below 1 "
                f"(0.9 is usual). The {settings.optimizer} settings: {used}.")
    return f"Lower the learning rate (now {step_lr:g}; the {settings.optimizer} settings: {used})."


__all__ = ["Callback", "StopTraining", "TrainingDivergedError", "fit"]
