"""What the estimators train with: their settings as softgrad's :class:`TrainSettings`, the network they build,
and one epoch over the rows given (:func:`train_epoch`), the optimizer's state carried from call to call.

The estimators drive :func:`softgrad.training.step.train_step` themselves rather than :func:`softgrad.fit`:
``partial_fit`` continues the optimizer's state (Adam's moments, SGD's momentum) from one call to the next,
which ``fit`` starts afresh each time, and ``fit``'s per-epoch work (the record, the log line, the progress
bar) costs milliseconds an epoch, which 200 epochs times the few hundred fits of scikit-learn's checks would
multiply. An epoch draws its order as :func:`softgrad.fit` does (a NumPy generator seeded with
``(seed, epoch)``) and takes the same contiguous batches.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from softgrad.numerics.protocol import Backend
from softgrad.training.fitting import TrainingDivergedError
from softgrad.training.inference import batches
from softgrad.training.layers import ACTIVATIONS as LAYER_ACTIVATIONS
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings
from softgrad.training.step import backend_scope, train_step

#: the activations the MLP takes; scikit-learn's name "logistic" is softgrad's "sigmoid"
ACTIVATIONS = tuple(LAYER_ACTIVATIONS)
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}


@dataclass(frozen=True)
class Training:
    """An estimator's training settings, checked: the settings a step takes, the batch size, the epochs."""

    settings: TrainSettings
    batch_size: int
    epochs: int

    @classmethod
    def of(cls, estimator: Any, n_samples: int, loss: str) -> Training:
        """The settings of ``estimator``'s parameters for ``n_samples`` rows; one ValueError line naming a
        parameter that is out of range."""
        name = type(estimator).__name__
        epochs = estimator.max_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"{name}: max_epochs must be an int >= 1, got {epochs!r}")
        batch = estimator.batch_size
        if isinstance(batch, str) and batch == "auto":
            batch = 200  # scikit-learn's MLP: min(200, n_samples)
        elif isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ValueError(f"{name}: batch_size must be 'auto' or an int >= 1, got {estimator.batch_size!r}")
        optimizer = estimator.optimizer
        if not isinstance(optimizer, str):
            raise ValueError(f"{name}: optimizer must be a name such as 'adam' or 'sgd', got {optimizer!r}")
        try:
            settings = TrainSettings(epochs=int(epochs), batch_size=int(batch), lr=estimator.lr,
                                     lr_schedule="constant", loss=loss, optimizer=optimizer,
                                     hyperparameters=_hyperparameters(optimizer, estimator.momentum))
            settings.check()
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{name}: {' '.join(str(error).split())}") from None
        return cls(settings, min(int(batch), n_samples), int(epochs))


def _hyperparameters(optimizer: str, momentum: Any) -> dict[str, Any]:
    """The optimizer's hyperparameters the estimator sets: momentum where the optimizer has one, and no
    weight decay (fit's SGD default of 2e-3 is a penalty scikit-learn's parameters would not show)."""
    from softgrad.numerics.optim import get_optimizer

    defaults = get_optimizer(optimizer).defaults
    values: dict[str, Any] = {}
    if "weight_decay" in defaults:
        values["weight_decay"] = 0.0
    if "momentum" in defaults:
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        values["momentum"] = float(momentum)
    return values


def build_model(estimator: Any, widths: list[int], dtype: np.dtype, seed: int) -> MLP:
    """The network of ``estimator``'s hidden layers and activation between ``widths[0]`` inputs and
    ``widths[1]`` outputs; one ValueError line naming a bad parameter."""
    name = type(estimator).__name__
    hidden = estimator.hidden_layer_sizes
    hidden = (hidden,) if isinstance(hidden, numbers.Integral) else hidden
    try:
        hidden = [int(w) for w in hidden]
    except (TypeError, ValueError):
        hidden = [0]
    if any(isinstance(w, bool) for w in np.atleast_1d(estimator.hidden_layer_sizes)) or min(hidden, default=1) < 1:
        raise ValueError(f"{name}: hidden_layer_sizes must be widths >= 1, such as (100,) or (64, 32); got "
                         f"{estimator.hidden_layer_sizes!r}")
    activation = _ACTIVATION_ALIASES.get(estimator.activation, estimator.activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{name}: activation must be one of {', '.join(ACTIVATIONS)} (or 'logistic'), got "
                         f"{estimator.activation!r}")
    try:
        return MLP([widths[0], *hidden, widths[1]], activation, seed=seed, dtype=dtype, backend=estimator.backend)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{name}: {' '.join(str(error).split())}") from None


def train_epoch(model: MLP, state: Any, rows: tuple[Any, Any], training: Training, order_seed: list[int]):
    """One epoch over ``rows`` (x and y on the model's backend) in the order drawn from ``order_seed``, in
    batches of ``training.batch_size``; returns the optimizer's state and the epoch's mean loss."""
    be: Backend = model.be
    x, y = rows
    n = x.shape[0]
    order = be.asarray(np.random.default_rng(order_seed).permutation(n))
    xs, ys = be.take(x, order, axis=0), be.take(y, order, axis=0)
    total = 0.0
    with backend_scope(be), np.errstate(over="ignore", invalid="ignore"):  # overflow: the error below names it
        for s in batches(n, training.batch_size):
            try:
                loss, _, state = train_step(model, xs[s, ...], ys[s, ...], state, training.settings.lr,
                                            training.settings)
            except ValueError as error:
                raise TrainingDivergedError(
                    f"training diverged ({' '.join(str(error).split())}): lower lr (now {training.settings.lr:g}) "
                    "or scale the features (StandardScaler)") from None
            total += float(be.to_numpy(loss)) * (s.stop - s.start)
    return state, total / n


def new_state(model: MLP, training: Training) -> Any:
    """The optimizer's state for a new run on ``model``."""
    settings = training.settings
    with backend_scope(model.be):
        return settings.optimizer_definition.init_on(model.be, model.params, **settings.resolved_hyperparameters)
