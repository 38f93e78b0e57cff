"""Adam and AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``): the explicit state, the checks, the step.

With ``g`` the gradient (negated when ``maximize``), ``t`` the step counted
from 1, ``lambda`` the weight decay and ``gamma`` the learning rate, one step is
torch's ``_single_tensor_adam``, in its order::

    p <- p * (1 - gamma * lambda)          if decoupled_weight_decay (AdamW), else
    g <- g + lambda * p
    m <- lerp(m, g, 1 - beta1)             # beta1 * m + (1 - beta1) * g
    v <- v * beta2 + ((1 - beta2) * g) * g
    vmax <- max(vmax, v)                   if amsgrad (and v <- vmax below)
    denom <- sqrt(v) / sqrt(1 - beta2**t) + eps
    p <- p + (-(gamma / (1 - beta1**t)) * m) / denom

The bias corrections are Python floats, as torch computes them; ``eps`` is
added after the second moment is bias-corrected, outside the square root.

:class:`AdamHyperparameters` carries one step's settings, checked once;
:func:`update_one` is one parameter's arithmetic, which the shared step runs
and JAX compiles. The checks are in :mod:`softgrad.numerics.optim.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from softgrad.numerics.optim.arithmetic import lerp
from softgrad.numerics.optim.checks import (
    check_betas,
    check_flag,
    check_param_arrays,
    check_real,
    check_step_arguments,
)

#: torch.optim.Adam's defaults for every hyperparameter but lr (1e-3)
DEFAULTS: dict[str, Any] = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                            "maximize": False, "decoupled_weight_decay": False}
#: torch.optim.AdamW's: Adam's with decoupled weight decay 0.01 (its param groups hold decoupled_weight_decay=True)
ADAMW_DEFAULTS: dict[str, Any] = {**DEFAULTS, "weight_decay": 0.01, "decoupled_weight_decay": True}


class AdamState(NamedTuple):
    """State of ``Backend.adam_step`` and ``Backend.adamw_step`` (one type: either step resumes the other's).

    step:
        how many steps have been taken (``t`` of the last step).
    exp_avg, exp_avg_sq:
        the first and second moments, one array per parameter, zeros at init.
    max_exp_avg_sq:
        ``None`` until the first step with ``amsgrad=True``, which starts it
        from zeros (as torch does at init): the running maximum of
        ``exp_avg_sq``. Starting it then rather than at init gives the same
        numbers, since ``max(0, v) = v`` for ``v >= 0``, and keeps the state of
        a run without amsgrad free of arrays it never reads.
    """

    step: int = 0
    exp_avg: tuple[Any, ...] = ()
    exp_avg_sq: tuple[Any, ...] = ()
    max_exp_avg_sq: tuple[Any, ...] | None = None


# ---- Adam ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdamHyperparameters:
    """One Adam or AdamW step's hyperparameters, checked (:meth:`checked`) and as Python numbers."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    maximize: bool = False
    decoupled_weight_decay: bool = False

    @classmethod
    def checked(cls, where: str, *, lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any,
                decoupled_weight_decay: Any) -> AdamHyperparameters:
        """The hyperparameters as Python numbers, or a clear error naming ``where`` (the method called)."""
        lr = check_real(where, "lr", lr)  # checked first: torch checks lr first too
        return cls(lr=lr, betas=check_betas(where, betas), eps=check_real(where, "eps", eps),
                   weight_decay=check_real(where, "weight_decay", weight_decay),
                   amsgrad=check_flag(where, "amsgrad", amsgrad), maximize=check_flag(where, "maximize", maximize),
                   decoupled_weight_decay=check_flag(where, "decoupled_weight_decay", decoupled_weight_decay))

    def without_lr(self) -> dict[str, Any]:
        """The hyperparameters but lr, by name: what ``Optimizer.check`` returns."""
        values = asdict(self)
        del values["lr"]
        return values


def _adamw_decoupled(decoupled_weight_decay: Any) -> None:
    if decoupled_weight_decay is not True:
        raise ValueError("adamw_step: AdamW's weight decay is always decoupled (decoupled_weight_decay=True); "
                         f"got {decoupled_weight_decay!r}; for L2 weight decay use adam_step")


def check(lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
          amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    return AdamHyperparameters.checked("adam_step", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                       amsgrad=amsgrad, maximize=maximize,
                                       decoupled_weight_decay=decoupled_weight_decay).without_lr()


def check_adamw(lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.01, amsgrad: bool = False, maximize: bool = False,
                decoupled_weight_decay: bool = True) -> dict[str, Any]:
    """AdamW's hyperparameters, checked (``decoupled_weight_decay`` can only be True)."""
    hyper = AdamHyperparameters.checked("adamw_step", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                        amsgrad=amsgrad, maximize=maximize,
                                        decoupled_weight_decay=decoupled_weight_decay)
    _adamw_decoupled(decoupled_weight_decay)
    return hyper.without_lr()


def _zeros_state(be: Any, where: str, params: Sequence[Any]) -> AdamState:
    check_param_arrays(be, where, params)
    xp = be.xp
    return AdamState(step=0, exp_avg=tuple(xp.zeros_like(p) for p in params),
                     exp_avg_sq=tuple(xp.zeros_like(p) for p in params), max_exp_avg_sq=None)


def init(be: Any, params: Sequence[Any], **hyperparameters: Any) -> AdamState:
    """``AdamState(step=0, exp_avg=zeros, exp_avg_sq=zeros, max_exp_avg_sq=None)``; hyperparameters are not needed."""
    return _zeros_state(be, "adam_init", params)


def init_adamw(be: Any, params: Sequence[Any], **hyperparameters: Any) -> AdamState:
    """AdamW's initial state: Adam's."""
    return _zeros_state(be, "adamw_init", params)


def plan_step(where: str, init_name: str, be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState,
              **hyperparameters: Any) -> tuple[dict[str, Any], tuple[float, ...], int]:
    """Everything checked (raising a clear error), then what :func:`update_one` takes: the hyperparameters a
    compiled update may branch on (``static``), the numbers that change every step (``traced``: lr, eps, the
    step size and the square root of the second bias correction) and the new step count.

    ``hyperparameters`` are every one of :class:`AdamHyperparameters`' fields, by name.
    """
    hyper = AdamHyperparameters.checked(where, **hyperparameters)
    return plan_checked_step(be, params, grads, state, hyper, where=where, init_name=init_name)


def plan_checked_step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState,
                      hyper: AdamHyperparameters, *, where: str,
                      init_name: str) -> tuple[dict[str, Any], tuple[float, ...], int]:
    """:func:`plan_step` for hyperparameters already checked: the arrays and the state checked, then the plan."""
    (beta1, beta2), ours = hyper.betas, isinstance(state, AdamState)
    step = check_step_arguments(be, where, params, grads, state, state_type=AdamState, init=init_name, buffers={
        "exp_avg": state.exp_avg if ours else None,
        "exp_avg_sq": state.exp_avg_sq if ours else None,
        "max_exp_avg_sq": state.max_exp_avg_sq if ours else None,
    }) + 1
    if state.exp_avg is None or state.exp_avg_sq is None:
        raise TypeError(f"{where}: the state's exp_avg and exp_avg_sq must be one array per parameter; "
                        f"was it made by {init_name}?")
    # Python floats, as torch computes them from its step count
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    static = {"beta1": beta1, "beta2": beta2, "weight_decay": hyper.weight_decay, "amsgrad": hyper.amsgrad,
              "maximize": hyper.maximize, "decoupled": hyper.decoupled_weight_decay}
    return static, (hyper.lr, hyper.eps, hyper.lr / bias_correction1, bias_correction2**0.5), step


def update_one(xp: Any, p: Any, g: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *, lr: Any, eps: Any,
               step_size: Any, bias_correction2_sqrt: Any, beta1: float, beta2: float, weight_decay: float,
               amsgrad: bool, maximize: bool, decoupled: bool) -> tuple[Any, Any, Any, Any]:
    """One parameter's update, in torch's order: ``(p, exp_avg, exp_avg_sq, max_exp_avg_sq)`` (the last None
    without amsgrad). Pure arithmetic on ``xp``: a backend may compile it (JAX does)."""
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = lerp(exp_avg, g, 1 - beta1, p.dtype)
    s = exp_avg_sq * beta2 + ((1 - beta2) * g) * g
    top = None
    if amsgrad:
        # None: the first amsgrad step, max(zeros, s) = s; a copy, so that the state never aliases itself
        top = xp.asarray(s, copy=True) if max_exp_avg_sq is None else xp.maximum(max_exp_avg_sq, s)
    denom = xp.sqrt(s if top is None else top) / bias_correction2_sqrt + eps
    return p + ((-step_size) * m) / denom, m, s, top


def _step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState, hyper: AdamHyperparameters, *,
          where: str, init_name: str) -> tuple[list[Any], AdamState]:
    static, (lr, eps, step_size, bias_correction2_sqrt), step = plan_checked_step(
        be, params, grads, state, hyper, where=where, init_name=init_name)
    maxima = None
    if static["amsgrad"]:
        maxima = list(state.max_exp_avg_sq) if state.max_exp_avg_sq is not None else [None] * len(params)
    new_params, exp_avgs, exp_avg_sqs = [], [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        p, m, s, top = update_one(be.xp, p, g, state.exp_avg[i], state.exp_avg_sq[i],
                                  None if maxima is None else maxima[i], lr=lr, eps=eps, step_size=step_size,
                                  bias_correction2_sqrt=bias_correction2_sqrt, **static)
        if maxima is not None:
            maxima[i] = top
        new_params.append(p)
        exp_avgs.append(m)
        exp_avg_sqs.append(s)
    return new_params, AdamState(step=step, exp_avg=tuple(exp_avgs), exp_avg_sq=tuple(exp_avg_sqs),
                                 max_exp_avg_sq=state.max_exp_avg_sq if maxima is None else tuple(maxima))


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState, *, lr: float,
         betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
         maximize: bool = False, decoupled_weight_decay: bool = False) -> tuple[list[Any], AdamState]:
    """One ``torch.optim.Adam`` step (foreach=False), written against ``be.xp``; returns new arrays, modifies none.

    ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2``,
    ``p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``;
    ``g`` is ``-g`` when ``maximize``, then ``g + weight_decay p`` (or
    ``p <- p (1 - lr weight_decay)`` first when ``decoupled_weight_decay``);
    ``amsgrad`` divides by the running maximum of ``v``.
    """
    hyper = AdamHyperparameters.checked("adam_step", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                        amsgrad=amsgrad, maximize=maximize,
                                        decoupled_weight_decay=decoupled_weight_decay)
    return _step(be, params, grads, state, hyper, where="adam_step", init_name="adam_init")


def step_adamw(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState, *, lr: float,
               betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
               amsgrad: bool = False, maximize: bool = False,
               decoupled_weight_decay: bool = True) -> tuple[list[Any], AdamState]:
    """One ``torch.optim.AdamW`` step (foreach=False): Adam with ``p <- p (1 - lr weight_decay)`` before the
    moments, weight decay 0.01 by default; returns new arrays, modifies none."""
    _adamw_decoupled(decoupled_weight_decay)
    hyper = AdamHyperparameters.checked("adamw_step", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                        amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)
    return _step(be, params, grads, state, hyper, where="adamw_step", init_name="adamw_init")
