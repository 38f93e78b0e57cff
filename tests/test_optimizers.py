"""Adam, AdamW, RMSprop and Adagrad against torch.optim (foreach=False), step by step, for random hyperparameters.

The trajectories are compared with torch run in the same dtype. Tolerance,
elementwise, after step ``k``: ``|ours - torch| <= rtol_k * scale``, with
``scale`` the largest magnitude the parameter has had so far (its initial
value included). An update is the difference of two parameters, so every
value a step rounds is at most about ``scale``; that is also what keeps a
parameter passing through 0 from failing a purely relative test.

* float64: ``rtol_k = 1e-12`` at every step. Our steps evaluate torch's
  expressions in torch's order, so the only differences are the fused
  multiply-adds of torch's vectorized CPU kernels (one rounding where NumPy
  rounds twice): measured below 2e-15 over 200 steps.
* float32: ``rtol_k = 1e-6 * k``. The same one-rounding differences are 6e-8
  of ``scale`` each (float32's unit roundoff), a step makes a few of them, and
  they add up rather than compound, because the gradients do not depend on the
  parameters (weight decay feeds a parameter's error back scaled by
  ``lr * weight_decay`` only): so linear growth, from about 1e-6 at step 1.
  Measured below 1e-6 over 200 steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from softgrad.backends.conformance.strategies import (
    adagrad_settings,
    adam_settings,
    rmsprop_settings,
    with_gradient_scale,
)
from softgrad.numerics.optim import Optimizer, get_optimizer
from softgrad.numerics.optim.adagrad import AdagradState
from softgrad.numerics.optim.adam import AdamState
from softgrad.numerics.optim.rmsprop import RMSpropState
from softgrad.numerics.optim.sgd import SGDState

torch = pytest.importorskip("torch")

SHAPES = [(3, 2), (2,)]
STEPS = st.integers(1, 200)
SEEDS = st.integers(0, 2**32 - 1)
TORCH_CLASS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
#: hyperparameters that are the initial state's, given to X_init as well as to X_step
INIT_KEYS = {"adagrad": ("initial_accumulator_value",)}


def _torch_optimizer(name: str, tensors, settings: dict):
    kwargs = dict(settings)
    if name == "adamw":
        kwargs.pop("decoupled_weight_decay", None)  # torch.optim.AdamW has no such argument: it is always on
    return getattr(torch.optim, TORCH_CLASS[name])(tensors, foreach=False, **kwargs)


def _init(be, name: str, params, settings: dict):
    return getattr(be, f"{name}_init")(params, **{k: settings[k] for k in INIT_KEYS.get(name, ()) if k in settings})


def check_against_torch(be, name: str, dtype, settings: dict, steps: int, seed: int, grad_scale: float = 1.0) -> float:
    """``steps`` of ``be.<name>_step`` and of torch.optim in ``dtype``; returns the largest error / scale."""
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in initial]  # the same dtype as ours
    optimizer = _torch_optimizer(name, tensors, settings)
    params = [be.asarray(p.copy()) for p in initial]
    state = _init(be, name, params, settings)
    hyper = {k: v for k, v in settings.items() if k != "lr"}
    scale = [np.abs(p.astype(np.float64)) for p in initial]
    worst = 0.0
    step = getattr(be, f"{name}_step")
    for k in range(1, steps + 1):
        grads = [(rng.standard_normal(s) * grad_scale).astype(dtype) for s in SHAPES]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        optimizer.step()
        before = [g.copy() for g in grads]
        params, state = step(params, [be.asarray(g) for g in grads], state, lr=settings["lr"], **hyper)
        assert state.step == k
        rtol = 1e-12 if dtype == np.float64 else 1e-6 * k
        for i, (ours, theirs) in enumerate(zip(params, tensors)):
            ours = be.to_numpy(ours)
            assert ours.dtype == dtype
            expected = theirs.detach().numpy().astype(np.float64)
            scale[i] = np.maximum(scale[i], np.abs(expected))
            error = np.abs(ours.astype(np.float64) - expected)
            ratio = float(np.max(error / (rtol * scale[i]), initial=0.0)) if np.any(error) else 0.0
            assert ratio <= 1.0, (f"{name}_step, step {k}, parameter {i}: error {error.max():.3g} exceeds "
                                  f"{rtol:.1g} x its scale\nours  {ours}\ntorch {expected}")
            worst = max(worst, float(np.max(error / np.maximum(scale[i], 1e-300))))
        for g, g0 in zip(grads, before):
            np.testing.assert_array_equal(g, g0)  # gradients are not modified
    return worst


# ---- (a) property tests: every backend, both dtypes, 1 to 200 steps ----------------------------------------


@given(case=with_gradient_scale(adam_settings()), steps=STEPS, seed=SEEDS)
def test_adam_matches_torch_optim_adam(be, dtype, case, steps, seed):
    check_against_torch(be, "adam", dtype, case[0], steps, seed, case[1])


@given(case=with_gradient_scale(adam_settings(decoupled_weight_decay=True)), steps=STEPS, seed=SEEDS)
def test_adamw_matches_torch_optim_adamw(be, dtype, case, steps, seed):
    check_against_torch(be, "adamw", dtype, case[0], steps, seed, case[1])


@given(case=with_gradient_scale(rmsprop_settings()), steps=STEPS, seed=SEEDS)
def test_rmsprop_matches_torch_optim_rmsprop(be, dtype, case, steps, seed):
    check_against_torch(be, "rmsprop", dtype, case[0], steps, seed, case[1])


@given(case=with_gradient_scale(adagrad_settings()), steps=STEPS, seed=SEEDS)
def test_adagrad_matches_torch_optim_adagrad(be, dtype, case, steps, seed):
    check_against_torch(be, "adagrad", dtype, case[0], steps, seed, case[1])


# ---- (b) explicit cases -----------------------------------------------------------------------------------


def _adam_by_hand(p, grads, lr, beta1, beta2, eps):
    """Adam on Python floats, one parameter: m_hat / (sqrt(v_hat) + eps), the bias corrections before eps."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_adam_bias_correction_and_eps_placement(be):
    """With eps = 1 a misplaced eps changes the result at the first digits: inside the root, or added
    before the second moment is bias-corrected, or without the bias corrections at all."""
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1.0
    p0, g = [1.0, -2.0], [[0.5, -3.0], [2.0, 1.0]]
    # by hand, step 1: m_hat = g, v_hat = g^2, so p1 = p0 - lr g / (|g| + 1)
    assert _adam_by_hand(1.0, [0.5], lr, beta1, beta2, eps) == pytest.approx(1.0 - 0.1 * 0.5 / 1.5, rel=1e-15)
    assert _adam_by_hand(-2.0, [-3.0], lr, beta1, beta2, eps) == pytest.approx(-2.0 + 0.1 * 3.0 / 4.0, rel=1e-15)
    expected = [[_adam_by_hand(p, [gs[i] for gs in g[:k]], lr, beta1, beta2, eps) for i, p in enumerate(p0)]
                for k in (1, 2)]
    # the wrong placements, step 2, parameter 0 (g = 0.5 then 2.0), differ from the right one by > 1%
    m, v = 0.9 * 0.05 + 0.1 * 2.0, 0.999 * 0.00025 + 0.001 * 4.0
    p1 = expected[0][0]
    wrong = [p1 - lr * (m / 0.19) / math.sqrt(v / (1 - 0.999**2) + eps),  # eps inside the root
             p1 - lr / 0.19 * m / (math.sqrt(v) + eps) * math.sqrt(1 - 0.999**2),  # eps before the correction
             p1 - lr * m / (math.sqrt(v) + eps)]  # no bias correction
    assert all(abs(w - expected[1][0]) > 1e-2 * abs(expected[1][0] - p1) for w in wrong)

    params = [be.asarray(np.array(p0))]
    state = be.adam_init(params)
    for k in range(2):
        params, state = be.adam_step(params, [be.asarray(np.array(g[k]))], state, lr=lr, betas=(beta1, beta2),
                                     eps=eps)
        np.testing.assert_allclose(be.to_numpy(params[0]), expected[k], rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_defaults_and_learning_rate_are_torchs(name):
    optimizer = get_optimizer(name)
    theirs = getattr(torch.optim, {**TORCH_CLASS, "sgd": "SGD"}[name])([torch.zeros(1, requires_grad=True)]).defaults
    assert optimizer.lr == theirs["lr"]
    for key, value in optimizer.defaults.items():
        assert theirs[key] == value, key
    assert optimizer.check(**optimizer.defaults) == {k: optimizer.defaults[k] for k in optimizer.defaults}


def test_optimizer_lr_field_defaults_for_existing_definitions():
    sgd = get_optimizer("sgd")
    plain = Optimizer("plain", SGDState, sgd.init, sgd.step, sgd.check)
    assert plain.lr == 1e-3 and dict(plain.defaults) == {}


def test_adamw_with_its_defaults_is_torch_optim_adamw(be, dtype):
    """be.adamw_step(params, grads, state, lr=1e-3): weight decay 0.01, decoupled, as torch.optim.AdamW()."""
    rng = np.random.default_rng(3)
    initial = [rng.standard_normal(s).astype(dtype) * 10 for s in SHAPES]  # large: the decay shows
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in initial]
    reference = torch.optim.AdamW(tensors, foreach=False)
    plain_adam = [be.asarray(p.copy()) for p in initial]
    params = [be.asarray(p.copy()) for p in initial]
    state, adam_state = be.adamw_init(params), be.adam_init(params)
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        reference.step()
        params, state = be.adamw_step(params, [be.asarray(g) for g in grads], state, lr=1e-3)
        plain_adam, adam_state = be.adam_step(plain_adam, [be.asarray(g) for g in grads], adam_state, lr=1e-3)
    rtol = 1e-12 if dtype == np.float64 else 5e-6
    for ours, theirs in zip(params, tensors):
        np.testing.assert_allclose(be.to_numpy(ours), theirs.detach().numpy(), rtol=rtol, atol=0)
    # the same as adam_step with weight_decay=0.01, decoupled, and not the same as Adam's L2 decay of 0
    assert not np.allclose(be.to_numpy(plain_adam[0]), be.to_numpy(params[0]), rtol=1e-7, atol=0)


def test_amsgrad_divides_by_the_running_maximum(be):
    """Large gradients, then small ones: v falls, the maximum does not, so amsgrad's steps are smaller."""
    params0 = [be.asarray(np.zeros(3))]
    grads = [np.full(3, 10.0), np.full(3, 10.0), np.full(3, 0.1), np.full(3, 0.1)]
    tensors = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    reference = torch.optim.Adam(tensors, lr=0.1, betas=(0.5, 0.5), amsgrad=True, foreach=False)
    results = {}
    for amsgrad in (False, True):
        params, state = params0, be.adam_init(params0)
        assert state.max_exp_avg_sq is None
        running_max = np.zeros(3)
        for g in grads:
            params, state = be.adam_step(params, [be.asarray(g)], state, lr=0.1, betas=(0.5, 0.5), amsgrad=amsgrad)
            if amsgrad:
                running_max = np.maximum(running_max, be.to_numpy(state.exp_avg_sq[0]))
                np.testing.assert_array_equal(be.to_numpy(state.max_exp_avg_sq[0]), running_max)
            else:
                assert state.max_exp_avg_sq is None
        results[amsgrad] = be.to_numpy(params[0])
    for g in grads:
        tensors[0].grad = torch.from_numpy(g)
        reference.step()
    np.testing.assert_allclose(results[True], tensors[0].detach().numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(reference.state[tensors[0]]["max_exp_avg_sq"].numpy(), running_max, rtol=1e-12)
    assert np.all(np.abs(results[True]) < np.abs(results[False]))  # the last two steps were damped


@pytest.mark.parametrize("name, settings", [
    ("adam", dict(lr=0.1)), ("adam", dict(lr=0.1, amsgrad=True)), ("adamw", dict(lr=0.1, weight_decay=0.0)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True)), ("adagrad", dict(lr=0.1, lr_decay=0.1)),
])
def test_maximize_is_a_step_on_the_negated_gradient(be, name, settings):
    """Without weight decay, maximize=True with g is exactly maximize=False with -g (negation is exact)."""
    rng = np.random.default_rng(5)
    p0 = [be.asarray(rng.standard_normal(s)) for s in SHAPES]
    ours, theirs = p0, p0
    our_state, their_state = _init(be, name, p0, settings), _init(be, name, p0, settings)
    step = getattr(be, f"{name}_step")
    for _ in range(3):
        g = [rng.standard_normal(s) for s in SHAPES]
        ours, our_state = step(ours, [be.asarray(x) for x in g], our_state, maximize=True, **settings)
        theirs, their_state = step(theirs, [be.asarray(-x) for x in g], their_state, **settings)
    for a, b, first in zip(ours, theirs, p0):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
        assert not np.array_equal(be.to_numpy(a), be.to_numpy(first))


def test_maximize_negates_before_weight_decay(be):
    """torch negates the gradient, then adds weight_decay * p: the decay still pulls towards 0."""
    p = [be.asarray(np.array([2.0]))]
    settings = dict(lr=0.1, weight_decay=0.5, maximize=True)
    for name in ("adam", "rmsprop", "adagrad"):
        tensors = [torch.tensor([2.0], dtype=torch.float64, requires_grad=True)]
        tensors[0].grad = torch.tensor([0.25], dtype=torch.float64)
        _torch_optimizer(name, tensors, settings).step()
        new, _ = getattr(be, f"{name}_step")(p, [be.asarray(np.array([0.25]))], _init(be, name, p, settings),
                                             **settings)
        # g' = -0.25 + 0.5 * 2 = 0.75 > 0: the parameter decreases although maximize is set
        assert be.to_numpy(new[0])[0] < 2.0
        np.testing.assert_allclose(be.to_numpy(new[0]), tensors[0].detach().numpy(), rtol=1e-14)


def test_adagrad_initial_accumulator_value_is_given_to_init(be):
    params = [be.asarray(np.ones((2, 2)))]
    state = be.adagrad_init(params, initial_accumulator_value=0.5)
    assert isinstance(state, AdagradState) and state.step == 0
    np.testing.assert_array_equal(be.to_numpy(state.sum[0]), np.full((2, 2), 0.5))
    # the whole set of hyperparameters is accepted (fit passes them all), lr included
    everything = {"lr": 0.1, **get_optimizer("adagrad").defaults, "initial_accumulator_value": 2.0}
    np.testing.assert_array_equal(be.to_numpy(be.adagrad_init(params, **everything).sum[0]), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(be.to_numpy(get_optimizer("adagrad").init_on(be, params, **everything).sum[0]),
                                  np.full((2, 2), 2.0))
    # SGD's init takes no hyperparameter: init_on drops them, be.sgd_init(params) is unchanged
    assert get_optimizer("sgd").init_on(be, params, lr=0.1, momentum=0.9) == SGDState(0, None)
    assert be.sgd_init(params) == SGDState(0, None)
    with pytest.raises(TypeError, match="adagrad has no hyperparameter 'initial_acumulator_value'"):
        be.adagrad_init(params, initial_acumulator_value=0.5)
    with pytest.raises(ValueError, match="adagrad_init: initial_accumulator_value must be finite and >= 0"):
        be.adagrad_init(params, initial_accumulator_value=-1.0)


def test_init_on_a_backend_without_the_method():
    """A backend that is not built on the shared implementation: init_on calls the optimizer's init. (Given
    the hooks' defaults by complete(), as get_backend gives them to such a plugin.)"""
    import array_api_compat.numpy as xp
    from softgrad.numerics.protocol import complete

    class Bare:
        pass

    bare = Bare()
    bare.xp = xp
    bare = complete(bare)
    assert not hasattr(bare, "adagrad_init") and not hasattr(bare, "adam_init")
    params = [np.ones(3)]
    state = get_optimizer("adagrad").init_on(bare, params, initial_accumulator_value=0.25, lr=0.1)
    np.testing.assert_array_equal(state.sum[0], np.full(3, 0.25))
    assert get_optimizer("adam").init_on(bare, params).exp_avg[0].shape == (3,)


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "adagrad"])
def test_no_parameters_counts_the_step(be, name):
    settings = {"lr": 0.1, **({"momentum": 0.9, "centered": True} if name == "rmsprop" else {}),
                **({"amsgrad": True} if name.startswith("adam") else {})}
    params, state = getattr(be, f"{name}_step")([], [], getattr(be, f"{name}_init")([]), **settings)
    assert params == [] and state.step == 1


def test_numpy_scalar_hyperparameters_keep_float32(be):
    params = [be.asarray(np.ones(3, np.float32))]
    grads = [be.asarray(np.full(3, 0.5, np.float32))]
    cases = {
        "adam": dict(lr=np.float64(0.1), betas=[np.float64(0.9), np.float32(0.99)], eps=np.float64(1e-8),
                     weight_decay=np.float64(0.01), amsgrad=np.bool_(True)),
        "rmsprop": dict(lr=np.float64(0.1), alpha=np.float64(0.9), momentum=np.float64(0.9), centered=np.bool_(True)),
        "adagrad": dict(lr=np.float64(0.1), lr_decay=np.float64(0.1), eps=np.float64(1e-10)),
    }
    for name, settings in cases.items():
        new, state = getattr(be, f"{name}_step")(params, grads, getattr(be, f"{name}_init")(params), **settings)
        new, state = getattr(be, f"{name}_step")(new, grads, state, **settings)
        assert be.to_numpy(new[0]).dtype == np.float32, name
        for field in state[1:]:
            if field is not None:
                assert be.to_numpy(field[0]).dtype == np.float32, name


# ---- (c) bad input: clear errors --------------------------------------------------------------------------


BAD_HYPERPARAMETERS = [
    ("adam", dict(lr=-0.1), ValueError, "adam_step: lr must be finite and >= 0"),
    ("adam", dict(lr=float("nan")), ValueError, "lr must be finite"),
    ("adam", dict(lr=10**400), ValueError, "lr must be finite"),
    ("adam", dict(lr="0.1"), TypeError, "lr must be a real number"),
    ("adam", dict(lr=0.1, betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be finite and in \[0, 1\)"),
    ("adam", dict(lr=0.1, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be finite and in \[0, 1\)"),
    ("adam", dict(lr=0.1, betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be"),
    ("adam", dict(lr=0.1, betas=(0.9, float("nan"))), ValueError, r"betas\[1\] must be finite"),
    ("adam", dict(lr=0.1, betas=0.9), TypeError, r"betas must be a pair of real numbers"),
    ("adam", dict(lr=0.1, betas=(0.9,)), TypeError, r"betas must be a pair"),
    ("adam", dict(lr=0.1, betas="0.9,0.999"), TypeError, r"betas must be a pair"),
    ("adam", dict(lr=0.1, betas=(True, 0.9)), TypeError, r"betas\[0\] must be a real number"),
    ("adam", dict(lr=0.1, eps=-1e-8), ValueError, "eps must be finite and >= 0"),
    ("adam", dict(lr=0.1, eps=float("inf")), ValueError, "eps must be finite"),
    ("adam", dict(lr=0.1, weight_decay=-0.01), ValueError, "weight_decay must be finite and >= 0"),
    ("adam", dict(lr=0.1, amsgrad="yes"), TypeError, "amsgrad must be True or False"),
    ("adam", dict(lr=0.1, maximize=1), TypeError, "maximize must be True or False"),
    ("adam", dict(lr=0.1, decoupled_weight_decay=None), TypeError, "decoupled_weight_decay must be True or False"),
    ("adam", dict(lr=0.1, momentum=0.9), TypeError, "momentum"),
    ("adamw", dict(lr=0.1, decoupled_weight_decay=False), ValueError, "adamw_step: AdamW's weight decay is always"),
    ("adamw", dict(lr=-1.0), ValueError, "adamw_step: lr must be"),
    ("rmsprop", dict(lr=-0.1), ValueError, "rmsprop_step: lr must be finite and >= 0"),
    ("rmsprop", dict(lr=0.1, alpha=-0.5), ValueError, "alpha must be finite and >= 0"),
    ("rmsprop", dict(lr=0.1, momentum=-0.9), ValueError, "momentum must be finite and >= 0"),
    ("rmsprop", dict(lr=0.1, eps=-1.0), ValueError, "eps must be finite and >= 0"),
    ("rmsprop", dict(lr=0.1, weight_decay=float("nan")), ValueError, "weight_decay must be finite"),
    ("rmsprop", dict(lr=0.1, centered=1), TypeError, "centered must be True or False"),
    ("adagrad", dict(lr=-0.1), ValueError, "adagrad_step: lr must be finite and >= 0"),
    ("adagrad", dict(lr=0.1, lr_decay=-0.1), ValueError, "lr_decay must be finite and >= 0"),
    ("adagrad", dict(lr=0.1, initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value must be"),
    ("adagrad", dict(lr=0.1, eps=float("inf")), ValueError, "eps must be finite"),
    ("adagrad", dict(lr=0.1, maximize="False"), TypeError, "maximize must be True or False"),
]


@pytest.mark.parametrize("name, settings, error, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_named(be, name, settings, error, message):
    params = [be.asarray(np.ones(2))]
    state = getattr(be, f"{name}_init")(params)
    with pytest.raises(error, match=message):
        getattr(be, f"{name}_step")(params, [be.asarray(np.ones(2))], state, **settings)


@pytest.mark.parametrize("name, settings, error, message", BAD_HYPERPARAMETERS)
def test_check_rejects_what_step_rejects(name, settings, error, message):
    """fit checks the hyperparameters with Optimizer.check before the first step."""
    with pytest.raises(error, match=message.split(": ", 1)[-1]):
        get_optimizer(name).check(**settings)


def test_check_normalises():
    assert get_optimizer("adam").check(lr=np.float32(0.1), betas=[np.float64(0.5), 0.9]) == {
        "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
        "decoupled_weight_decay": False}
    assert type(get_optimizer("adam").check(eps=np.float32(0.5))["eps"]) is float
    assert get_optimizer("adamw").check()["weight_decay"] == 0.01


OTHER_STATES = {"adam": ("rmsprop", "RMSpropState"), "adamw": ("sgd", "SGDState"), "rmsprop": ("adagrad", "AdagradState"),
                "adagrad": ("adam", "AdamState")}


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "adagrad"])
def test_mismatched_arguments_are_named(be, name):
    step, init = getattr(be, f"{name}_step"), getattr(be, f"{name}_init")
    params = [be.asarray(np.ones((2, 3))), be.asarray(np.ones(3))]
    grads = [be.asarray(np.ones((2, 3))), be.asarray(np.ones(3))]
    state = init(params)
    state_type = {"adam": "AdamState", "adamw": "AdamState", "rmsprop": "RMSpropState", "adagrad": "AdagradState"}
    with pytest.raises(ValueError, match=f"{name}_step: 2 parameters but 1 gradients"):
        step(params, grads[:1], state, lr=0.1)
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(3,\) but its gradient has shape \(4,\)"):
        step(params, [grads[0], be.asarray(np.ones(4))], state, lr=0.1)
    with pytest.raises(TypeError, match="parameter 0 is float64 but its gradient is float32"):
        step(params, [be.asarray(np.ones((2, 3), np.float32)), grads[1]], state, lr=0.1)
    other, other_type = OTHER_STATES[name]
    with pytest.raises(TypeError, match=f"state must be the {state_type[name]} from {name}_init, got {other_type}"):
        step(params, grads, getattr(be, f"{other}_init")(params), lr=0.1)
    with pytest.raises(TypeError, match=f"state must be the {state_type[name]}"):
        step(params, grads, {"step": 0}, lr=0.1)
    # a state made for other parameters
    with pytest.raises(ValueError, match=f"the state holds 1 .* arrays for 2 parameters; was it made by {name}_init"):
        step(params, grads, init(params[:1]), lr=0.1)
    with pytest.raises(ValueError, match=r"the state's \w+ 0 has shape \(3,\) and dtype float64, parameter 0 \(2, 3\)"):
        step(params, grads, init(params[::-1]), lr=0.1)
    with pytest.raises(TypeError, match="the state's step must be an int >= 0"):
        step(params, grads, state._replace(step=-1), lr=0.1)
    # arrays that are not this backend's, and integer parameters
    with pytest.raises(TypeError, match="parameter 1 is a builtins.list, not an array of the"):
        step([params[0], [1.0, 1.0, 1.0]], grads, state, lr=0.1)
    with pytest.raises(TypeError, match="gradient 0 is a builtins.list, not an array of the"):
        step(params, [[1.0] * 3, grads[1]], state, lr=0.1)
    first_field = state._fields[1]
    with pytest.raises(TypeError, match=f"{first_field} 0 of the state is a builtins.list, not an array of the"):
        step(params, grads, state._replace(**{first_field: ([1.0], getattr(state, first_field)[1])}), lr=0.1)
    with pytest.raises(TypeError, match="parameter 0 must be float32 or float64, got int64"):
        step([be.asarray(np.ones(3, np.int64))], [be.asarray(np.ones(3, np.int64))], state, lr=0.1)
    with pytest.raises(TypeError, match=f"{name}_init: parameter 0 must be float32 or float64, got int64"):
        init([be.asarray(np.ones(3, np.int64))])


def test_buffers_of_other_shapes_are_named(be):
    params, grads = [be.asarray(np.ones(3))], [be.asarray(np.ones(3))]
    adam_state = AdamState(1, (be.asarray(np.ones(3)),), (be.asarray(np.ones(3)),), (be.asarray(np.ones(4)),))
    with pytest.raises(ValueError, match=r"the state's max_exp_avg_sq 0 has shape \(4,\)"):
        be.adam_step(params, grads, adam_state, lr=0.1, amsgrad=True)
    rms_state = RMSpropState(1, (be.asarray(np.ones(3)),), (be.asarray(np.ones(3, np.float32)),), None)
    with pytest.raises(ValueError, match=r"the state's momentum_buffer 0 has shape \(3,\) and dtype float32"):
        be.rmsprop_step(params, grads, rms_state, lr=0.1, momentum=0.9)


# ---- (d) inputs are never modified (the immutable backend raises on any in-place update) --------------------


ALL_BUFFERS = {
    "adam": dict(lr=0.1, weight_decay=0.1, amsgrad=True, maximize=True),
    "adamw": dict(lr=0.1, amsgrad=True),
    "rmsprop": dict(lr=0.01, weight_decay=0.1, momentum=0.9, centered=True, maximize=True),
    "adagrad": dict(lr=0.1, weight_decay=0.1, lr_decay=0.01, initial_accumulator_value=0.1, maximize=True),
}


def _snapshot(be, state):
    out = []
    for value in state:
        if isinstance(value, tuple):
            out.append(tuple(be.to_numpy(a).copy() for a in value))
        else:
            out.append(value)
    return out


@pytest.mark.parametrize("name", sorted(ALL_BUFFERS))
def test_inputs_are_not_modified(be, dtype, name):
    settings = ALL_BUFFERS[name]
    rng = np.random.default_rng(11)
    params = [be.asarray(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    state = _init(be, name, params, settings)
    step = getattr(be, f"{name}_step")
    for _ in range(3):
        grads = [be.asarray(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
        params_before = [be.to_numpy(p).copy() for p in params]
        grads_before = [be.to_numpy(g).copy() for g in grads]
        state_before = _snapshot(be, state)
        new_params, new_state = step(params, grads, state, **settings)
        for a, b in zip(params, params_before):
            np.testing.assert_array_equal(be.to_numpy(a), b)
        for a, b in zip(grads, grads_before):
            np.testing.assert_array_equal(be.to_numpy(a), b)
        for field, before in zip(state, state_before):
            if isinstance(field, tuple):
                for a, b in zip(field, before):
                    np.testing.assert_array_equal(be.to_numpy(a), b)
            else:
                assert field == before
        assert all(new is not old for new, old in zip(new_params, params))
        assert all(new is not g for new, g in zip(new_params, grads))
        params, state = new_params, new_state
    assert all(field is not None for field in state)  # every buffer was exercised


@pytest.mark.parametrize(("name", "module", "hyperparameters"), [
    ("sgd", "sgd", "SGDHyperparameters"), ("adam", "adam", "AdamHyperparameters"),
    ("adamw", "adam", "AdamHyperparameters"), ("rmsprop", "rmsprop", "RMSpropHyperparameters"),
    ("adagrad", "adagrad", "AdagradHyperparameters")])
def test_each_optimizer_carries_its_hyperparameters_as_one_frozen_value(name, module, hyperparameters):
    """One frozen dataclass per optimizer, named as torch names the hyperparameters; its check returns what
    Optimizer.check returns (every hyperparameter but lr, as Python numbers)."""
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(f"softgrad.numerics.optim.{module}"), hyperparameters)
    optimizer = get_optimizer(name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert {f.name for f in dataclasses.fields(cls)} == {"lr", *optimizer.defaults}
    checked = optimizer.check(lr=optimizer.lr, **optimizer.defaults)
    assert checked == {k: v for k, v in optimizer.defaults.items()}


def test_the_adaptive_optimizers_share_their_checks_from_one_module():
    """RMSprop and Adagrad take their checks from optim/checks.py, not from adam.py."""
    from softgrad.numerics.optim import adagrad, checks, rmsprop

    for module in (rmsprop, adagrad):
        assert module.check_real is checks.check_real and module.check_step_arguments is checks.check_step_arguments
