"""The adaptive optimizers' checks: Adam, AdamW, RMSprop and Adagrad against their references.

Each check draws every hyperparameter, runs 1 to 30 steps of ``be.X_step``
on small parameters from ``be.X_init`` and compares the parameters after each
step with the float64 NumPy reference written from torch's documented
algorithm (:mod:`backends.conformance.reference`) and, where torch is
installed, with ``torch.optim.X(foreach=False)`` run in float64. It also checks
that the gradients are not modified, that the dtype is kept and that the
state counts the steps. ``OPTIMIZER_CHECKS`` joins the kit's ``CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance import reference as ref
from softgrad.backends.conformance.checks import Check, _torch, assert_close
from softgrad.backends.conformance.strategies import (
    adagrad_settings,
    adam_settings,
    rmsprop_settings,
    with_gradient_scale,
)
from softgrad.numerics.methods import method_of

#: small shapes: the checks test the update rule, not the throughput
SHAPES = ((4, 3), (3,), (2, 1, 2))
MAX_STEPS = 30


def _trajectory(be, dtype, data, name: str, settings_strategy, reference: Callable, torch_class: str,
                init_keys: tuple[str, ...] = ()) -> None:
    """``steps`` of ``be.<name>_step`` against the float64 reference and torch, parameters compared after each."""
    settings, grad_scale = data.draw(with_gradient_scale(settings_strategy), label="settings, grad_scale")
    steps = data.draw(st.integers(1, MAX_STEPS), label="steps")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * grad_scale).astype(dtype) for s in SHAPES] for _ in range(steps)]
    lr = settings["lr"]
    hyper = {k: v for k, v in settings.items() if k != "lr"}
    expected = reference(params0, grads, [lr] * steps, **hyper)

    oracle = None
    torch = _torch()
    if torch is not None:
        tensors = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in params0]
        torch_hyper = {k: v for k, v in hyper.items() if not (torch_class == "AdamW" and k == "decoupled_weight_decay")}
        oracle = (tensors, getattr(torch.optim, torch_class)(tensors, lr=lr, foreach=False, **torch_hyper))

    params = [be.asarray(p.copy()) for p in params0]
    state = method_of(be, f"{name}_init")(params, **{k: hyper[k] for k in init_keys})
    assert state.step == 0
    step = method_of(be, f"{name}_step")
    # The error of each step is a few roundings of values no larger than the largest parameter so far
    # (an update is the difference of two parameters), and the gradients do not depend on the
    # parameters, so the errors add up: the absolute tolerance grows with the steps and that magnitude.
    magnitude = max(float(np.max(np.abs(p), initial=0.0)) for p in params0)
    for k in range(steps):
        before = [g.copy() for g in grads[k]]
        params, state = step(params, [be.asarray(g) for g in grads[k]], state, lr=lr, **hyper)
        assert state.step == k + 1, f"{name}_step: the state counts {state.step} steps after {k + 1}"
        for g, g0 in zip(grads[k], before):
            np.testing.assert_array_equal(g, g0)  # gradients are not modified
        if oracle is not None:
            for t, g in zip(oracle[0], grads[k]):
                t.grad = torch.from_numpy(g.astype(np.float64))
            oracle[1].step()
        magnitude = max(magnitude, *(float(np.max(np.abs(p), initial=0.0)) for p in expected[k]))
        for i, (ours, theirs) in enumerate(zip(params, expected[k])):
            ours = be.to_numpy(ours)
            assert ours.dtype == dtype, f"{name}_step: parameter {i} became {ours.dtype}"
            what = f"{name}_step, step {k + 1}, parameter {i}"
            assert_close(ours, theirs, dtype, scale=(k + 1) * magnitude, what=what + " (reference)")
            if oracle is not None:
                assert_close(ours, oracle[0][i].detach().numpy(), dtype, scale=(k + 1) * magnitude,
                             what=what + " (torch.optim)")


def adam_matches_the_reference_update(be, dtype, data):
    """``adam_step`` against torch.optim.Adam's rule in float64, every hyperparameter drawn."""
    _trajectory(be, dtype, data, "adam", adam_settings(), ref.adam_steps, "Adam")


def adamw_matches_the_reference_update(be, dtype, data):
    """``adamw_step`` against torch.optim.AdamW (decoupled weight decay) in float64."""
    _trajectory(be, dtype, data, "adamw", adam_settings(decoupled_weight_decay=True), ref.adam_steps, "AdamW")


def rmsprop_matches_the_reference_update(be, dtype, data):
    """``rmsprop_step`` against torch.optim.RMSprop's rule in float64 (centered, momentum, ... drawn)."""
    _trajectory(be, dtype, data, "rmsprop", rmsprop_settings(), ref.rmsprop_steps, "RMSprop")


def adagrad_matches_the_reference_update(be, dtype, data):
    """``adagrad_step`` against torch.optim.Adagrad's rule in float64; the initial sum given to adagrad_init."""
    _trajectory(be, dtype, data, "adagrad", adagrad_settings(), ref.adagrad_steps, "Adagrad",
                init_keys=("initial_accumulator_value",))


OPTIMIZER_CHECKS: tuple[Check, ...] = (
    Check("adam_matches_the_reference_update", "adam_step", adam_matches_the_reference_update),
    Check("adamw_matches_the_reference_update", "adamw_step", adamw_matches_the_reference_update),
    Check("rmsprop_matches_the_reference_update", "rmsprop_step", rmsprop_matches_the_reference_update),
    Check("adagrad_matches_the_reference_update", "adagrad_step", adagrad_matches_the_reference_update),
)
