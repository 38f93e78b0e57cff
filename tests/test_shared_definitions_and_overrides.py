"""The open core: overrides agree with the shared definitions, losses and optimizers plug in,
training runs on immutable arrays, and checkpoints of both formats resume exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from softgrad.backends.array_api import ArrayAPIBackend, shared_method
from softgrad.backends.conformance.elementwise_checks import ELEMENTWISE_LOSSES, elementwise_case
from softgrad.backends.conformance.strategies import logits, loss_case, sgd_settings
from softgrad.numerics import LOSSES, OPTIMIZERS
from softgrad.numerics.losses import Loss, register_loss
from softgrad.training import checkpoint
from softgrad.training.fitting import fit
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings
from softgrad.training.step import train_step

from tests.conftest import AVAILABLE, assert_close
from tests.test_training import small_data, train

FIXTURES = Path(__file__).parent / "fixtures"


def _on(be, kwargs):
    """The options with their arrays (weight, pos_weight) moved to the backend."""
    return {k: be.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


# The inputs each registered loss is checked on: a new loss adds its own line here.
@st.composite
def _cross_entropy_case(draw, dtype):
    return draw(loss_case(dtype, max_n=64, max_c=300))


@st.composite
def _nll_case(draw, dtype):
    z, target, kwargs, scale = draw(loss_case(dtype, max_n=64, max_c=300))
    if target.ndim == 2:
        target = target.argmax(axis=1)
        kwargs.pop("ignore_index", None)
    kwargs.pop("label_smoothing", None)
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    logp = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(dtype)
    return logp, target, kwargs, scale


def _elementwise_case(loss):
    @st.composite
    def case(draw, dtype):
        _, x, target, options, scale = draw(elementwise_case(dtype, loss, max_n=64))
        return x, target, options, scale * scale if loss == "mse_loss" else scale

    return case


LOSS_CASES = {"cross_entropy": _cross_entropy_case, "nll_loss": _nll_case,
              **{loss: _elementwise_case(loss) for loss in ELEMENTWISE_LOSSES}}


def test_every_registered_loss_has_test_inputs():
    assert set(LOSSES) <= set(LOSS_CASES), "add the new loss's inputs to LOSS_CASES"


@pytest.mark.parametrize("loss", sorted(LOSS_CASES))
@given(data=st.data())
def test_loss_methods_agree_with_the_shared_definition(be, dtype, loss, data):
    """Every backend's X, X_grad and X_and_grad (fused kernels included) against the one definition."""
    x, target, kwargs, scale = data.draw(LOSS_CASES[loss](dtype))
    xb, tb, options = be.asarray(x), be.asarray(target), _on(be, kwargs)
    expected_loss, expected_grad = LOSSES[loss].compute(be, xb, tb, op=loss, want_grad=True, **options)
    value, grad = getattr(be, f"{loss}_and_grad")(xb, tb, **options)
    assert_close(be.to_numpy(value), be.to_numpy(expected_loss), dtype, scale=scale)
    assert_close(be.to_numpy(grad), be.to_numpy(expected_grad), dtype)
    assert_close(be.to_numpy(getattr(be, loss)(xb, tb, **options)), be.to_numpy(expected_loss), dtype, scale=scale)
    assert_close(be.to_numpy(getattr(be, f"{loss}_grad")(xb, tb, **options)), be.to_numpy(expected_grad), dtype)


@given(settings=sgd_settings(), seed=st.integers(0, 2**32 - 1))
def test_sgd_step_agrees_with_the_shared_definition(be, dtype, settings, seed):
    """In-place and fused SGD (NumPy scratch buffers, torch's fused kernel, the CuPy kernel) against the shared step."""
    rng = np.random.default_rng(seed)
    shapes = [(5, 3), (3,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours, theirs = [be.asarray(p.copy()) for p in params], [be.asarray(p.copy()) for p in params]
    our_state, their_state = be.sgd_init(ours), OPTIMIZERS["sgd"].init(be, theirs)
    for _ in range(3):
        grads = [be.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
        ours, our_state = be.sgd_step(ours, grads, our_state, **settings)
        theirs, their_state = OPTIMIZERS["sgd"].step(be, theirs, grads, their_state, **settings)
    for a, b in zip(ours, theirs):
        assert_close(be.to_numpy(a), be.to_numpy(b), dtype, scale=3)
    assert our_state.step == their_state.step == 3


@given(data=st.data())
def test_softmax_and_layer_overrides_agree_with_the_shared_code(be, dtype, data):
    if not isinstance(be, ArrayAPIBackend):
        pytest.skip("not built on the shared implementation")
    z, scale = data.draw(logits(dtype, max_n=64, max_c=200, masked=data.draw(st.booleans())))
    zb = be.asarray(z)
    assert_close(be.to_numpy(be.softmax(zb)), be.to_numpy(ArrayAPIBackend.softmax(be, zb)), dtype)
    finite = np.isfinite(z)
    assert_close(be.to_numpy(be.log_softmax(zb))[finite], be.to_numpy(ArrayAPIBackend.log_softmax(be, zb))[finite],
                 dtype, scale=scale)
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((z.shape[0], 7), (7, 5), (5,)))
    assert_close(be.to_numpy(be.affine(be.asarray(x), be.asarray(w), be.asarray(b))),
                 be.to_numpy(ArrayAPIBackend.affine(be, be.asarray(x), be.asarray(w), be.asarray(b))), dtype)
    h, dh = np.maximum(x, 0), rng.standard_normal(x.shape).astype(dtype)
    assert_close(be.to_numpy(be.relu_backward(be.asarray(h), be.asarray(dh.copy()))),
                 be.to_numpy(ArrayAPIBackend.relu_backward(be, be.asarray(h), be.asarray(dh.copy()))), dtype)
    assert_close(be.to_numpy(be.relu_backward_inplace(be.asarray(h), be.asarray(dh.copy()))),  # may overwrite dh
                 be.to_numpy(ArrayAPIBackend.relu_backward(be, be.asarray(h), be.asarray(dh.copy()))), dtype)


def test_shared_method_names_the_registered_units():
    assert shared_method("cross_entropy_and_grad").__name__ == "value_and_grad"
    assert shared_method("sgd_step").__name__ == "step_method"
    assert shared_method("adam_step").__name__ == "step_method"
    assert shared_method("mse_loss_grad").__name__ == "grad"
    with pytest.raises(AttributeError, match="no registered loss or optimizer provides 'lion_step'"):
        shared_method("lion_step")


# ---- training on a namespace without in-place operations ---------------------------------------------


@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.skipif(
    name not in AVAILABLE, reason=f"{name} is not available here")) for name in ("numpy-immutable", "array-api-strict",
                                                                                "jax")])
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-10, 1e-12), (np.float32, 2e-4, 2e-5)])
def test_training_on_arrays_without_in_place_updates_follows_numpy(backend, dtype, rtol, atol):
    """64 steps of fit on the shared, functional code: the same trajectory as NumPy's in-place overrides."""
    data = small_data()
    reference, reference_history = train("numpy", dtype, data)
    model, history = train(backend, dtype, data)
    for a, b in zip(reference.params, model.params):
        np.testing.assert_allclose(model.be.to_numpy(b), a, rtol=rtol, atol=atol)
    for a, b in zip(reference_history, history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rtol * 10, abs=atol * 10)


def test_the_immutable_namespace_refuses_in_place_updates():
    from tests.immutable_numpy import ImmutableNumPyBackend, InPlaceError

    be = ImmutableNumPyBackend()
    x = be.asarray(np.ones(3))
    for attempt in (lambda: x.__iadd__(1.0), lambda: x.__setitem__(0, 2.0), lambda: np.add(x, 1.0, out=x),
                    lambda: (x * 2).__imul__(2.0)):
        with pytest.raises(InPlaceError):
            attempt()
    p = be.asarray(np.ones(3))
    with pytest.raises(InPlaceError):  # the old shared SGD: `p -= lr * g` on a loop variable
        p -= 0.1 * be.asarray(np.ones(3))


# ---- losses and optimizers as arguments; checkpoints ------------------------------------------------


def test_fit_and_train_step_take_the_loss_and_the_optimizer():
    data = small_data()
    smoothed, _ = train("numpy", np.float64, data, epochs=1, loss="cross_entropy",
                        loss_options={"label_smoothing": 0.1}, optimizer="sgd", momentum=0.0, nesterov=False)
    plain, _ = train("numpy", np.float64, data, epochs=1, momentum=0.0, nesterov=False)
    assert not np.allclose(smoothed.params[0], plain.params[0])  # the option reached the loss
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of cross_entropy"):
        train("numpy", np.float64, data, loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; choose one of sgd"):
        train("numpy", np.float64, data, optimizer="lion")
    with pytest.raises(TypeError, match="sgd has no hyperparameter 'betas'"):
        train("numpy", np.float64, data, betas=(0.9, 0.999))

    model = MLP([20, 8, 4], seed=1, dtype=np.float64)
    x, y = model.be.asarray(data.x_train[:16]), model.be.asarray(data.y_train[:16])
    state = OPTIMIZERS["sgd"].init(model.be, model.params)
    loss, _, state = train_step(model, x, y, state, 0.1, TrainSettings(), loss=LOSSES["cross_entropy"],
                                optimizer="sgd")
    assert state.step == 1 and np.isfinite(float(loss))


def test_a_checkpoint_of_the_first_format_still_loads_and_resumes_exactly(tmp_path):
    """tests/fixtures/checkpoint-v1.npz was written by softgrad before checkpoint format 2 (after epoch 2 of 3)."""
    data = small_data()
    model, state, history, settings = checkpoint.load(FIXTURES / "checkpoint-v1.npz")
    assert state.step == 64 and len(state.momentum_buffers) == 6 and len(history) == 2
    assert settings["momentum"] == 0.9 and settings["optimizer"] == "sgd"
    resumed = MLP([20, 32, 16, 4], seed=5, dtype=np.float64)
    path = tmp_path / "checkpoint.npz"
    path.write_bytes((FIXTURES / "checkpoint-v1.npz").read_bytes())
    history = fit(resumed, data, epochs=3, resume=path, checkpoint_path=path, progress=False, log=None)
    straight, straight_history = train("numpy", np.float64, data, epochs=3)
    with np.load(FIXTURES / "checkpoint-v1-expected-epoch3.npz") as expected:  # what the old code reached
        for i, (a, b) in enumerate(zip(straight.params, resumed.params)):
            # to float64 rounding, not bit for bit: the checkpoint's first two epochs ran on the old code, and
            # the NumPy backend's fused loops (numba) sum a row's exponentials in another order than its passes
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b, expected[f"param_{i}"], rtol=1e-9, atol=1e-12)
    assert [r["train_loss"] for r in history] == pytest.approx([r["train_loss"] for r in straight_history], rel=1e-9)
    assert checkpoint.load(path)[3]["optimizer"] == "sgd"  # rewritten in the new format
    with np.load(path) as archive:
        assert '"format": "softgrad-checkpoint-2"' in str(archive["meta"])


def test_checkpoints_store_any_optimizer_state_by_name_and_field(tmp_path):
    from typing import NamedTuple

    from softgrad.numerics.optim import Optimizer, register_optimizer

    class CountingState(NamedTuple):
        count: int
        scale: float
        last: object  # one array
        history: tuple  # arrays, some missing

    def init(be, params):
        return CountingState(0, 1.0, None, tuple(None for _ in params))

    def step(be, params, grads, state, *, lr, decay=0.5):
        new = [p - lr * g for p, g in zip(params, grads)]
        return new, CountingState(state.count + 1, state.scale * decay, grads[0], (grads[0],) + (None,) * (len(params) - 1))

    counting = register_optimizer(Optimizer("counting_for_test", CountingState, init, step,
                                            lambda lr, decay=0.5: {"decay": float(decay)}, {"decay": 0.5}))
    try:
        data = small_data()
        path = tmp_path / "checkpoint.npz"
        model = MLP([20, 8, 4], seed=1, dtype=np.float64)
        fit(model, data, optimizer=counting, epochs=1, batch_size=64, lr=0.01, checkpoint_path=path, progress=False,
            log=None, decay=0.9)
        loaded, state, _, settings = checkpoint.load(path, "torch")
        assert settings["optimizer"] == "counting_for_test" and settings["hyperparameters"] == {"decay": 0.9}
        assert isinstance(state, CountingState) and state.count == 10 and state.scale == pytest.approx(0.9**10)
        assert type(state.last).__module__.startswith("torch") and state.history[1:] == (None, None, None)
        np.testing.assert_array_equal(loaded.be.to_numpy(state.history[0]), loaded.be.to_numpy(state.last))
    finally:
        from softgrad.numerics.optim import OPTIMIZERS as registry

        registry.pop("counting_for_test")


def test_every_built_in_loss_and_optimizer_is_bound_in_the_shared_class_body():
    """One line per unit in ArrayAPIBackend's body (loss_methods / optimizer_methods): none left out."""
    for loss in LOSSES.values():
        for attribute in (loss.name, f"{loss.name}_grad", f"{loss.name}_and_grad"):
            assert attribute in vars(ArrayAPIBackend), attribute
    for optimizer in OPTIMIZERS.values():
        for attribute in (f"{optimizer.name}_init", f"{optimizer.name}_step"):
            assert attribute in vars(ArrayAPIBackend), attribute


def test_a_loss_registered_later_runs_on_every_shared_backend_through_the_dispatch(be):
    if not isinstance(be, ArrayAPIBackend):
        pytest.skip("not built on the shared implementation")
    from softgrad.numerics.methods import method_of

    def half_squared_error(be, input, target, *, reduction="mean", op="half_squared_error", want_grad=False):
        diff = input - target
        per_sample = 0.5 * be.xp.sum(diff * diff, axis=1)
        loss = {"none": per_sample, "sum": be.xp.sum(per_sample), "mean": be.xp.sum(per_sample) / input.shape[0]}
        grad = diff / input.shape[0] if reduction == "mean" else diff
        return loss[reduction], grad if want_grad else None

    register_loss(Loss("half_squared_error_for_test", half_squared_error, targets="value"))
    try:
        x, t = np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[0.0, 2.0], [1.0, 1.0]])
        loss = LOSSES["half_squared_error_for_test"]
        for value, grad in (method_of(be, "half_squared_error_for_test_and_grad")(be.asarray(x), be.asarray(t),
                                                                                   reduction="sum"),
                            loss.value_and_grad_on(be, be.asarray(x), be.asarray(t), reduction="sum")):
            assert float(be.to_numpy(value)) == pytest.approx(0.5 * (1 + 4 + 16))
            np.testing.assert_allclose(be.to_numpy(grad), x - t)
        value = method_of(be, "half_squared_error_for_test")(be.asarray(x), be.asarray(t), reduction="sum")
        assert float(be.to_numpy(value)) == pytest.approx(0.5 * (1 + 4 + 16))
    finally:
        LOSSES.pop("half_squared_error_for_test")
