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
from typing import Any, NamedTuple

from softgrad.numerics.optim.adam import (
    check_flag,
    check_param_arrays,
    check_real,
    check_step_arguments,
    lerp,
)

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


def _check(lr: Any, alpha: Any, eps: Any, weight_decay: Any, momentum: Any, centered: Any,
           maximize: Any) -> dict[str, Any]:
    op = "rmsprop_step"
    # in torch's order: lr, eps, momentum, weight_decay, alpha
    lr = check_real(op, "lr", lr)
    eps = check_real(op, "eps", eps)
    momentum = check_real(op, "momentum", momentum)
    weight_decay = check_real(op, "weight_decay", weight_decay)
    alpha = check_real(op, "alpha", alpha)
    if alpha > 1.0:  # torch accepts it; v <- alpha v + (1 - alpha) g^2 then goes negative and sqrt(v) NaN
        raise ValueError(f"{op}: alpha must lie in [0, 1] (the decay of the squared-gradient average), got {alpha!r}")
    return {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum,
            "centered": check_flag(op, "centered", centered), "maximize": check_flag(op, "maximize", maximize)}


def check(lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
          centered: bool = False, maximize: bool = False) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    out = _check(lr, alpha, eps, weight_decay, momentum, centered, maximize)
    del out["lr"]
    return out


def init(be: Any, params: Sequence[Any], **hyperparameters: Any) -> RMSpropState:
    """``RMSpropState(step=0, square_avg=zeros)``; the other buffers start when a step needs them."""
    check_param_arrays(be, "rmsprop_init", params)
    return RMSpropState(step=0, square_avg=tuple(be.xp.zeros_like(p) for p in params))


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: RMSpropState, *, lr: float,
         alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
         centered: bool = False, maximize: bool = False) -> tuple[list[Any], RMSpropState]:
    """One ``torch.optim.RMSprop`` step (foreach=False), written against ``be.xp``; returns new arrays, modifies none.

    ``v <- alpha v + (1 - alpha) g^2``; ``avg = sqrt(v - a^2) + eps`` with
    ``a <- alpha a + (1 - alpha) g`` when ``centered``, else ``sqrt(v) + eps``;
    ``p <- p - lr g / avg``, or with momentum ``b <- momentum b + g / avg``,
    ``p <- p - lr b``. ``g`` is ``-g`` when ``maximize``, then ``g + weight_decay p``.
    """
    h = _check(lr, alpha, eps, weight_decay, momentum, centered, maximize)
    lr, alpha, eps, weight_decay, momentum = h["lr"], h["alpha"], h["eps"], h["weight_decay"], h["momentum"]
    centered, maximize = h["centered"], h["maximize"]
    ours = isinstance(state, RMSpropState)
    count = check_step_arguments(be, "rmsprop_step", params, grads, state, RMSpropState, "rmsprop_init", {
        "square_avg": state.square_avg if ours else None,
        "momentum_buffer": state.momentum_buffer if ours else None,
        "grad_avg": state.grad_avg if ours else None,
    }) + 1
    if state.square_avg is None:
        raise TypeError("rmsprop_step: the state's square_avg must be one array per parameter; was it made by "
                        "rmsprop_init?")
    xp = be.xp
    buffers = None
    if momentum > 0:
        buffers = list(state.momentum_buffer) if state.momentum_buffer is not None else [None] * len(params)
    grad_avgs = None
    if centered:
        grad_avgs = list(state.grad_avg) if state.grad_avg is not None else [None] * len(params)
    new_params, square_avgs = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        square_avg = state.square_avg[i] * alpha + ((1 - alpha) * g) * g
        square_avgs.append(square_avg)
        if grad_avgs is not None:
            previous = grad_avgs[i] if grad_avgs[i] is not None else xp.zeros_like(p)
            grad_avgs[i] = lerp(previous, g, 1 - alpha, p.dtype)
            avg = xp.sqrt(square_avg - grad_avgs[i] * grad_avgs[i])  # torch: addcmul(a, a, value=-1)
        else:
            avg = xp.sqrt(square_avg)
        avg = avg + eps
        if buffers is not None:
            # torch: buf.mul_(momentum).addcdiv_(g, avg); p.add_(buf, alpha=-lr)
            buffers[i] = g / avg if buffers[i] is None else buffers[i] * momentum + g / avg
            new_params.append(p + (-lr) * buffers[i])
        else:
            new_params.append(p + ((-lr) * g) / avg)
    return new_params, RMSpropState(
        step=count, square_avg=tuple(square_avgs),
        momentum_buffer=state.momentum_buffer if buffers is None else tuple(buffers),
        grad_avg=state.grad_avg if grad_avgs is None else tuple(grad_avgs),
    )
