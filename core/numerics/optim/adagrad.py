"""Adagrad (``torch.optim.Adagrad``): its explicit state, its checks and its functional step.

With ``g`` the gradient (negated when ``maximize``) and ``t`` the step counted
from 1, one step is torch's ``_single_tensor_adagrad`` (dense gradients), in
its order::

    g <- g + weight_decay * p
    clr <- lr / (1 + (t - 1) * lr_decay)      # a Python float
    s <- s + g * g
    p <- p + (-clr * g) / (sqrt(s) + eps)

The sum starts at ``initial_accumulator_value``, so that one hyperparameter is
the initial state's: ``init`` takes it (``be.adagrad_init(params,
initial_accumulator_value=0.1)``); ``step`` accepts it too, so that the whole
set of hyperparameters can be passed to both, and ignores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from softgrad.numerics.optim.checks import check_flag, check_param_arrays, check_real, check_step_arguments

#: torch.optim.Adagrad's defaults for every hyperparameter but lr (1e-2)
DEFAULTS: dict[str, Any] = {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10,
                            "maximize": False}


class AdagradState(NamedTuple):
    """State of ``Backend.adagrad_step``.

    step:
        how many steps have been taken.
    sum:
        the sum of the squared gradients, one array per parameter, starting at
        ``initial_accumulator_value`` (given to ``adagrad_init``).
    """

    step: int = 0
    sum: tuple[Any, ...] = ()


@dataclass(frozen=True)
class AdagradHyperparameters:
    """One Adagrad step's hyperparameters, checked (:meth:`checked`) and as Python numbers.

    ``initial_accumulator_value`` is the initial state's (see :func:`init`):
    a step checks it and does not use it.
    """

    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    maximize: bool = False

    @classmethod
    def checked(cls, *, lr: Any, lr_decay: Any, weight_decay: Any, initial_accumulator_value: Any, eps: Any,
                maximize: Any) -> AdagradHyperparameters:
        """The hyperparameters as Python numbers, or a clear error."""
        where = "adagrad_step"
        # in torch's order: lr, lr_decay, weight_decay, initial_accumulator_value, eps
        return cls(lr=check_real(where, "lr", lr), lr_decay=check_real(where, "lr_decay", lr_decay),
                   weight_decay=check_real(where, "weight_decay", weight_decay),
                   initial_accumulator_value=check_real(where, "initial_accumulator_value",
                                                        initial_accumulator_value),
                   eps=check_real(where, "eps", eps), maximize=check_flag(where, "maximize", maximize))


def check(lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
          eps: float = 1e-10, maximize: bool = False) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    values = asdict(AdagradHyperparameters.checked(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                                   initial_accumulator_value=initial_accumulator_value, eps=eps,
                                                   maximize=maximize))
    del values["lr"]
    return values


def init(be: Any, params: Sequence[Any], *, initial_accumulator_value: float = 0.0,
         **hyperparameters: Any) -> AdagradState:
    """``AdagradState(step=0, sum=initial_accumulator_value everywhere)``; other hyperparameters are ignored."""
    value = check_real("adagrad_init", "initial_accumulator_value", initial_accumulator_value)
    check_param_arrays(be, "adagrad_init", params)
    return AdagradState(step=0, sum=tuple(be.xp.full_like(p, value) for p in params))


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdagradState, *, lr: float,
         lr_decay: float = 0.0, weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
         eps: float = 1e-10, maximize: bool = False) -> tuple[list[Any], AdagradState]:
    """One ``torch.optim.Adagrad`` step (foreach=False), written against ``be.xp``; returns new arrays, modifies none.

    ``s <- s + g^2``, ``p <- p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``;
    ``g`` is ``-g`` when ``maximize``, then ``g + weight_decay p``.
    ``initial_accumulator_value`` is the state's (see ``adagrad_init``): checked, not used here.
    """
    hyper = AdagradHyperparameters.checked(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                           initial_accumulator_value=initial_accumulator_value, eps=eps,
                                           maximize=maximize)
    sums = state.sum if isinstance(state, AdagradState) else None
    count = check_step_arguments(be, "adagrad_step", params, grads, state, state_type=AdagradState,
                                 init="adagrad_init", buffers={"sum": sums}) + 1
    if sums is None:
        raise TypeError("adagrad_step: the state's sum must be one array per parameter; was it made by adagrad_init?")
    clr = hyper.lr / (1 + (count - 1) * hyper.lr_decay)  # a Python float, as torch computes it
    new_params, new_sums = [], []
    for p, g, s in zip(params, grads, sums):
        p, s = update_one(be.xp, p, g, s, clr, hyper)
        new_params.append(p)
        new_sums.append(s)
    return new_params, AdagradState(step=count, sum=tuple(new_sums))


def update_one(xp: Any, p: Any, g: Any, sum_: Any, clr: float, hyper: AdagradHyperparameters) -> tuple[Any, Any]:
    """One parameter's update at the step's decayed learning rate ``clr``, in torch's order: ``(p, sum)``.

    Pure arithmetic on ``xp``: a backend may compile it.
    """
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0:
        g = g + hyper.weight_decay * p
    sum_ = sum_ + g * g  # torch: addcmul_(g, g, value=1)
    return p + ((-clr) * g) / (xp.sqrt(sum_) + hyper.eps), sum_
