"""One training step: forward, the loss and its gradient, backward, the optimizer's update; and the context
a backend computes in. What the step runs with is a :class:`~softgrad.training.settings.TrainSettings`."""

from __future__ import annotations

from typing import Any

from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.optim import Optimizer, get_optimizer
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings


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
    """The context a backend computes in (the hook ``be.scope()``: JAX's 64-bit mode; by default none)."""
    return be.scope()


_DEFAULT_SETTINGS = TrainSettings()
