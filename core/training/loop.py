"""The training loop: one loop for every backend, loss and optimizer, plus evaluate and predict.

The data goes to the backend once. Each epoch draws a permutation from a
NumPy generator seeded with ``(seed, epoch)``, gathers the data in that order
on the device once, and takes batches as contiguous slices: every backend
sees the same batches in the same order, and a resumed run repeats exactly
what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from softgrad.numerics.files import claim_folder, remove_stale_temporaries
from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.optim import Optimizer, get_optimizer
from softgrad.numerics.protocol import Backend
from softgrad.training import checkpoint
from softgrad.training.auto import resolve_backend
from softgrad.training.metrics import regression_metrics
from softgrad.training.models import MLP
from softgrad.training.step import TRAINING_DEFAULTS, TrainSettings, backend_scope, train_step


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def _batches(n: int, batch_size: int):
    # rows x[s, ...]: the array API standard indexes every axis (x[s] alone is a NumPy convenience)
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


REGRESSION_HINT = "mse (or l1, smooth_l1, huber)"


def check_data(data, model: MLP, loss: Loss | str = "cross_entropy") -> None:
    """Once, before training: the data fit the model and the loss, labels are in range, values are finite.

    After this, an error from the loss can only mean that training diverged.
    """
    loss = get_loss(loss)
    task, outputs = getattr(data, "task", "classification"), model.widths[-1]
    if loss.targets == "value":
        if task != "regression":
            raise ValueError(f"{loss.name} is a regression loss, but {data.name} has class labels; use cross_entropy "
                             "(or bce_with_logits for a binary task)")
        if data.num_features != model.widths[0] or data.num_outputs != outputs:
            raise ValueError(f"the data has {data.num_features} features and {data.num_outputs} targets; "
                             f"the model expects {model.widths[0]} and {outputs}")
    elif task == "regression":
        raise ValueError(f"{loss.name} is a classification loss, but {data.name} has real-valued targets; use "
                         f"{REGRESSION_HINT}")
    elif loss.targets == "binary":
        if data.num_classes != 2 or outputs != 1 or data.num_features != model.widths[0]:
            raise ValueError(f"{loss.name} trains one output on two classes: {data.name} has {data.num_classes} "
                             f"classes and {data.num_features} features, the model {model.widths[0]} inputs and "
                             f"{outputs} outputs (pick the positive classes with datasets.binary, --binary on "
                             "the command line)")
    elif data.num_features != model.widths[0] or data.num_classes > model.num_classes:
        raise ValueError(f"the data has {data.num_features} features and {data.num_classes} classes; "
                         f"the model expects {model.widths[0]} and {model.num_classes}")
    for split, x, y in (("training", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"the {split} set has {len(x)} samples and {len(y)} labels; it needs as many "
                             "of each, at least one")
        if loss.targets != "value":
            classes = 2 if loss.targets == "binary" else model.num_classes
            bad = np.flatnonzero((np.asarray(y) < 0) | (np.asarray(y) >= classes))
            if len(bad):
                raise ValueError(f"{split} label {int(y[bad[0]])} (sample {int(bad[0])}) is out of range for "
                                 f"{classes} classes")
        else:
            rows = np.flatnonzero(~np.isfinite(np.asarray(y, dtype=np.float64)).reshape(len(y), -1).all(axis=1))
            if len(rows):
                raise ValueError(f"{split} sample {int(rows[0])} has a NaN or inf target")
        rows = np.flatnonzero(~np.isfinite(np.asarray(x)).reshape(len(x), -1).all(axis=1))
        if len(rows):
            raise ValueError(f"{split} sample {int(rows[0])} holds NaN or inf features")


def targets_on(be: Backend, y, loss: Loss, dtype) -> Any:
    """The targets as ``loss`` takes them on ``be``: labels as they are; for binary cross-entropy 0/1 as
    probabilities, one column; for regression real values ``(N, k)``, in the model's dtype."""
    if loss.targets == "class":
        return be.asarray(y)
    host = np.asarray(y if isinstance(y, np.ndarray) else be.to_numpy(be.asarray(y)), dtype=dtype)
    return be.asarray(np.ascontiguousarray(host.reshape(len(host), -1)))


def _correct(be: Backend, loss: Loss, logits, y):
    """How many predictions are right (a backend scalar): argmax for classes, probability > 0.5 for binary."""
    if loss.targets == "class":
        return be.sum(be.argmax(logits, axis=1) == y)
    return be.sum((logits > 0) == (y > 0.5))


def as_rows(model: MLP, x, what: str = "predict"):
    """``x`` as an ``(N, features)`` array of the model's backend and dtype.

    Images ``(N, 28, 28)`` are flattened and a single sample ``(784,)`` or ``(28, 28)`` becomes one row,
    where the sizes match the model's input width; anything else is a ValueError naming the shapes.
    """
    be, width = model.be, model.widths[0]
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) >= 2 and math.prod(shape[1:]) == width:
        shape = (shape[0], width)  # N samples, images flattened
    elif len(shape) >= 1 and math.prod(shape) == width:
        shape = (1, width)  # one sample: a (784,) vector or a (28, 28) image
    else:
        raise ValueError(f"{what}: the model takes rows of {width} features, (N, {width}); got an array of shape "
                         f"{tuple(shape)}")
    if not hasattr(x, "shape") or isinstance(x, np.ndarray):
        x = np.ascontiguousarray(np.asarray(x)).reshape(shape)
        return be.asarray(x, dtype=model.dtype)
    x = be.asarray(x, dtype=model.dtype)
    return be.xp.reshape(x, shape) if tuple(x.shape) != shape else x


def _task_of(model: MLP, loss, target_mean, target_std, what: str):
    """The loss (given, else the one the model was trained with, else cross-entropy) and the target scale
    (given, else the model's): what predict and evaluate answer in terms of."""
    loss = get_loss(loss if loss is not None else (getattr(model, "loss", None) or "cross_entropy"))
    if loss.targets == "class" and model.widths[-1] == 1:
        raise ValueError(f"{what}: a model with one output is no softmax classifier; say what it was trained "
                         "with: loss='bce_with_logits' (binary) or a regression loss such as 'mse'")
    if loss.targets == "value":
        target_mean = getattr(model, "target_mean", None) if target_mean is None else target_mean
        target_std = getattr(model, "target_std", None) if target_std is None else target_std
    return loss, target_mean, target_std


def predict(model: MLP, x, batch_size: int = 4096, *, loss: Loss | str | None = None,
            target_mean=None, target_std=None) -> np.ndarray:
    """The model's predictions for ``x`` (NumPy or backend array), as a NumPy array.

    ``x`` is ``(N, features)``, or images whose pixels number the features (``(N, 28, 28)``), or one sample.
    What is predicted follows the loss the model was trained with: the class (int64, ``(N,)``) for
    cross-entropy; 1 where the probability exceeds 0.5, else 0, for binary cross-entropy; the values
    ``(N, k)`` for a regression loss, mapped back to the data's units with ``y * target_std + target_mean``
    (a :class:`datasets.Dataset`'s fields). ``loss`` and the target scale default to what :func:`fit` trained
    the model with (it records them on the model, and checkpoints keep them).
    """
    be = model.be
    loss, target_mean, target_std = _task_of(model, loss, target_mean, target_std, "predict")
    with backend_scope(be):
        return _predict(model, x, batch_size, loss, target_mean, target_std)


def check_finite_rows(model: MLP, x, what: str) -> None:
    """A ValueError naming the first row of ``x`` (rows on the model's backend) that holds NaN or inf: the
    model would answer it with a class (0) or a value that looks like any other."""
    be = model.be
    if bool(be.to_numpy(be.xp.all(be.xp.isfinite(x)))):
        return
    row = int(np.flatnonzero(~np.isfinite(np.asarray(be.to_numpy(x))).all(axis=1))[0])
    beyond = " (or a value beyond float32's range)" if model.dtype == np.float32 else ""
    raise ValueError(f"{what}: sample {row} holds NaN or inf{beyond}; a prediction for it would be meaningless")


def _predict(model: MLP, x, batch_size: int, loss: Loss, target_mean, target_std) -> np.ndarray:
    be = model.be
    with np.errstate(over="ignore"):  # a float64 value beyond float32 becomes inf, which the check names
        x = as_rows(model, x)
    check_finite_rows(model, x, "predict")
    outputs = [be.to_numpy(model.logits(x[s, ...])) if loss.targets != "class"
               else be.to_numpy(be.argmax(model.logits(x[s, ...]), axis=1)) for s in _batches(x.shape[0], batch_size)]
    if loss.targets == "class":
        return np.concatenate(outputs).astype(np.int64) if outputs else np.zeros(0, dtype=np.int64)
    values = np.concatenate(outputs) if outputs else np.zeros((0, model.widths[-1]), dtype=model.dtype)
    if loss.targets == "binary":
        return (values[:, 0] > 0).astype(np.int64)
    return values * np.asarray(target_std if target_std is not None else 1.0, dtype=values.dtype) + np.asarray(
        target_mean if target_mean is not None else 0.0, dtype=values.dtype)


def evaluate(model: MLP, x, y, batch_size: int = 4096, *, loss: Loss | str | None = None,
             loss_options: Mapping[str, Any] | None = None, target_mean=None, target_std=None) -> dict[str, float]:
    """The mean loss (cross-entropy unless told) of ``model`` on ``(x, y)``, and the task's figures.

    Classification (cross-entropy, binary cross-entropy): ``accuracy``. Regression: ``rmse``, ``mae``
    and ``r2`` (the coefficient of determination, averaged over the targets as scikit-learn does), in the
    data's units when ``target_mean`` and ``target_std`` (a Dataset's) are given. ``loss`` and the scale
    default to what :func:`fit` trained the model with.
    """
    loss, target_mean, target_std = _task_of(model, loss, target_mean, target_std, "evaluate")
    with backend_scope(model.be):
        return _evaluate(model, x, y, batch_size, loss, loss_options, target_mean, target_std)


def _evaluate(model: MLP, x, y, batch_size: int, loss: Loss, loss_options, target_mean, target_std) -> dict:
    be = model.be
    with np.errstate(over="ignore"):  # a float64 value beyond float32 becomes inf, which the check names
        x, y = as_rows(model, x, "evaluate"), targets_on(be, y, loss, model.dtype)
    check_finite_rows(model, x, "evaluate")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"evaluate: {x.shape[0]} samples but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("evaluate: no samples to evaluate")
    options = {**(loss_options or {}), "reduction": "sum"}
    total_loss, correct, values = 0.0, 0, []
    for s in _batches(x.shape[0], batch_size):
        logits = model.logits(x[s, ...])
        total_loss += float(be.to_numpy(loss.value_on(be, logits, y[s, ...], **options)))
        if loss.targets == "value":
            values.append(be.to_numpy(logits))
        else:
            correct += int(be.to_numpy(_correct(be, loss, logits, y[s, ...])))
    result = {"loss": total_loss / x.shape[0]}
    if loss.targets == "value":
        mean = np.asarray(target_mean if target_mean is not None else 0.0, dtype=np.float64)
        std = np.asarray(target_std if target_std is not None else 1.0, dtype=np.float64)
        truth = np.asarray(be.to_numpy(y), dtype=np.float64) * std + mean
        result.update(regression_metrics(truth, np.concatenate(values).astype(np.float64) * std + mean))
    else:
        result["accuracy"] = correct / x.shape[0]
    return result


def _progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("mean loss {task.fields[loss]}"), TimeRemainingColumn(),
                    transient=True, disable=not enabled)


@dataclass
class _Run:
    """What an epoch needs: the settings, the backend, the data on it, the optimizer state, the history."""

    settings: TrainSettings
    be: Backend
    state: Any
    history: list[dict]
    saved_settings: dict | None = None  # the settings as checkpoints store them (arrays as lists)
    x_train: Any = None
    y_train: Any = None
    x_test: Any = None
    y_test: Any = None


def _start(model: MLP, data, backend, given: dict[str, Any], resume, log) -> _Run:
    """The run's settings (given, else the checkpoint's, else the defaults), backend, state and data."""
    settings, state, history = TrainSettings.from_dict(given), None, []
    if resume is not None:
        if backend is None:
            backend = model.be  # a resumed run stays on the model's backend
        restored, state, history, saved = check_resume(model, resume, given.get("optimizer"))
        saved_settings = TrainSettings.from_dict(saved)
        merged = {**asdict(saved_settings), **{k: v for k, v in given.items() if k != "hyperparameters"}}
        merged["hyperparameters"] = {**saved_settings.hyperparameters, **given.get("hyperparameters", {})}
        settings = TrainSettings.from_dict(merged)
        if isinstance(settings.epochs, int) and settings.epochs < len(history):
            raise ValueError(f"resume: the checkpoint has trained {len(history)} epochs already; epochs="
                             f"{settings.epochs} is fewer (epochs counts them all: give {len(history) + 1} or more "
                             "to train on)")
        if log is not None and settings.epochs == len(history):
            log(f"resume: the run has finished its {len(history)} epochs; nothing to train (give more epochs, "
                f"{len(history) + 1} or more, to train on)")
        if (log is not None and settings.lr_schedule == "cosine" and len(history) >= saved_settings.epochs
                and settings.epochs > len(history)):
            steps = math.ceil(len(data.y_train) / settings.batch_size)
            log(f"resume: the run finished its cosine schedule at lr 0; stretched over {settings.epochs} epochs it "
                f"continues at lr {settings.lr_at(len(history) + 1, 0, steps):.3g} and decays to 0 again "
                f"(lr_schedule='constant' trains on at lr {settings.lr:g})")
        model.params, model.be = restored.params, restored.be
    settings.check()
    check_data(data, model, settings.loss_definition)
    # the probe's batch is what training will use: never more than the data holds
    backend = resolve_backend(backend, model.widths, min(settings.batch_size, len(data.y_train)),
                              model.dtype.name, log=log)
    if backend is not None:
        source = model.be
        model.to(backend)
        if state is not None:
            state = checkpoint.move_state(state, source, model.be)
    be = model.be
    if state is None:
        state = settings.optimizer_definition.init_on(be, model.params, **settings.resolved_hyperparameters)
    # the settings as saved (host values) and as trained with (array options on the backend)
    saved_settings = settings.to_dict()
    settings = dataclasses.replace(settings, loss_options=options_on(be, settings.loss_options, model.dtype))
    run = _Run(settings, be, state, history)
    run.saved_settings = saved_settings
    # the data goes to the device once, the test set too (evaluated after every epoch)
    loss = settings.loss_definition
    run.x_train, run.y_train = be.asarray(data.x_train, dtype=model.dtype), targets_on(be, data.y_train, loss, model.dtype)
    run.x_test, run.y_test = be.asarray(data.x_test, dtype=model.dtype), targets_on(be, data.y_test, loss, model.dtype)
    check_loss_options(model, data, loss, settings.loss_options)
    # what predict and evaluate need to answer in the task's terms without being told
    model.loss = loss.name
    if loss.targets == "value":
        model.target_mean = tuple(float(m) for m in getattr(data, "target_mean", (0.0,)))
        model.target_std = tuple(float(s) for s in getattr(data, "target_std", (1.0,)))
    return run


def check_resume(model: MLP, path, optimizer: str | None = None):
    """``checkpoint.load(path)`` after checking that it continues ``model`` (same network) with the same
    optimizer (when ``optimizer`` names one); a ValueError naming the difference otherwise."""
    restored, state, history, saved = checkpoint.load(path, "numpy")
    if restored.config() != model.config():
        raise ValueError(f"resume: the checkpoint holds {restored.config()}, not this model {model.config()}")
    saved_optimizer = saved.get("optimizer", "sgd")
    if optimizer is not None and get_optimizer(optimizer).name != saved_optimizer:
        raise ValueError(f"resume: the checkpoint's optimizer is {saved_optimizer!r}; a resumed run cannot switch to "
                         f"{optimizer!r}")
    return restored, state, history, saved


ARRAY_OPTIONS = ("weight", "pos_weight")  # the loss options that are arrays (a number is one too)


def host_options(be: Backend, options: Mapping[str, Any]) -> dict[str, Any]:
    """Loss options with their arrays (NumPy, lists, arrays of ``be``) as plain lists, as settings are saved."""
    out = {}
    for key, value in options.items():
        if isinstance(value, (list, tuple)) or hasattr(value, "shape"):
            value = np.asarray(value if isinstance(value, (list, tuple, np.ndarray)) else be.to_numpy(value)).tolist()
        out[key] = value
    return out


def options_on(be: Backend, options: Mapping[str, Any], dtype) -> dict[str, Any]:
    """Loss options as the loss takes them on ``be``: lists and numbers of the array options as arrays."""
    out = dict(options)
    for key, value in options.items():
        if isinstance(value, (list, tuple)) or (key in ARRAY_OPTIONS and isinstance(value, (int, float))
                                                and not isinstance(value, bool)):
            out[key] = be.asarray(np.asarray(value, dtype=dtype))
    return out


def check_loss_options(model: MLP, data, loss: Loss | str, options: Mapping[str, Any], *,
                       label: str | None = None) -> None:
    """The loss's options, tried once on two training samples on the model's backend: a bad option is
    named before training (and before a run folder is made), not reported as a divergence later.
    ``label`` starts the error's message (default ``loss_options {...}``; the command line names its flag)."""
    loss = get_loss(loss)
    if "reduction" in options:
        raise ValueError(f"loss_options: fit takes the mean loss of each batch; 'reduction' is not an option of "
                         f"training (it is {options['reduction']!r})")
    if not options:
        return
    be = model.be
    label = label or f"loss_options {dict(host_options(be, options))}"
    known = loss_option_names(loss)
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        raise TypeError(f"{label}: {loss.name} has no option {', '.join(map(repr, unknown))}; it takes "
                        f"{', '.join(sorted(known)) or 'none'}")
    x = be.asarray(np.asarray(data.x_train[:2]), dtype=model.dtype)
    y = targets_on(be, np.asarray(data.y_train[:2]), loss, model.dtype)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            loss.value_and_grad_on(be, model.logits(x), y, **options_on(be, options, model.dtype))
    except (TypeError, ValueError) as error:
        message = str(error)
        for op in (f"{loss.name}_and_grad: ", f"{loss.name}: "):  # the op's name says nothing to the caller
            message = message.removeprefix(op)
        raise type(error)(f"{label}: {loss.name}: {message}") from None  # the loss, as the user named it


def loss_option_names(loss: Loss | str) -> set[str] | None:
    """The options ``loss`` takes in training (its keyword arguments but op, want_grad and reduction);
    None where its ``compute`` takes any (``**options``) or has no signature to read."""
    try:
        parameters = inspect.signature(get_loss(loss).compute).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"op", "want_grad",
                                                                                      "reduction"}


def _train_epoch(model: MLP, run: _Run, epoch: int, show: bool, checkpoint_path) -> dict[str, Any]:
    """One epoch over the training set; returns its record without the test figures."""
    settings, be = run.settings, run.be
    n = run.x_train.shape[0]
    steps_per_epoch = math.ceil(n / settings.batch_size)
    loss_definition = settings.loss_definition
    classes = loss_definition.targets != "value" and not settings.chunked_head  # a fused head has no logits
    order = be.asarray(np.random.default_rng([settings.seed, epoch]).permutation(n))
    be.synchronize()
    start = time.perf_counter()
    xs, ys = be.xp.take(run.x_train, order, axis=0), be.xp.take(run.y_train, order, axis=0)
    total_loss = correct = 0
    # overflow shows up as a non-finite loss, which stops training with a clear error below;
    # NumPy's own overflow warnings would only repeat it as noise
    with _progress_bar(show) as bar, np.errstate(over="ignore", invalid="ignore"):
        task = bar.add_task(f"epoch {epoch}/{settings.epochs}", total=steps_per_epoch, loss="-")
        for step, s in enumerate(_batches(n, settings.batch_size), start=1):
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
                correct = correct + _correct(be, loss_definition, logits, ys[s, ...])
            if show and (step % 20 == 0 or step == steps_per_epoch):
                # the mean over the epoch so far, not this batch's: at the epoch's end it is the epoch line's
                bar.update(task, completed=step, loss=f"{float(be.to_numpy(total_loss)) / s.stop:.4f}")
    train_loss = float(be.to_numpy(total_loss)) / n
    train_accuracy = int(be.to_numpy(correct)) / n if classes else None
    be.synchronize()
    seconds = time.perf_counter() - start
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy, "seconds": seconds,
            "samples_per_s": n / seconds, "lr": settings.lr_at(epoch, steps_per_epoch, steps_per_epoch)}


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


def default_loss(data, model: MLP) -> str:
    """The loss fit trains with when none is named: mean squared error for regression data, binary
    cross-entropy for a one-output model on two classes, else cross-entropy."""
    if getattr(data, "task", "classification") == "regression":
        return "mse_loss"
    if model.widths[-1] == 1 and data.num_classes == 2:
        return "binary_cross_entropy_with_logits"
    return "cross_entropy"


def fit(model: MLP, data, backend: Backend | str | None = None, *, loss: Loss | str | None = None,
        optimizer: Optimizer | str | None = None, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, lr_schedule: str | None = None, seed: int | None = None,
        loss_options: Mapping[str, Any] | None = None, checkpoint_path: str | Path | None = None,
        resume: str | Path | None = None, progress: bool | None = None,
        log: Callable[[str], None] | None = print, chunked_head: bool | None = None,
        **hyperparameters: Any) -> list[dict]:
    """Train ``model`` on ``data`` (a :class:`datasets.Dataset`); returns the history.

    ``backend``: a name, a Backend, ``"auto"`` (the fastest available for this
    network and batch size, from a short cached probe; see
    :mod:`core.training.auto`), or ``None`` to stay on the model's backend.
    ``loss`` and ``optimizer``: names from :data:`softgrad.numerics.LOSSES` and
    :data:`softgrad.numerics.OPTIMIZERS` or definitions (default cross-entropy and
    SGD). The optimizer's hyperparameters are keyword arguments
    (``momentum=0.9``); ``loss_options`` are the loss's (``{"label_smoothing": 0.1}``).

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
    """
    given = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                                   seed=seed).items() if v is not None}
    if loss is not None:
        given["loss"] = loss.name if isinstance(loss, Loss) else loss
        get_loss(loss)
    elif resume is None:
        given["loss"] = default_loss(data, model)
    if optimizer is not None:
        given["optimizer"] = optimizer.name if isinstance(optimizer, Optimizer) else optimizer
        get_optimizer(optimizer)
    if loss_options is not None:
        given["loss_options"] = host_options(model.be, loss_options)
    if chunked_head is not None:
        given["chunked_head"] = chunked_head
    given["hyperparameters"] = {k: v for k, v in hyperparameters.items() if v is not None}
    if resume is None:  # the settings as the optimizer checks them, before any work (a resumed run's: in _start)
        TrainSettings.from_dict(given).check()
    if checkpoint_path is None:
        return _fit(model, data, backend, given, resume, progress, log, None)
    # the checkpoint's folder is this run's while it trains: a second run there is refused, not interleaved
    with claim_folder(Path(checkpoint_path).parent, "the checkpoint's folder"):
        remove_stale_temporaries(Path(checkpoint_path).parent)  # what a killed run's write left behind
        return _fit(model, data, backend, given, resume, progress, log, checkpoint_path)


def _fit(model: MLP, data, backend, given: dict[str, Any], resume, progress: bool | None,
         log: Callable[[str], None] | None, checkpoint_path) -> list[dict]:
    run = _start(model, data, backend, given, resume, log)
    settings = run.settings
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in range(len(run.history) + 1, settings.epochs + 1):
        with backend_scope(run.be):
            record = _train_epoch(model, run, epoch, show, checkpoint_path)
        test = evaluate(model, run.x_test, run.y_test, loss=settings.loss_definition,
                        loss_options=settings.loss_options, target_mean=getattr(data, "target_mean", None),
                        target_std=getattr(data, "target_std", None))
        record = {**record, **{f"test_{key}": value for key, value in test.items()}}
        figures = (("train_loss", "train_accuracy", "test_loss", "test_accuracy") if "accuracy" in test
                   else ("train_loss", "test_loss", "test_rmse", "test_mae", "test_r2"))
        record = {key: record[key] for key in ("epoch", *figures, "seconds", "samples_per_s", "lr")}
        run.history.append(record)
        if checkpoint_path is not None:
            checkpoint.save(checkpoint_path, model, run.state, run.history, run.saved_settings,
                            optimizer=settings.optimizer, data=data)  # what it trains on: evaluate reads it
        if log is not None:
            train = "-" if record.get("train_accuracy") is None else f"{record['train_accuracy']:.2%}"
            accuracy = (f"train {train}  test {record['test_accuracy']:.2%}  "
                        if "train_accuracy" in record else
                        f"test loss {record['test_loss']:.4f}  rmse {record['test_rmse']:.4g}  "
                        f"r2 {record['test_r2']:.3f}  ")
            log(f"epoch {epoch:>3}/{settings.epochs}  loss {record['train_loss']:.4f}  {accuracy}"
                f"{record['samples_per_s']:,.0f} samples/s  ({record['seconds']:.1f} s)")
    return run.history


__all__ = ["TRAINING_DEFAULTS", "TrainSettings", "TrainingDivergedError", "check_data", "check_loss_options",
           "check_resume", "default_loss", "evaluate", "fit", "predict", "targets_on", "train_step"]
