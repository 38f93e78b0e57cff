"""SGD (``torch.optim.SGD``): its explicit state, its checks and its functional step.

The state is a value passed in and returned (as in optax), not hidden in an
object, so a training loop can checkpoint it and any backend can resume it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

from softgrad.numerics import validation as v

#: torch.optim.SGD's defaults for every hyperparameter but lr
DEFAULTS = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}


class SGDState(NamedTuple):
    """State of ``Backend.sgd_step``.

    step:
        how many steps have been taken.
    momentum_buffers:
        ``None`` until the first step with ``momentum != 0``; then one backend
        array per parameter, ``buf = g`` on that first step as in
        ``torch.optim.SGD``.
    """

    step: int = 0
    momentum_buffers: tuple[Any, ...] | None = None


def check_sgd_hyperparameters(
    lr: float, momentum: float, dampening: float, nesterov: bool, weight_decay: float
) -> tuple[float, float, float, float]:
    """Reject the settings ``torch.optim.SGD`` rejects, with the same reasons.

    Returns ``(lr, momentum, dampening, weight_decay)`` as Python floats, so a
    NumPy scalar never changes the dtype of an update.
    """
    for name, value in (
        ("lr", lr),
        ("momentum", momentum),
        ("dampening", dampening),
        ("weight_decay", weight_decay),
    ):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"sgd_step: {name} must be a real number, got {value!r}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # an int beyond float's range, such as 10**400
            finite = False
        if not finite or not value >= 0.0:
            raise ValueError(f"sgd_step: {name} must be finite and >= 0, got {value!r}")
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("sgd_step: nesterov momentum requires momentum > 0 and dampening == 0")
    return float(lr), float(momentum), float(dampening), float(weight_decay)


def check_sgd_arguments(
    params: Sequence[Any], grads: Sequence[Any], state: SGDState, shape_of, dtype_of
) -> None:
    """Check that params, grads and state line up one to one, shape and dtype."""
    if not isinstance(state, SGDState):
        raise TypeError(f"sgd_step: state must be the SGDState from sgd_init, got {type(state).__name__}")
    if isinstance(state.step, bool) or not isinstance(state.step, numbers.Integral) or state.step < 0:
        raise TypeError(f"sgd_step: the state's step must be an int >= 0, got {state.step!r}")
    if state.momentum_buffers is not None and not isinstance(state.momentum_buffers, (tuple, list)):
        raise TypeError("sgd_step: the state's momentum_buffers must be None or one array per parameter, got "
                        f"{type(state.momentum_buffers).__name__}")
    if len(params) != len(grads):
        raise ValueError(f"sgd_step: {len(params)} parameters but {len(grads)} gradients")
    if state.momentum_buffers is not None and len(state.momentum_buffers) != len(params):
        raise ValueError(
            f"sgd_step: the state holds {len(state.momentum_buffers)} momentum buffers "
            f"for {len(params)} parameters; was it made by sgd_init for these parameters?"
        )
    buffers = state.momentum_buffers or [None] * len(params)
    for i, (p, g, b) in enumerate(zip(params, grads, buffers)):
        if b is not None and (b.shape != p.shape or b.dtype != p.dtype):
            raise ValueError(
                f"sgd_step: momentum buffer {i} has shape {shape_of(b)} and dtype {dtype_of(b)}, "
                f"parameter {i} {shape_of(p)} and {dtype_of(p)}; was the state made for these parameters?"
            )
        if p.shape == g.shape and p.dtype == g.dtype:  # the common case, without building names
            continue
        if shape_of(p) != shape_of(g):
            raise ValueError(
                f"sgd_step: parameter {i} has shape {shape_of(p)} but its gradient has shape {shape_of(g)}"
            )
        if dtype_of(p) != dtype_of(g):
            raise TypeError(
                f"sgd_step: parameter {i} is {dtype_of(p)} but its gradient is {dtype_of(g)}"
            )


def check(lr: float = 0.001, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
          weight_decay: float = 0.0) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    lr, momentum, dampening, weight_decay = check_sgd_hyperparameters(lr, momentum, dampening, nesterov,
                                                                      weight_decay)
    return {"momentum": momentum, "dampening": dampening, "nesterov": bool(nesterov), "weight_decay": weight_decay}


def init(be: Any, params: Sequence[Any]) -> SGDState:
    return SGDState(step=0, momentum_buffers=None)


def check_step(be: Any, params, grads, state, lr, momentum, dampening, nesterov, weight_decay):
    """Everything ``step`` needs checked, before anything is computed; the hyperparameters as floats."""
    hyperparameters = check_sgd_hyperparameters(lr, momentum, dampening, nesterov, weight_decay)
    for i, (p, g) in enumerate(zip(params, grads)):
        v.check_backend_array(be, "sgd_step", f"parameter {i}", p)
        v.check_backend_array(be, "sgd_step", f"gradient {i}", g)
        v.check_float_array("sgd_step", f"parameter {i}", p.dtype)
    if isinstance(state, SGDState) and isinstance(state.momentum_buffers, (tuple, list)):
        for i, b in enumerate(state.momentum_buffers):
            if b is not None:  # a state made on another backend: named as such, not as a shape mismatch
                v.check_backend_array(be, "sgd_step", f"momentum buffer {i} of the state", b)
    check_sgd_arguments(params, grads, state, lambda a: tuple(a.shape), lambda a: v.dtype_name(a.dtype))
    return hyperparameters


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: SGDState, *, lr: float,
         momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
         weight_decay: float = 0.0) -> tuple[list[Any], SGDState]:
    """One ``torch.optim.SGD`` step, written against ``be.xp``; returns new arrays, modifies none."""
    lr, momentum, dampening, weight_decay = check_step(be, params, grads, state, lr, momentum, dampening,
                                                       nesterov, weight_decay)
    xp = be.xp
    new_params = []
    buffers = None if momentum == 0.0 else list(state.momentum_buffers or [None] * len(params))
    for i, (p, g) in enumerate(zip(params, grads)):
        if weight_decay != 0.0:
            g = g + weight_decay * p
        if buffers is not None:
            if buffers[i] is None:
                buffers[i] = xp.asarray(g, copy=True)  # buf = g; a copy: it must not alias the gradient
            else:
                buffers[i] = momentum * buffers[i] + (1.0 - dampening) * g
            g = g + momentum * buffers[i] if nesterov else buffers[i]
        new_params.append(p - lr * g)
    new_buffers = state.momentum_buffers if buffers is None else tuple(buffers)
    return new_params, SGDState(step=state.step + 1, momentum_buffers=new_buffers)
