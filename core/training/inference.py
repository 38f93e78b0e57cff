"""Inference with a trained model: :func:`predict` and :func:`evaluate` in the task's terms (classes, binary
labels, values in the data's units), and what they check of their input (:func:`as_rows`,
:func:`check_finite_rows`). :func:`batches` and :func:`count_correct` serve the training loop too."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.protocol import Backend
from softgrad.training.data_checks import targets_on
from softgrad.training.metrics import regression_metrics
from softgrad.training.models import MLP
from softgrad.training.step import backend_scope


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """The batches of ``n`` rows as contiguous slices, in order."""
    # rows x[s, ...]: the array API standard indexes every axis (x[s] alone is a NumPy convenience)
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def count_correct(be: Backend, loss: Loss, logits, y):
    """How many predictions are right (a backend scalar): argmax for classes, probability > 0.5 for binary."""
    if loss.targets == "class":
        return be.sum(be.argmax(logits, axis=1) == y)
    return be.sum((logits > 0) == (y > 0.5))


def as_rows(model: MLP, x, what: str = "predict"):
    """``x`` as an ``(N, features)`` array of the model's backend and dtype.

    Images ``(N, 28, 28)`` are flattened and a single sample ``(784,)`` or ``(28, 28)`` becomes one row,
    where the sizes match the model's input width; anything else is a ValueError naming the shapes.
    """
    be, width = model.be, model.num_features
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
    return be.reshape(x, shape) if tuple(x.shape) != shape else x


@dataclass(frozen=True)
class _Task:
    """What predict and evaluate answer in terms of: the loss and the targets' scale (None: as the model holds
    its outputs, for classes, or values not scaled)."""

    loss: Loss
    target_mean: Any = None
    target_std: Any = None

    @classmethod
    def of(cls, model: MLP, loss, target_mean, target_std, what: str) -> _Task:
        """The loss given, else the one the model was trained with, else cross-entropy; the target scale
        given, else the model's."""
        loss = get_loss(loss if loss is not None else (getattr(model, "loss", None) or "cross_entropy"))
        if loss.targets == "class" and model.num_outputs == 1:
            raise ValueError(f"{what}: a model with one output is no softmax classifier; say what it was trained "
                             "with: loss='bce_with_logits' (binary) or a regression loss such as 'mse'")
        if loss.targets != "value":
            return cls(loss, target_mean, target_std)
        return cls(loss, getattr(model, "target_mean", None) if target_mean is None else target_mean,
                   getattr(model, "target_std", None) if target_std is None else target_std)

    def in_data_units(self, values: np.ndarray, dtype) -> np.ndarray:
        """Values as the model outputs them, in the data's units: ``y * target_std + target_mean``."""
        std = np.asarray(self.target_std if self.target_std is not None else 1.0, dtype=dtype)
        return values * std + np.asarray(self.target_mean if self.target_mean is not None else 0.0, dtype=dtype)


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
    task = _Task.of(model, loss, target_mean, target_std, "predict")
    with backend_scope(model.be):
        return _predict(model, x, batch_size, task)


def check_finite_rows(model: MLP, x, what: str) -> None:
    """A ValueError naming the first row of ``x`` (rows on the model's backend) that holds NaN or inf: the
    model would answer it with a class (0) or a value that looks like any other."""
    be = model.be
    if be.all_finite(x):
        return
    row = int(np.flatnonzero(~np.isfinite(np.asarray(be.to_numpy(x))).all(axis=1))[0])
    beyond = " (or a value beyond float32's range)" if model.dtype == np.float32 else ""
    raise ValueError(f"{what}: sample {row} holds NaN or inf{beyond}; a prediction for it would be meaningless")


def _predict(model: MLP, x, batch_size: int, task: _Task) -> np.ndarray:
    be, loss = model.be, task.loss
    with np.errstate(over="ignore"):  # a float64 value beyond float32 becomes inf, which the check names
        x = as_rows(model, x)
    check_finite_rows(model, x, "predict")
    outputs = [be.to_numpy(model.logits(x[s, ...])) if loss.targets != "class"
               else be.to_numpy(be.argmax(model.logits(x[s, ...]), axis=1)) for s in batches(x.shape[0], batch_size)]
    if loss.targets == "class":
        return np.concatenate(outputs).astype(np.int64) if outputs else np.zeros(0, dtype=np.int64)
    values = np.concatenate(outputs) if outputs else np.zeros((0, model.num_outputs), dtype=model.dtype)
    if loss.targets == "binary":
        return (values[:, 0] > 0).astype(np.int64)
    return task.in_data_units(values, values.dtype)


def evaluate(model: MLP, x, y, batch_size: int = 4096, *, loss: Loss | str | None = None,
             loss_options: Mapping[str, Any] | None = None, target_mean=None, target_std=None) -> dict[str, float]:
    """The mean loss (cross-entropy unless told) of ``model`` on ``(x, y)``, and the task's figures.

    Classification (cross-entropy, binary cross-entropy): ``accuracy``. Regression: ``rmse``, ``mae``
    and ``r2`` (the coefficient of determination, averaged over the targets as scikit-learn does), in the
    data's units when ``target_mean`` and ``target_std`` (a Dataset's) are given. ``loss`` and the scale
    default to what :func:`fit` trained the model with.
    """
    task = _Task.of(model, loss, target_mean, target_std, "evaluate")
    with backend_scope(model.be):
        return _evaluate(model, x, y, batch_size, task, loss_options or {})


def _evaluate(model: MLP, x, y, batch_size: int, task: _Task, loss_options: Mapping[str, Any]) -> dict:
    be, loss = model.be, task.loss
    with np.errstate(over="ignore"):  # a float64 value beyond float32 becomes inf, which the check names
        x, y = as_rows(model, x, "evaluate"), targets_on(be, y, loss, model.dtype)
    check_finite_rows(model, x, "evaluate")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"evaluate: {x.shape[0]} samples but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("evaluate: no samples to evaluate")
    options = {**loss_options, "reduction": "sum"}
    total_loss, correct, values = 0.0, 0, []
    for s in batches(x.shape[0], batch_size):
        logits = model.logits(x[s, ...])
        total_loss += float(be.to_numpy(loss.value_on(be, logits, y[s, ...], **options)))
        if loss.targets == "value":
            values.append(be.to_numpy(logits))
        else:
            correct += int(be.to_numpy(count_correct(be, loss, logits, y[s, ...])))
    result = {"loss": total_loss / x.shape[0]}
    if loss.targets == "value":
        truth = task.in_data_units(np.asarray(be.to_numpy(y), dtype=np.float64), np.float64)
        result.update(regression_metrics(truth, task.in_data_units(np.concatenate(values).astype(np.float64),
                                                                    np.float64)))
    else:
        result["accuracy"] = correct / x.shape[0]
    return result


__all__ = ["as_rows", "batches", "check_finite_rows", "count_correct", "evaluate", "predict"]
