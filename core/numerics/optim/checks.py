"""Checks every optimizer shares: its hyperparameters, its parameters, and a state against its parameters.

Each check raises a clear error whose message starts with ``where`` (the
method the caller called, such as ``"adam_step"``), so the message names what
the user wrote, not a helper.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from softgrad.numerics import validation as v


def check_real(where: str, name: str, value: Any, *, below_one: bool = False) -> float:
    """``value`` as a Python float, or a clear error: a finite real ``>= 0`` (and ``< 1`` when ``below_one``).

    NumPy scalars are accepted (as torch accepts them) and returned as Python
    floats, so a ``numpy.float64`` never changes the dtype of a float32 update.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float's range, such as 10**400
        x = math.inf
    if below_one:
        if not (math.isfinite(x) and 0.0 <= x < 1.0):
            raise ValueError(f"{where}: {name} must be finite and in [0, 1), got {value!r}")
    elif not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{where}: {name} must be finite and >= 0, got {value!r}")
    return x


def check_flag(where: str, name: str, value: Any) -> bool:
    """``value`` as a Python bool: ``True`` or ``False`` (or NumPy's bool), never a truthy string or int."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{where}: {name} must be True or False, got {value!r}")


def check_betas(where: str, betas: Any) -> tuple[float, float]:
    """``(beta1, beta2)`` as Python floats, each in ``[0, 1)``; a list is accepted as torch accepts it."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{where}: betas must be a pair of real numbers (beta1, beta2), got {betas!r}")
    return (check_real(where, "betas[0]", betas[0], below_one=True),
            check_real(where, "betas[1]", betas[1], below_one=True))


def check_param_arrays(be: Any, where: str, params: Sequence[Any]) -> None:
    """Each parameter is a float32/float64 array of ``be``."""
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"{where}: params must be a list of arrays, got {type(params).__name__}")
    for i, p in enumerate(params):
        v.check_backend_array(be, where, f"parameter {i}", p)
        v.check_float_array(where, f"parameter {i}", p.dtype)


def check_state_step(where: str, state: Any, state_type: type, init: str) -> int:
    """The state is ``state_type`` (made by ``init``) and its step an int ``>= 0``; returns the step."""
    if not isinstance(state, state_type):
        raise TypeError(f"{where}: state must be the {state_type.__name__} from {init}, got {type(state).__name__}")
    if isinstance(state.step, bool) or not isinstance(state.step, numbers.Integral) or state.step < 0:
        raise TypeError(f"{where}: the state's step must be an int >= 0, got {state.step!r}")
    return int(state.step)


def check_grads(be: Any, where: str, params: Sequence[Any], grads: Sequence[Any]) -> None:
    """One gradient per parameter, each an array of ``be`` of its parameter's shape and dtype."""
    if not isinstance(grads, (tuple, list)):
        raise TypeError(f"{where}: grads must be a list of arrays, got {type(grads).__name__}")
    if len(params) != len(grads):
        raise ValueError(f"{where}: {len(params)} parameters but {len(grads)} gradients")
    for i, (p, g) in enumerate(zip(params, grads)):
        v.check_backend_array(be, where, f"gradient {i}", g)
        if p.shape == g.shape and p.dtype == g.dtype:  # the common case, without building names
            continue
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(f"{where}: parameter {i} has shape {tuple(p.shape)} but its gradient has shape "
                             f"{tuple(g.shape)}")
        if v.dtype_name(p.dtype) != v.dtype_name(g.dtype):
            raise TypeError(f"{where}: parameter {i} is {v.dtype_name(p.dtype)} but its gradient is "
                            f"{v.dtype_name(g.dtype)}")


def check_buffers(be: Any, where: str, params: Sequence[Any], buffers: Mapping[str, Any], init: str) -> None:
    """Each of the state's array fields (``buffers``: name to a tuple of arrays, or ``None`` where the field has
    not started) holds one array of ``be`` per parameter, of its parameter's shape and dtype."""
    for name, arrays in buffers.items():
        if arrays is None:
            continue
        if not isinstance(arrays, (tuple, list)):
            raise TypeError(f"{where}: the state's {name} must be one array per parameter, got "
                            f"{type(arrays).__name__}")
        if len(arrays) != len(params):
            raise ValueError(f"{where}: the state holds {len(arrays)} {name} arrays for {len(params)} parameters; "
                             f"was it made by {init} for these parameters?")
        for i, (b, p) in enumerate(zip(arrays, params)):
            # a state made on another backend: named as such, not as a shape mismatch
            v.check_backend_array(be, where, f"{name} {i} of the state", b)
            if b.shape != p.shape or v.dtype_name(b.dtype) != v.dtype_name(p.dtype):
                raise ValueError(
                    f"{where}: the state's {name} {i} has shape {tuple(b.shape)} and dtype "
                    f"{v.dtype_name(b.dtype)}, parameter {i} {tuple(p.shape)} and {v.dtype_name(p.dtype)}; "
                    "was the state made for these parameters?"
                )


def check_step_arguments(be: Any, where: str, params: Sequence[Any], grads: Sequence[Any], state: Any, *,
                         state_type: type, init: str, buffers: Mapping[str, Any]) -> int:
    """Check params, grads and the state's arrays line up one to one, shape and dtype; the state's step.

    ``buffers`` maps each array field of the state to its value (a tuple of
    arrays, or ``None`` where the field is not started yet). Returns the step.
    """
    step = check_state_step(where, state, state_type, init)
    check_param_arrays(be, where, params)
    check_grads(be, where, params, grads)
    check_buffers(be, where, params, buffers, init)
    return step
