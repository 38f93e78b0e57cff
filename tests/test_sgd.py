"""sgd_step against torch.optim.SGD, step by step, for random hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from softgrad import SGDState
from softgrad.backends import get_backend
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.conformance.strategies import sgd_settings

from tests.conftest import AVAILABLE, assert_close

torch = pytest.importorskip("torch")


@given(settings=sgd_settings(), steps=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_sgd_steps_match_torch_optim_sgd(be, dtype, settings, steps, seed):
    check_against_torch(be, be.sgd_step, [dtype] * 3, settings, steps, seed)


@given(settings=sgd_settings(), seed=st.integers(0, 2**32 - 1))
def test_column_major_parameters_with_row_major_gradients(be, settings, seed):
    """Parameters whose strides differ from their gradients' (torch's fused CUDA kernel refuses
    them, CuPy's kernel assumes C order): each backend takes a path that handles them."""
    check_against_torch(be, be.sgd_step, [np.float32] * 3, settings, 3, seed, order="F")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_no_parameters_counts_the_step(be, momentum):
    params, state = be.sgd_step([], [], be.sgd_init([]), lr=0.1, momentum=momentum)
    assert params == [] and state.step == 1


@given(settings=sgd_settings(), steps=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_shared_array_api_sgd_matches_torch(dtype, settings, steps, seed):
    """The shared implementation the backends fall back on (NumPy and CuPy override it)."""
    numpy_backend = get_backend("numpy")
    shared = ArrayAPIBackend.sgd_step.__get__(numpy_backend)
    check_against_torch(numpy_backend, shared, [dtype] * 3, settings, steps, seed)


@pytest.mark.skipif("torch" not in AVAILABLE, reason="needs the torch backend")
@given(settings=sgd_settings(), seed=st.integers(0, 2**32 - 1))
def test_torch_multi_tensor_path_for_mixed_dtypes(settings, seed):
    """Parameters of two dtypes cannot share the fused kernel: the _foreach path takes them."""
    be = get_backend("torch")
    check_against_torch(be, be.sgd_step, [np.float32, np.float64, np.float64], settings, 3, seed)


def check_against_torch(be, sgd_step, dtypes, settings, steps, seed, order="C"):
    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (5,), (1, 3)]
    initial = [np.asarray(rng.standard_normal(s).astype(d), order=order) for s, d in zip(shapes, dtypes)]
    reference = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in initial]
    optimizer = torch.optim.SGD(reference, **settings)
    params = [be.asarray(p.copy(order="K")) for p in initial]
    state = be.sgd_init(params)
    for step in range(steps):
        grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
        for p, g in zip(reference, grads):
            p.grad = torch.from_numpy(g.astype(np.float64))
        optimizer.step()
        grads_before = [g.copy() for g in grads]
        params, state = sgd_step(params, [be.asarray(g) for g in grads], state, **settings)
        assert state.step == step + 1
        for ours, theirs, g, g0, dtype in zip(params, reference, grads, grads_before, dtypes):
            assert be.to_numpy(ours).dtype == dtype
            assert_close(be.to_numpy(ours), theirs.detach().numpy(), dtype, scale=steps)
            np.testing.assert_array_equal(g, g0)  # gradients are not modified


def test_sgd_updates_in_place_and_returns_the_arrays(be):
    """An in-place override returns the very arrays it updated; a functional one (the shared code, JAX's
    compiled step) returns new arrays and leaves the ones it was given as they were."""
    params = [be.asarray(np.ones(3))]
    updated, state = be.sgd_step(params, [be.asarray(np.full(3, 2.0))], be.sgd_init(params), lr=0.5)
    np.testing.assert_array_equal(be.to_numpy(updated[0]), np.zeros(3))
    if type(be).sgd_step is ArrayAPIBackend.sgd_step or updated[0] is not params[0]:
        np.testing.assert_array_equal(be.to_numpy(params[0]), np.ones(3))
    else:
        np.testing.assert_array_equal(be.to_numpy(params[0]), np.zeros(3))
    assert state == SGDState(step=1, momentum_buffers=None)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lr=-0.1), "lr must be finite and >= 0"),
        (dict(lr=float("nan")), "lr must be finite"),
        (dict(lr=0.1, momentum=-0.5), "momentum must be finite and >= 0"),
        (dict(lr=0.1, nesterov=True), "nesterov momentum requires momentum > 0"),
        (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening == 0"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be finite and >= 0"),
    ],
)
def test_sgd_rejects_bad_hyperparameters(be, settings, message):
    params = [be.asarray(np.ones(2))]
    with pytest.raises(ValueError, match=message):
        be.sgd_step(params, [be.asarray(np.ones(2))], be.sgd_init(params), **settings)


def test_sgd_rejects_mismatched_params_and_grads(be):
    params = [be.asarray(np.ones((2, 3))), be.asarray(np.ones(3))]
    state = be.sgd_init(params)
    with pytest.raises(ValueError, match="2 parameters but 1 gradients"):
        be.sgd_step(params, [be.asarray(np.ones((2, 3)))], state, lr=0.1)
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(3,\) but its gradient has shape \(4,\)"):
        be.sgd_step(params, [be.asarray(np.ones((2, 3))), be.asarray(np.ones(4))], state, lr=0.1)
    with pytest.raises(TypeError, match="parameter 0 is float64 but its gradient is float32"):
        be.sgd_step(params, [be.asarray(np.ones((2, 3), np.float32)), be.asarray(np.ones(3))], state, lr=0.1)
    with pytest.raises(TypeError, match="state must be the SGDState"):
        be.sgd_step(params, params, {"step": 0}, lr=0.1)


def test_numpy_scalar_hyperparameters_keep_float32(be):
    params = [be.asarray(np.ones(3, np.float32))]
    grads = [be.asarray(np.ones(3, np.float32))]
    state = be.sgd_init(params)
    for _ in range(2):
        params, state = be.sgd_step(params, grads, state, lr=np.float32(0.1), momentum=np.float64(0.9),
                                    weight_decay=np.float64(1e-3))
    assert be.to_numpy(params[0]).dtype == np.float32
    assert be.to_numpy(state.momentum_buffers[0]).dtype == np.float32


def test_momentum_buffers_must_match_the_parameters(be):
    params = [be.asarray(np.ones(3))]
    state = SGDState(step=1, momentum_buffers=(be.asarray(np.ones(4)),))
    with pytest.raises(ValueError, match="momentum buffer 0 has shape"):
        be.sgd_step(params, [be.asarray(np.ones(3))], state, lr=0.1, momentum=0.9)


# ---- the pure per-parameter update and the hyperparameters as one value ----------------------------------


@given(settings=sgd_settings(), steps=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_update_one_is_the_shared_step_for_one_parameter(settings, steps, seed):
    """sgd.update_one, what a compiling backend reuses, gives the shared step's numbers exactly."""
    from softgrad.numerics.optim import sgd

    numpy_backend = get_backend("numpy")
    rng = np.random.default_rng(seed)
    param = rng.standard_normal((3, 4)).astype(np.float32)
    mine, buffer = param.copy(), None
    params, state = [param.copy()], SGDState()
    hyper = sgd.SGDHyperparameters.checked(**settings)
    for _ in range(steps):
        grad = rng.standard_normal((3, 4)).astype(np.float32)
        before = grad.copy()
        params, state = sgd.step(numpy_backend, params, [grad], state, **settings)
        mine, buffer = sgd.update_one(mine, grad, buffer, hyper)
        np.testing.assert_array_equal(mine, params[0])
        if state.momentum_buffers is None:
            assert buffer is None
        else:
            np.testing.assert_array_equal(buffer, state.momentum_buffers[0])
            assert state.momentum_buffers[0] is not grad  # the shared step's state never aliases a gradient
        np.testing.assert_array_equal(grad, before)


def test_sgd_hyperparameters_are_one_checked_frozen_value():
    import dataclasses

    from softgrad.numerics.optim.sgd import DEFAULTS, SGDHyperparameters

    hyper = SGDHyperparameters.checked(lr=np.float32(0.5), momentum=np.float64(0.9), nesterov=True)
    assert hyper == SGDHyperparameters(lr=0.5, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0)
    assert all(type(getattr(hyper, name)) is float for name in ("lr", "momentum", "dampening", "weight_decay"))
    assert {f.name for f in dataclasses.fields(SGDHyperparameters)} == {"lr", *DEFAULTS}
    with pytest.raises(dataclasses.FrozenInstanceError):
        hyper.lr = 1.0
    with pytest.raises(ValueError, match="sgd_step: nesterov momentum requires momentum > 0 and dampening == 0"):
        SGDHyperparameters.checked(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"sgd_step: momentum must be finite and >= 0, got -1"):
        SGDHyperparameters.checked(lr=0.1, momentum=-1)
