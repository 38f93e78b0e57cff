"""One training step and the settings it runs with: the loss, the optimizer and its hyperparameters."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.optim import Optimizer, get_optimizer
from softgrad.training.models import MLP

#: fit's own hyperparameters per optimizer where they differ from torch's defaults: SGD with Nesterov
#: momentum 0.9 and weight decay 2e-3 reaches 97.5-97.8% on the shipped MNIST subset in 10 epochs
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9, "nesterov": True, "weight_decay": 2e-3}}
#: fit's learning rate per optimizer where it differs from torch's default (the optimizer's ``lr``)
TRAINING_LR: dict[str, float] = {"sgd": 0.05}


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`fit` trains with.

    ``hyperparameters`` are the optimizer's besides ``lr`` (for SGD: momentum,
    dampening, nesterov, weight_decay); those not given take
    :data:`TRAINING_DEFAULTS`, then the optimizer's own (torch's) defaults.
    ``lr`` not given is 0.05 for SGD and torch's default for the others.
    ``loss_options`` are the loss's keyword arguments (``label_smoothing=0.1``).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: TRAINING_LR's for the optimizer, else torch's default (Adam 1e-3)
    lr_schedule: str = "cosine"  # "cosine" (to 0 over the epochs) or "constant"
    seed: int = 0
    loss: str = "cross_entropy"
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    #: fuse the last layer with cross-entropy (be.linear_cross_entropy_and_grad): the batch's logits are never
    #: held, for a large number of classes; the same loss and gradients, but no training accuracy
    chunked_head: bool = False

    def __post_init__(self) -> None:
        if self.lr is None:
            optimizer = get_optimizer(self.optimizer)
            object.__setattr__(self, "lr", TRAINING_LR.get(optimizer.name, optimizer.lr))

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> TrainSettings:
        """Settings as saved by a checkpoint or run.json, in this format or the first one (flat SGD keys)."""
        saved = dict(saved)
        hyperparameters = dict(saved.pop("hyperparameters", None) or {})
        for key in get_optimizer("sgd").defaults:  # the first format kept SGD's hyperparameters at the top
            if key in saved:
                value = saved.pop(key)
                if value is not None:
                    hyperparameters[key] = value
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise TypeError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**{k: v for k, v in saved.items() if v is not None}, hyperparameters=hyperparameters)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["loss_options"], out["hyperparameters"] = dict(self.loss_options), dict(self.resolved_hyperparameters)
        return out

    @cached_property
    def loss_definition(self) -> Loss:
        return get_loss(self.loss)

    @cached_property
    def optimizer_definition(self) -> Optimizer:
        return get_optimizer(self.optimizer)

    @cached_property
    def resolved_hyperparameters(self) -> dict[str, Any]:
        optimizer = self.optimizer_definition
        if "lr" in self.hyperparameters:
            raise TypeError("lr is a setting of its own, not one of the optimizer's other hyperparameters: pass lr= "
                            "(--lr on the command line)")
        optimizer.check_names(self.hyperparameters)
        values = {**optimizer.defaults, **TRAINING_DEFAULTS.get(optimizer.name, {}), **self.hyperparameters}
        if optimizer.name == "sgd" and values["momentum"] == 0 and "nesterov" not in self.hyperparameters:
            # fit's default Nesterov needs momentum: momentum=0 alone is plain SGD; nesterov=True asked for
            # with momentum 0 is refused by the check below, as torch.optim.SGD refuses it
            values["nesterov"] = False
        return optimizer.check(lr=self.lr, **values)

    def check(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        self.loss_definition  # noqa: B018  (raises for an unknown loss)
        if not isinstance(self.chunked_head, bool):
            raise TypeError(f"chunked_head must be True or False, got {self.chunked_head!r}")
        if self.chunked_head and self.loss_definition.name != "cross_entropy":
            raise ValueError(f"chunked_head fuses the last layer with cross_entropy; the loss is {self.loss!r}")
        self.resolved_hyperparameters  # noqa: B018  (raises for an unknown optimizer or a bad hyperparameter)

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The learning rate of one step; ``epoch`` counts from 1."""
        if self.lr_schedule == "constant" or self.epochs == 0:
            return self.lr
        progress = ((epoch - 1) * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


def train_step(model: MLP, x, y, state, lr: float, settings: TrainSettings | None = None, *,
               loss: Loss | str | None = None, optimizer: Optimizer | str | None = None):
    """One step on the batch ``(x, y)``: forward, loss and its gradient, backward, optimizer update.

    ``loss`` and ``optimizer`` (names or definitions) default to the settings'
    (cross-entropy and SGD); the optimizer's hyperparameters and the loss's
    options are the settings'. Returns ``(loss, logits, state)`` and sets
    ``model.params`` to the updated parameters. Raises ``ValueError`` (from
    the loss) when the logits are not finite.
    """
    settings = settings if settings is not None else _DEFAULT_SETTINGS
    loss = settings.loss_definition if loss is None else get_loss(loss)
    if optimizer is None:
        optimizer, hyperparameters = settings.optimizer_definition, settings.resolved_hyperparameters
    else:
        optimizer = get_optimizer(optimizer)
        hyperparameters = (settings.resolved_hyperparameters if optimizer.name == settings.optimizer
                           else optimizer.check(lr=lr, **optimizer.defaults))
    be = model.be
    with backend_scope(be):
        if settings.chunked_head and loss.name == "cross_entropy":
            value, grads = model.chunked_head_loss_and_grads(x, y, **settings.loss_options)
            model.params, state = optimizer.step_on(be, model.params, grads, state, lr=lr, **hyperparameters)
            return value, None, state
        logits, cache = model.forward(x)
        value, dlogits = loss.value_and_grad_on(be, logits, y, **settings.loss_options)
        model.params, state = optimizer.step_on(be, model.params, model.backward(cache, dlogits), state, lr=lr,
                                                **hyperparameters)
    return value, logits, state


def backend_scope(be: Any):
    """The context a backend computes in (``be.scope()``: JAX's 64-bit mode), or none."""
    scope = getattr(be, "scope", None)
    return scope() if scope is not None else contextlib.nullcontext()


_DEFAULT_SETTINGS = TrainSettings()
