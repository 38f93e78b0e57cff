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

The checks and the argument checks at the end of this module are shared with
:mod:`softgrad.numerics.optim.rmsprop` and :mod:`softgrad.numerics.optim.adagrad`.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from softgrad.numerics import validation as v

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


# ---- checks shared by the adaptive optimizers --------------------------------------------------------


def check_real(op: str, name: str, value: Any, *, below_one: bool = False) -> float:
    """``value`` as a Python float, or a clear error: a finite real ``>= 0`` (and ``< 1`` when ``below_one``).

    NumPy scalars are accepted (as torch accepts them) and returned as Python
    floats, so a ``numpy.float64`` never changes the dtype of a float32 update.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float's range, such as 10**400
        x = math.inf
    if below_one:
        if not (math.isfinite(x) and 0.0 <= x < 1.0):
            raise ValueError(f"{op}: {name} must be finite and in [0, 1), got {value!r}")
    elif not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{op}: {name} must be finite and >= 0, got {value!r}")
    return x


def check_flag(op: str, name: str, value: Any) -> bool:
    """``value`` as a Python bool: ``True`` or ``False`` (or NumPy's bool), never a truthy string or int."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def check_betas(op: str, betas: Any) -> tuple[float, float]:
    """``(beta1, beta2)`` as Python floats, each in ``[0, 1)``; a list is accepted as torch accepts it."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{op}: betas must be a pair of real numbers (beta1, beta2), got {betas!r}")
    return check_real(op, "betas[0]", betas[0], below_one=True), check_real(op, "betas[1]", betas[1], below_one=True)


def check_param_arrays(be: Any, op: str, params: Sequence[Any]) -> None:
    """Each parameter is a float32/float64 array of ``be``."""
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"{op}: params must be a list of arrays, got {type(params).__name__}")
    for i, p in enumerate(params):
        v.check_backend_array(be, op, f"parameter {i}", p)
        v.check_float_array(op, f"parameter {i}", p.dtype)


def check_step_arguments(be: Any, op: str, params: Sequence[Any], grads: Sequence[Any], state: Any,
                         state_type: type, init: str, buffers: Mapping[str, Any]) -> int:
    """Check params, grads and the state's arrays line up one to one, shape and dtype; the state's step.

    ``buffers`` maps each array field of the state to its value (a tuple of
    arrays, or ``None`` where the field is not started yet). Returns the step.
    """
    if not isinstance(state, state_type):
        raise TypeError(f"{op}: state must be the {state_type.__name__} from {init}, got {type(state).__name__}")
    if isinstance(state.step, bool) or not isinstance(state.step, numbers.Integral) or state.step < 0:
        raise TypeError(f"{op}: the state's step must be an int >= 0, got {state.step!r}")
    check_param_arrays(be, op, params)
    if not isinstance(grads, (tuple, list)):
        raise TypeError(f"{op}: grads must be a list of arrays, got {type(grads).__name__}")
    if len(params) != len(grads):
        raise ValueError(f"{op}: {len(params)} parameters but {len(grads)} gradients")
    for i, (p, g) in enumerate(zip(params, grads)):
        v.check_backend_array(be, op, f"gradient {i}", g)
        if p.shape == g.shape and p.dtype == g.dtype:  # the common case, without building names
            continue
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(f"{op}: parameter {i} has shape {tuple(p.shape)} but its gradient has shape "
                             f"{tuple(g.shape)}")
        if v.dtype_name(p.dtype) != v.dtype_name(g.dtype):
            raise TypeError(f"{op}: parameter {i} is {v.dtype_name(p.dtype)} but its gradient is "
                            f"{v.dtype_name(g.dtype)}")
    for name, arrays in buffers.items():
        if arrays is None:
            continue
        if not isinstance(arrays, (tuple, list)):
            raise TypeError(f"{op}: the state's {name} must be one array per parameter, got {type(arrays).__name__}")
        if len(arrays) != len(params):
            raise ValueError(f"{op}: the state holds {len(arrays)} {name} arrays for {len(params)} parameters; "
                             f"was it made by {init} for these parameters?")
        for i, (b, p) in enumerate(zip(arrays, params)):
            # a state made on another backend: named as such, not as a shape mismatch
            v.check_backend_array(be, op, f"{name} {i} of the state", b)
            if b.shape != p.shape or v.dtype_name(b.dtype) != v.dtype_name(p.dtype):
                raise ValueError(
                    f"{op}: the state's {name} {i} has shape {tuple(b.shape)} and dtype {v.dtype_name(b.dtype)}, "
                    f"parameter {i} {tuple(p.shape)} and {v.dtype_name(p.dtype)}; was the state made for these "
                    "parameters?"
                )
    return int(state.step)


def lerp(start: Any, end: Any, weight: float, dtype: Any) -> Any:
    """``torch.lerp(start, end, weight)`` with a scalar weight, evaluated as torch evaluates it.

    ``start + weight * (end - start)`` when ``|weight| < 0.5``, else
    ``end - (end - start) * (1 - weight)``: exact at both ends. Torch rounds
    the weight to the tensors' dtype before computing ``1 - weight``, so a
    float32 update does that too (for a weight near 1, such as ``1 - alpha``
    with a small alpha, ``1 - float32(w)`` and ``float32(1 - w)`` differ).
    """
    if v.dtype_name(dtype) == "float32":
        weight = struct.unpack("f", struct.pack("f", weight))[0]
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


# ---- Adam ------------------------------------------------------------------------------------------------


def _check(op: str, lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any,
           decoupled_weight_decay: Any) -> dict[str, Any]:
    lr = check_real(op, "lr", lr)  # checked first: torch checks lr first too
    beta1, beta2 = check_betas(op, betas)
    return {"lr": lr, "betas": (beta1, beta2), "eps": check_real(op, "eps", eps),
            "weight_decay": check_real(op, "weight_decay", weight_decay),
            "amsgrad": check_flag(op, "amsgrad", amsgrad), "maximize": check_flag(op, "maximize", maximize),
            "decoupled_weight_decay": check_flag(op, "decoupled_weight_decay", decoupled_weight_decay)}


def _adamw_decoupled(decoupled_weight_decay: Any) -> None:
    if decoupled_weight_decay is not True:
        raise ValueError("adamw_step: AdamW's weight decay is always decoupled (decoupled_weight_decay=True); "
                         f"got {decoupled_weight_decay!r}; for L2 weight decay use adam_step")


def check(lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
          amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False) -> dict[str, Any]:
    """The hyperparameters, checked and as Python numbers (what ``step`` takes besides lr)."""
    out = _check("adam_step", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
    del out["lr"]
    return out


def check_adamw(lr: float = 0.001, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.01, amsgrad: bool = False, maximize: bool = False,
                decoupled_weight_decay: bool = True) -> dict[str, Any]:
    """AdamW's hyperparameters, checked (``decoupled_weight_decay`` can only be True)."""
    out = _check("adamw_step", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
    _adamw_decoupled(decoupled_weight_decay)
    del out["lr"]
    return out


def _zeros_state(be: Any, op: str, params: Sequence[Any]) -> AdamState:
    check_param_arrays(be, op, params)
    xp = be.xp
    return AdamState(step=0, exp_avg=tuple(xp.zeros_like(p) for p in params),
                     exp_avg_sq=tuple(xp.zeros_like(p) for p in params), max_exp_avg_sq=None)


def init(be: Any, params: Sequence[Any], **hyperparameters: Any) -> AdamState:
    """``AdamState(step=0, exp_avg=zeros, exp_avg_sq=zeros, max_exp_avg_sq=None)``; hyperparameters are not needed."""
    return _zeros_state(be, "adam_init", params)


def init_adamw(be: Any, params: Sequence[Any], **hyperparameters: Any) -> AdamState:
    """AdamW's initial state: Adam's."""
    return _zeros_state(be, "adamw_init", params)


def plan_step(op: str, init_name: str, be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState, *,
              lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any,
              decoupled_weight_decay: Any) -> tuple[dict[str, Any], tuple[float, ...], int]:
    """Everything checked (raising a clear error), then what :func:`update_one` takes: the hyperparameters a
    compiled update may branch on (``static``), the numbers that change every step (``traced``: lr, eps, the
    step size and the square root of the second bias correction) and the new step count."""
    h = _check(op, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
    lr, (beta1, beta2), eps, weight_decay = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    step = check_step_arguments(be, op, params, grads, state, AdamState, init_name, {
        "exp_avg": state.exp_avg if isinstance(state, AdamState) else None,
        "exp_avg_sq": state.exp_avg_sq if isinstance(state, AdamState) else None,
        "max_exp_avg_sq": state.max_exp_avg_sq if isinstance(state, AdamState) else None,
    }) + 1
    if state.exp_avg is None or state.exp_avg_sq is None:
        raise TypeError(f"{op}: the state's exp_avg and exp_avg_sq must be one array per parameter; "
                        f"was it made by {init_name}?")
    # Python floats, as torch computes them from its step count
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    static = {"beta1": beta1, "beta2": beta2, "weight_decay": weight_decay, "amsgrad": h["amsgrad"],
              "maximize": h["maximize"], "decoupled": h["decoupled_weight_decay"]}
    return static, (lr, eps, lr / bias_correction1, bias_correction2**0.5), step


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


def _step(op: str, init_name: str, be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState,
          lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any,
          decoupled_weight_decay: Any) -> tuple[list[Any], AdamState]:
    static, (lr, eps, step_size, bias_correction2_sqrt), step = plan_step(
        op, init_name, be, params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
        amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
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
    return _step("adam_step", "adam_init", be, params, grads, state, lr, betas, eps, weight_decay, amsgrad, maximize,
                 decoupled_weight_decay)


def step_adamw(be: Any, params: Sequence[Any], grads: Sequence[Any], state: AdamState, *, lr: float,
               betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
               amsgrad: bool = False, maximize: bool = False,
               decoupled_weight_decay: bool = True) -> tuple[list[Any], AdamState]:
    """One ``torch.optim.AdamW`` step (foreach=False): Adam with ``p <- p (1 - lr weight_decay)`` before the
    moments, weight decay 0.01 by default; returns new arrays, modifies none."""
    _adamw_decoupled(decoupled_weight_decay)
    return _step("adamw_step", "adamw_init", be, params, grads, state, lr, betas, eps, weight_decay, amsgrad,
                 maximize, True)
