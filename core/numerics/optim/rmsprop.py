"""RMSprop (``torch.optim.RMSprop``): its explicit state, its checks and its functional step.

With ``g`` the gradient (negated when ``maximize``), one step is torch's
``_single_tensor_rmsprop``, in its order::

    g <- g + weight_decay * p
    v <- v * alpha + ((1 - alpha) * g) * g
    a <- lerp(a, g, 1 - alpha);  avg <- sqrt(v - a * a) + eps     if centered
                                 avg <- sqrt(v) + eps             otherwise
    b <- b * momentum + g / avg;  p <- p - lr * b                 if momentum > 0
    p <- p + (-lr * g) / avg                                      otherwise
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from softgrad.numerics.optim.arithmetic import lerp
from softgrad.numerics.optim.checks import check_flag, check_param_arrays, check_real, check_step_arguments

#: torch.optim.RMSprop's defaults for every hyperparameter but lr (1e-2)
DEFAULTS: dict[str, Any] = {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False,
                            "maximize": False}


class RMSpropState(NamedTuple):
    """State of ``Backend.rmsprop_step``.

    step:
        how many steps have been taken.
    square_avg:
        the running average of the squared gradient, one array per parameter, zeros at init.
    momentum_buffer:
        ``None`` until the first step with ``momentum > 0``, which starts it
        from zeros (torch makes those zeros at its first step when momentum > 0).
    grad_avg:
        ``None`` until the first step with ``centered=True``, which starts it
        from zeros: the running average of the gradient.
    """

    step: int = 0
    square_avg: tuple[Any, ...] = ()
    momentum_buffer: tuple[Any, ...] | None = None
    grad_avg: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class RMSpropHyperparameters:
    """One RMSprop step's hyperparameters, checked (:meth:`checked`) and as Python numbers."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    maximize: bool = False

    @classmethod
    def checked(cls, *, lr: Any, alpha: Any, eps: Any, weight_decay: Any, momentum: Any, centered: Any,
                maximize: Any) -> RMSpropHyperparameters:
        """The hyperparameters as Python numbers, or a clear error."""
        where = "rmsprop_step"
        # in torch's order: lr, eps, momentum, weight_decay, alpha
        lr = check_real(where, "lr", lr)
        eps = check_real(where, "eps", eps)
        momentum = check_real(where, "momentum", momentum)
        weight_decay = check_real(where, "weight_decay", weight_decay)
        alpha = check_real(where, "alpha", alpha)
        if alpha > 1.0:  # torch accepts it; v <- alpha v + (1 - alpha) g^2 then goes negative and sqrt(v) NaN
            raise ValueError(f"{where}: alpha must lie in [0, 1] (the decay of the squared-gradient average), "
                             f"got {alpha!r}")
        return cls(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                   centered=check_flag(where, "centered", centered), maximize=check_flag(where, "maximize", maximize))


def check(lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
          centered: bool = False, maximize: bool = False) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    values = asdict(RMSpropHyperparameters.checked(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                                   momentum=momentum, centered=centered, maximize=maximize))
    del values["lr"]
    return values


def init(be: Any, params: Sequence[Any], **hyperparameters: Any) -> RMSpropState:
    """``RMSpropState(step=0, square_avg=zeros)``; the other buffers start when a step needs them."""
    check_param_arrays(be, "rmsprop_init", params)
    return RMSpropState(step=0, square_avg=tuple(be.xp.zeros_like(p) for p in params))


def update_one(xp: Any, p: Any, g: Any, square_avg: Any, momentum_buffer: Any, grad_avg: Any,
               hyper: RMSpropHyperparameters) -> tuple[Any, Any, Any, Any]:
    """One parameter's update, in torch's order: ``(p, square_avg, momentum_buffer, grad_avg)``.

    ``momentum_buffer`` (used when momentum > 0) and ``grad_avg`` (when
    centered) are ``None`` before their first step and stay ``None`` when
    unused. Pure arithmetic on ``xp``: a backend may compile it.
    """
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0:
        g = g + hyper.weight_decay * p
    square_avg = square_avg * hyper.alpha + ((1 - hyper.alpha) * g) * g
    if hyper.centered:
        previous = grad_avg if grad_avg is not None else xp.zeros_like(p)
        grad_avg = lerp(previous, g, 1 - hyper.alpha, p.dtype)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg)  # torch: addcmul(a, a, value=-1)
    else:
        avg = xp.sqrt(square_avg)
    avg = avg + hyper.eps
    if hyper.momentum > 0:
        # torch: buf.mul_(momentum).addcdiv_(g, avg); p.add_(buf, alpha=-lr)
        momentum_buffer = g / avg if momentum_buffer is None else momentum_buffer * hyper.momentum + g / avg
        return p + (-hyper.lr) * momentum_buffer, square_avg, momentum_buffer, grad_avg
    return p + ((-hyper.lr) * g) / avg, square_avg, momentum_buffer, grad_avg


def _check_state(be: Any, params: Sequence[Any], grads: Sequence[Any], state: Any) -> int:
    """The arrays and the state checked; the new step count."""
    ours = isinstance(state, RMSpropState)
    count = check_step_arguments(be, "rmsprop_step", params, grads, state, state_type=RMSpropState,
                                 init="rmsprop_init", buffers={
                                     "square_avg": state.square_avg if ours else None,
                                     "momentum_buffer": state.momentum_buffer if ours else None,
                                     "grad_avg": state.grad_avg if ours else None})
    if state.square_avg is None:
        raise TypeError("rmsprop_step: the state's square_avg must be one array per parameter; was it made by "
                        "rmsprop_init?")
    return count + 1


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: RMSpropState, *, lr: float,
         alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
         centered: bool = False, maximize: bool = False) -> tuple[list[Any], RMSpropState]:
    """One ``torch.optim.RMSprop`` step (foreach=False), written against ``be.xp``; returns new arrays, modifies none.

    ``v <- alpha v + (1 - alpha) g^2``; ``avg = sqrt(v - a^2) + eps`` with
    ``a <- alpha a + (1 - alpha) g`` when ``centered``, else ``sqrt(v) + eps``;
    ``p <- p - lr g / avg``, or with momentum ``b <- momentum b + g / avg``,
    ``p <- p - lr b``. ``g`` is ``-g`` when ``maximize``, then ``g + weight_decay p``.
    """
    hyper = RMSpropHyperparameters.checked(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                           momentum=momentum, centered=centered, maximize=maximize)
    count = _check_state(be, params, grads, state)
    nothing = [None] * len(params)
    buffers = list(state.momentum_buffer or nothing) if hyper.momentum > 0 else None
    grad_avgs = list(state.grad_avg or nothing) if hyper.centered else None
    new_params, square_avgs = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        p, square_avg, buffer, grad_avg = update_one(
            be.xp, p, g, state.square_avg[i], None if buffers is None else buffers[i],
            None if grad_avgs is None else grad_avgs[i], hyper)
        new_params.append(p)
        square_avgs.append(square_avg)
        if buffers is not None:
            buffers[i] = buffer
        if grad_avgs is not None:
            grad_avgs[i] = grad_avg
    return new_params, RMSpropState(
        step=count, square_avg=tuple(square_avgs),
        momentum_buffer=state.momentum_buffer if buffers is None else tuple(buffers),
        grad_avg=state.grad_avg if grad_avgs is None else tuple(grad_avgs),
    )
