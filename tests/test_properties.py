"""Property tests: every backend, float32 and float64, generated shapes and scales.

References: the float64 NumPy functions in tests/reference.py, PyTorch's
``torch.nn.functional`` and autograd, central finite differences, and the
other backends. Tolerances per dtype are in conftest.TOLERANCES.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import get_backend
from tests import reference as ref
from tests.conftest import AVAILABLE, assert_close
from tests.strategies import logits, loss_case

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _on(be, kwargs):
    """The keyword arguments with the weight moved to the backend."""
    out = dict(kwargs)
    if out.get("weight") is not None:
        out["weight"] = be.asarray(out["weight"])
    return out


def _torch_kwargs(kwargs):
    out = dict(kwargs)
    if out.get("weight") is not None:
        out["weight"] = torch.from_numpy(np.asarray(out["weight"], dtype=np.float64))
    return out


def _torch_target(target):
    t = torch.from_numpy(np.asarray(target))
    return t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)


# ---- softmax and log_softmax ---------------------------------------------------------


@given(data=st.data())
def test_softmax_rows_are_distributions(be, dtype, data):
    z, _ = data.draw(logits(dtype))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    assert p.dtype == dtype and p.shape == z.shape
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(p, ref.softmax(z), dtype)
    assert_close(p, torch.softmax(torch.from_numpy(z.astype(np.float64)), dim=1).numpy(), dtype)


@given(data=st.data())
def test_softmax_handles_masked_classes(be, dtype, data):
    z, scale = data.draw(logits(dtype, masked=True))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    logp = be.to_numpy(be.log_softmax(be.asarray(z)))
    assert np.all(p[np.isneginf(z)] == 0) and np.all(np.isneginf(logp[np.isneginf(z)]))
    assert not np.any(np.isnan(p)) and not np.any(np.isnan(logp))
    assert_close(p, ref.softmax(z), dtype)
    finite = np.isfinite(z)
    assert_close(logp[finite], ref.log_softmax(z)[finite], dtype, scale=scale)


@given(data=st.data())
def test_softmax_is_shift_invariant(be, dtype, data):
    z, scale = data.draw(logits(dtype, max_c=100))
    shift = data.draw(st.sampled_from([-1e3, -1.0, 0.5, 1e3])).__float__()
    # exact in float64; in float32 the shifted input itself is rounded, so compare within that
    shifted = (z.astype(np.float64) + shift).astype(dtype)
    p = be.to_numpy(be.softmax(be.asarray(z)))
    p_shifted = be.to_numpy(be.softmax(be.asarray(shifted)))
    assert_close(p_shifted, ref.softmax(shifted), dtype)
    if dtype == np.float64:
        np.testing.assert_allclose(p_shifted, p, rtol=1e-9 * max(1.0, abs(shift)), atol=1e-12 * max(1.0, abs(shift) + scale))


@given(data=st.data())
def test_log_softmax_is_log_of_softmax_where_finite(be, dtype, data):
    z, scale = data.draw(logits(dtype))
    logp = be.to_numpy(be.log_softmax(be.asarray(z)))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    assert logp.dtype == dtype and np.all(np.isfinite(logp))
    assert_close(logp, ref.log_softmax(z), dtype, scale=scale)
    oracle = torch.log_softmax(torch.from_numpy(z.astype(np.float64)), dim=1).numpy()
    assert_close(logp, oracle, dtype, scale=scale)
    usable = p > np.finfo(dtype).tiny * 1e3  # log(softmax) is finite and accurate there
    assert_close(logp[usable], np.log(p[usable].astype(np.float64)), dtype, scale=scale)


@given(data=st.data())
def test_softmax_on_other_axes(be, dtype, data):
    z, _ = data.draw(logits(dtype, max_n=40, max_c=40))
    assert_close(be.to_numpy(be.softmax(be.asarray(z), axis=0)), ref.softmax(z, axis=0), dtype)
    z3 = z.reshape(1, *z.shape)
    assert_close(be.to_numpy(be.log_softmax(be.asarray(z3), axis=1)), ref.log_softmax(z3, axis=1), dtype,
                 scale=float(np.abs(z).max()))


@given(data=st.data())
def test_large_float32_logits_stay_finite(be, data):
    z, _ = data.draw(logits(np.float32, max_n=64, max_c=100))
    z = (z / max(1e-30, float(np.abs(z).max())) * 1e4).astype(np.float32)  # magnitude 1e4
    for op in (be.softmax, be.log_softmax):
        assert np.all(np.isfinite(be.to_numpy(op(be.asarray(z)))))
    y = np.zeros(z.shape[0], dtype=np.int64)
    assert np.isfinite(float(be.to_numpy(be.cross_entropy(be.asarray(z), be.asarray(y)))))
    assert np.all(np.isfinite(be.to_numpy(be.cross_entropy_grad(be.asarray(z), be.asarray(y)))))


# ---- losses ------------------------------------------------------------------------------


@given(data=st.data())
def test_cross_entropy_is_nll_of_log_softmax(be, dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    if target.ndim == 2 or kwargs["label_smoothing"] != 0.0:
        kwargs["label_smoothing"] = 0.0  # nll_loss takes class indices, no smoothing
        target = np.asarray(target).argmax(axis=1) if target.ndim == 2 else target
        kwargs.pop("ignore_index", None) if target.ndim == 2 else None
    zb, tb = be.asarray(z), be.asarray(target)
    ce = be.to_numpy(be.cross_entropy(zb, tb, **_on(be, kwargs)))
    nll_kwargs = {k: v for k, v in _on(be, kwargs).items() if k != "label_smoothing"}
    nll = be.to_numpy(be.nll_loss(be.log_softmax(zb), tb, **nll_kwargs))
    assert_close(ce, nll, dtype, scale=scale)


@given(data=st.data())
def test_losses_match_reference_and_torch(be, dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    loss = be.to_numpy(be.cross_entropy(be.asarray(z), be.asarray(target), **_on(be, kwargs)))
    assert loss.dtype == dtype
    expected = ref.cross_entropy(z, target, **kwargs)
    assert_close(loss, expected, dtype, scale=scale)
    oracle = F.cross_entropy(torch.from_numpy(z.astype(np.float64)), _torch_target(target), **_torch_kwargs(kwargs))
    assert_close(loss, oracle.numpy(), dtype, scale=scale)
    if target.ndim == 1:
        logp = ref.log_softmax(z).astype(dtype)
        nll_kwargs = {k: v for k, v in kwargs.items() if k != "label_smoothing"}
        nll = be.to_numpy(be.nll_loss(be.asarray(logp), be.asarray(target), **_on(be, nll_kwargs)))
        oracle = F.nll_loss(torch.from_numpy(logp.astype(np.float64)), _torch_target(target), **_torch_kwargs(nll_kwargs))
        assert_close(nll, oracle.numpy(), dtype, scale=scale)


@given(data=st.data())
def test_gradient_matches_reference_and_autograd(be, dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    zb, tb = be.asarray(z), be.asarray(target)
    grad = be.to_numpy(be.cross_entropy_grad(zb, tb, **_on(be, kwargs)))
    loss_and_grad = be.cross_entropy_and_grad(zb, tb, **_on(be, kwargs))
    assert grad.dtype == dtype and grad.shape == z.shape
    assert_close(grad, ref.cross_entropy_grad(z, target, **kwargs), dtype)
    z_torch = torch.from_numpy(z.astype(np.float64)).requires_grad_(True)
    loss = F.cross_entropy(z_torch, _torch_target(target), **_torch_kwargs(kwargs))
    (autograd,) = torch.autograd.grad(loss.sum(), z_torch)
    assert_close(grad, autograd.numpy(), dtype)
    assert_close(be.to_numpy(loss_and_grad[1]), autograd.numpy(), dtype)
    assert_close(be.to_numpy(loss_and_grad[0]), loss.detach().numpy(), dtype, scale=scale)


@given(data=st.data())
def test_gradient_matches_finite_differences(be, data):
    z, target, kwargs, _ = data.draw(loss_case(np.float64, max_n=32, max_c=50))
    kwargs["reduction"] = data.draw(st.sampled_from(["mean", "sum"]))
    grad = be.to_numpy(be.cross_entropy_grad(be.asarray(z), be.asarray(target), **_on(be, kwargs)))
    rng = np.random.default_rng(0)
    h = 1e-5
    for _ in range(3):  # directional derivatives along random directions
        direction = rng.standard_normal(z.shape)
        f_plus = ref.cross_entropy(z + h * direction, target, **kwargs)
        f_minus = ref.cross_entropy(z - h * direction, target, **kwargs)
        numeric = (f_plus - f_minus) / (2 * h)
        analytic = float(np.sum(grad * direction))
        assert abs(numeric - analytic) <= 1e-6 * (1 + abs(numeric)) + 1e-9 * abs(f_plus) / h


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs two available backends")
@given(data=st.data())
def test_backends_agree_with_each_other(dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    results = {}
    for name in AVAILABLE:
        be = get_backend(name)
        zb, tb = be.asarray(z), be.asarray(target)
        loss, grad = be.cross_entropy_and_grad(zb, tb, **_on(be, kwargs))
        results[name] = [be.to_numpy(x) for x in
                         (be.softmax(zb), be.log_softmax(zb), loss, grad)]
    first, *others = AVAILABLE
    for name in others:
        for what, a, b, s in zip(("softmax", "log_softmax", "loss", "grad"), results[first], results[name],
                                 (1.0, scale, scale, 1.0)):
            assert_close(b, a, dtype, scale=s, what=f"{name} vs {first}: {what}")
