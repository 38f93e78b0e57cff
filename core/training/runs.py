"""A run's start: its settings (given, else a resumed checkpoint's, else the defaults), its backend, the
optimizer's state and the data on the device (:func:`start_run`); and what a resumed checkpoint must match
(:func:`check_resume`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from softgrad.numerics.optim import get_optimizer
from softgrad.numerics.protocol import Backend
from softgrad.training import checkpoint
from softgrad.training.auto import network_of, resolve_backend
from softgrad.training.data_checks import check_data, has_test_split, targets_on
from softgrad.training.loss_options import check_loss_options, options_on
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings


@dataclass(kw_only=True)
class Run:
    """What an epoch needs: the settings, the backend, the data on it, the optimizer state (which each step
    replaces), the history (which each epoch extends)."""

    settings: TrainSettings
    saved_settings: dict  # the settings as checkpoints store them (arrays as lists)
    be: Backend
    state: Any
    history: list[dict]
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any


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


def _resumed(model: MLP, data, given: dict[str, Any], resume, log) -> tuple[TrainSettings, Any, list[dict]]:
    """The settings, optimizer state and history a resumed run continues with (the given settings over the
    checkpoint's); the model takes the checkpoint's parameters and backend."""
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
    return settings, state, history


def start_run(model: MLP, data, given: dict[str, Any], *, backend: Backend | str | None, resume,
              log: Callable[[str], None] | None) -> Run:
    """The run's settings (``given``, else the checkpoint's when resuming, else the defaults), backend
    (``backend``: resolved as :func:`~softgrad.training.auto.resolve_backend` does; a resumed run stays on
    the model's), optimizer state and data on the device; the model records the task it trains for."""
    settings, state, history = TrainSettings.from_dict(given), None, []
    if resume is not None:
        backend = model.be if backend is None else backend  # a resumed run stays on the model's backend
        settings, state, history = _resumed(model, data, given, resume, log)
    settings.check()
    if settings.chunked_head and not hasattr(model, "chunked_head_loss_and_grads"):
        raise ValueError(f"chunked_head fuses an MLP's last layer with cross_entropy; {type(model).__name__} has "
                         "no such head")
    check_data(data, model, settings.loss_definition)
    # the probe's batch is what training will use: never more than the data holds
    backend = resolve_backend(backend, network_of(model), min(settings.batch_size, len(data.y_train)),
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
    run = Run(settings=settings, saved_settings=saved_settings, be=be, state=state, history=history,
              **_data_on(be, model, data, settings.loss_definition))
    check_loss_options(model, data, settings.loss_definition, settings.loss_options)
    _record_task(model, data, settings)
    return run


def _data_on(be: Backend, model: MLP, data, loss) -> dict[str, Any]:
    """The data on the run's backend, once, the test set too (evaluated after every epoch; None where the data
    has no test split)."""
    test = has_test_split(data)
    return {"x_train": be.asarray(data.x_train, dtype=model.dtype),
            "y_train": targets_on(be, data.y_train, loss, model.dtype),
            "x_test": be.asarray(data.x_test, dtype=model.dtype) if test else None,
            "y_test": targets_on(be, data.y_test, loss, model.dtype) if test else None}


def _record_task(model: MLP, data, settings: TrainSettings) -> None:
    """What predict and evaluate need to answer in the task's terms without being told, on the model."""
    model.loss = settings.loss_definition.name
    if settings.loss_definition.targets == "value":
        model.target_mean = tuple(float(m) for m in getattr(data, "target_mean", (0.0,)))
        model.target_std = tuple(float(s) for s in getattr(data, "target_std", (1.0,)))


__all__ = ["Run", "check_resume", "start_run"]
