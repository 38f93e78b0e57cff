"""Checks of the losses and optimizers plugged in from outside softgrad (entry points or ``register_*``).

softgrad's own losses and optimizers have their own checks against written
references; a plugged-in one has only its definition. So the kit checks, for
every registered unit whose definition lives outside softgrad:

- a loss: its value and gradient on the backend (``Loss.value_and_grad_on``
  and ``Loss.value_on``: the backend's own method where it has one, the
  definition otherwise) against the
  definition run on the NumPy backend in float64, from the same inputs, with
  ``reduction`` "mean" and "sum"; and (in float64) the definition's gradient
  against central finite differences of its value, so a plugin author whose
  analytic gradient is wrong sees it named;
- an optimizer: three steps on the backend (``Optimizer.init_on`` and
  ``Optimizer.step_on``) against the definition's steps on the NumPy backend in float64, the
  gradients left unmodified and the dtype kept.

A failure names the unit. With no plugged-in unit, both checks pass at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance.checks import Check, assert_close

#: fixed shapes: the checks test arithmetic, and a compiling backend (JAX) compiles each shape once
ROWS, COLUMNS = 4, 3
PARAM_SHAPES = ((4, 3), (3,))
STEPS = 3


def _outside(unit_function: Any) -> bool:
    return not getattr(unit_function, "__module__", "").startswith("softgrad.")


def plugged_in_losses() -> list:
    from softgrad.numerics.losses import LOSSES

    return [loss for loss in LOSSES.values() if _outside(loss.compute)]


def plugged_in_optimizers() -> list:
    from softgrad.numerics.optim import OPTIMIZERS

    return [optimizer for optimizer in OPTIMIZERS.values() if _outside(optimizer.step)]


def _reference_backend() -> Any:
    from softgrad.numerics.registry import get_backend

    return get_backend("numpy")


def _loss_inputs(targets: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float64 input and target of the shapes a loss of this ``targets`` kind takes (see ``Loss``)."""
    if targets == "class":
        return rng.standard_normal((ROWS, COLUMNS)), rng.integers(0, COLUMNS, ROWS)
    if targets == "binary":
        return rng.standard_normal(ROWS), rng.integers(0, 2, ROWS).astype(np.float64)
    return rng.standard_normal((ROWS, COLUMNS)), rng.standard_normal((ROWS, COLUMNS))


def _finite_difference_gradient(loss: Any, ref: Any, x: np.ndarray, target: np.ndarray, step: float = 1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        values = []
        for sign in (1.0, -1.0):
            moved = x.copy()
            moved[index] += sign * step
            values.append(float(loss.compute(ref, moved, target, op=loss.name, want_grad=False,
                                             reduction="sum")[0]))
        grad[index] = (values[0] - values[1]) / (2 * step)
    return grad


def plugged_in_losses_follow_their_definitions(be: Any, dtype: Any, data: Any) -> None:
    ref = _reference_backend()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    for loss in plugged_in_losses():
        x, target = _loss_inputs(loss.targets, rng)
        x = x.astype(dtype).astype(np.float64)  # representable in dtype: both sides see the same numbers
        on_be = be.asarray(target if loss.targets == "class" else target.astype(dtype))
        for reduction in ("mean", "sum"):
            what = f"plugged-in loss {loss.name!r} (reduction={reduction!r})"
            expected, expected_grad = loss.compute(ref, x, target, op=loss.name, want_grad=True, reduction=reduction)
            value, grad = loss.value_and_grad_on(be, be.asarray(x.astype(dtype)), on_be, reduction=reduction)
            scale = max(1.0, float(np.max(np.abs(expected))))
            assert_close(be.to_numpy(value), expected, dtype, scale=scale, what=f"{what}: value")
            assert_close(be.to_numpy(grad), expected_grad, dtype, scale=scale, what=f"{what}: gradient")
            alone = loss.value_on(be, be.asarray(x.astype(dtype)), on_be, reduction=reduction)
            assert_close(be.to_numpy(alone), expected, dtype, scale=scale, what=f"{what}: {loss.name}")
        if np.dtype(dtype) == np.float64:
            analytic = loss.compute(ref, x, target, op=loss.name, want_grad=True, reduction="sum")[1]
            np.testing.assert_allclose(analytic, _finite_difference_gradient(loss, ref, x, target), rtol=1e-5,
                                       atol=1e-6, err_msg=f"plugged-in loss {loss.name!r}: its gradient "
                                       "against central finite differences of its value")


def plugged_in_optimizers_follow_their_definitions(be: Any, dtype: Any, data: Any) -> None:
    ref = _reference_backend()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    for optimizer in plugged_in_optimizers():
        what = f"plugged-in optimizer {optimizer.name!r}"
        start = [rng.standard_normal(s).astype(dtype) for s in PARAM_SHAPES]
        grads = [[rng.standard_normal(s).astype(dtype) for s in PARAM_SHAPES] for _ in range(STEPS)]
        expected = [p.astype(np.float64) for p in start]
        expected_state = optimizer.initial_state(ref, expected)
        params = [be.asarray(p.copy()) for p in start]
        state = optimizer.init_on(be, params)
        for k in range(STEPS):
            given = [be.asarray(g.copy()) for g in grads[k]]
            expected, expected_state = optimizer.step(ref, expected, [g.astype(np.float64) for g in grads[k]],
                                                      expected_state, lr=optimizer.lr)
            params, state = optimizer.step_on(be, params, given, state, lr=optimizer.lr)
            for i, (p, e) in enumerate(zip(params, expected)):
                assert np.dtype(be.to_numpy(p).dtype) == np.dtype(dtype), f"{what}: parameter {i} changed dtype"
                assert_close(be.to_numpy(p), e, dtype, scale=max(1.0, float(np.max(np.abs(e)))),
                             what=f"{what}: parameter {i} after step {k + 1}")
            for i, (g, before) in enumerate(zip(given, grads[k])):
                np.testing.assert_array_equal(be.to_numpy(g), before,
                                              err_msg=f"{what}: step {k + 1} modified gradient {i}")


PLUGGED_IN_CHECKS: tuple[Check, ...] = (
    Check("plugged_in_losses_follow_their_definitions", "plugged-in losses",
          plugged_in_losses_follow_their_definitions),
    Check("plugged_in_optimizers_follow_their_definitions", "plugged-in optimizers",
          plugged_in_optimizers_follow_their_definitions),
)
