"""SGD (``torch.optim.SGD``): its hyperparameters, its explicit state, its checks and its functional step.

With ``g`` the gradient, ``mu`` the momentum, ``tau`` the dampening and
``lambda`` the weight decay, one step is torch's ``_single_tensor_sgd``, in its
order::

    g <- g + lambda * p
    b <- g                                  on the first step with momentum
    b <- mu * b + (1 - tau) * g             on every later one
    g <- g + mu * b  if nesterov,  else  g <- b        (with momentum)
    p <- p - lr * g

The state is a value passed in and returned (as in optax), not hidden in an
object, so a training loop can checkpoint it and any backend can resume it.
:func:`update_one` is the per-parameter arithmetic alone: the shared
:func:`step` runs it, and a backend may compile it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from softgrad.numerics import validation as v
from softgrad.numerics.optim.checks import check_real

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


@dataclass(frozen=True)
class SGDHyperparameters:
    """One SGD step's hyperparameters, checked (:meth:`checked`) and as Python numbers.

    :func:`update_one` branches on ``momentum != 0``, ``nesterov`` and
    ``weight_decay != 0`` and uses ``lr`` and ``dampening`` only in arithmetic,
    so a compiling backend may trace ``lr`` and hold the rest static.
    """

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    @classmethod
    def checked(cls, *, lr: Any, momentum: Any = 0.0, dampening: Any = 0.0, nesterov: Any = False,
                weight_decay: Any = 0.0) -> SGDHyperparameters:
        """The settings ``torch.optim.SGD`` accepts, as Python floats; those it rejects raise, with its reasons.

        Floats, so a NumPy scalar never changes the dtype of an update.
        """
        where = "sgd_step"
        values = {name: check_real(where, name, value) for name, value in (
            ("lr", lr), ("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay))}
        if nesterov and (values["momentum"] <= 0.0 or values["dampening"] != 0.0):
            raise ValueError(f"{where}: nesterov momentum requires momentum > 0 and dampening == 0")
        return cls(nesterov=bool(nesterov), **values)


def update_one(param: Any, grad: Any, momentum_buffer: Any, hyper: SGDHyperparameters) -> tuple[Any, Any]:
    """One parameter's SGD update, in torch's order: ``(new_param, new_buffer)``.

    ``momentum_buffer`` is ``None`` before the first step with momentum (the
    new buffer is then the gradient itself, ``buf = g``); the new buffer is
    ``None`` without momentum. Pure arithmetic on the arrays' own operators
    (no ``xp``): a backend may compile it (JAX does). The new buffer may be the
    very ``grad`` object: a caller that hands arrays back to a user who may
    write into them copies it (as :func:`step` does).
    """
    if hyper.weight_decay != 0.0:
        grad = grad + hyper.weight_decay * param
    buffer = None
    if hyper.momentum != 0.0:
        if momentum_buffer is None:
            buffer = grad
        else:
            buffer = hyper.momentum * momentum_buffer + (1.0 - hyper.dampening) * grad
        grad = grad + hyper.momentum * buffer if hyper.nesterov else buffer
    return param - hyper.lr * grad, buffer


def check_sgd_arguments(params: Sequence[Any], grads: Sequence[Any], state: SGDState,
                        shape_of: Callable[[Any], tuple[int, ...]], dtype_of: Callable[[Any], str]) -> None:
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
    hyper = SGDHyperparameters.checked(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                       weight_decay=weight_decay)
    return {"momentum": hyper.momentum, "dampening": hyper.dampening, "nesterov": hyper.nesterov,
            "weight_decay": hyper.weight_decay}


def init(be: Any, params: Sequence[Any]) -> SGDState:
    return SGDState(step=0, momentum_buffers=None)


def check_arguments(be: Any, params: Sequence[Any], grads: Sequence[Any], state: Any) -> None:
    """Everything ``step`` needs checked about its arrays and state, before anything is computed."""
    for i, (p, g) in enumerate(zip(params, grads)):
        v.check_backend_array(be, "sgd_step", f"parameter {i}", p)
        v.check_backend_array(be, "sgd_step", f"gradient {i}", g)
        v.check_float_array("sgd_step", f"parameter {i}", p.dtype)
    if isinstance(state, SGDState) and isinstance(state.momentum_buffers, (tuple, list)):
        for i, b in enumerate(state.momentum_buffers):
            if b is not None:  # a state made on another backend: named as such, not as a shape mismatch
                v.check_backend_array(be, "sgd_step", f"momentum buffer {i} of the state", b)
    check_sgd_arguments(params, grads, state, lambda a: tuple(a.shape), lambda a: v.dtype_name(a.dtype))


def checked_step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: Any, **hyperparameters: Any,
                 ) -> SGDHyperparameters:
    """The hyperparameters checked, then the arrays and state (:func:`check_arguments`): what every
    ``sgd_step``, shared or a backend's own, runs before it computes anything."""
    hyper = SGDHyperparameters.checked(**hyperparameters)
    check_arguments(be, params, grads, state)
    return hyper


def checked_call(be: Any, params: Any, grads: Any, state: Any, **hyperparameters: Any,
                 ) -> tuple[list, list, SGDHyperparameters]:
    """What a backend's own ``sgd_step`` runs first: ``params`` and ``grads`` as lists (a named error for
    anything else), then :func:`checked_step`. Returns ``(params, grads, hyperparameters)``."""
    params = v.array_list("sgd_step", "params", params)
    grads = v.array_list("sgd_step", "grads", grads)
    return params, grads, checked_step(be, params, grads, state, **hyperparameters)


def step(be: Any, params: Sequence[Any], grads: Sequence[Any], state: SGDState, *, lr: float,
         momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
         weight_decay: float = 0.0) -> tuple[list[Any], SGDState]:
    """One ``torch.optim.SGD`` step, written against ``be.xp``; returns new arrays, modifies none."""
    hyper = checked_step(be, params, grads, state, lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, weight_decay=weight_decay)
    old = None if hyper.momentum == 0.0 else (state.momentum_buffers or [None] * len(params))
    new_params, buffers = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        p, b = update_one(p, g, None if old is None else old[i], hyper)
        if b is g:  # buf = g on the first step: a copy, so that the state never aliases the caller's gradient
            b = be.xp.asarray(g, copy=True)
        new_params.append(p)
        buffers.append(b)
    new_buffers = state.momentum_buffers if old is None else tuple(buffers)
    return new_params, SGDState(step=state.step + 1, momentum_buffers=new_buffers)
