"""The NumPy backend's fused loops (numba) and its pure-NumPy fallback, each against independent references:
float64 NumPy written here, torch.optim.SGD, and the shared definitions' errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from softgrad.backends import numba_kernels
from softgrad.backends.conformance.strategies import logits, sgd_settings
from softgrad.backends.numpy_backend import NumPyBackend

from tests.conftest import assert_close

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
JIT = [pytest.param(True, id="numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")),
       pytest.param(False, id="numpy")]


@pytest.fixture(scope="module", params=JIT)
def nb(request):
    be = NumPyBackend(jit=request.param)
    assert (be.kernels is not None) == request.param  # the path this test means to take
    return be


def reference_cross_entropy(z: np.ndarray, labels: np.ndarray):
    """Per-sample loss and d(sum of losses)/dz in float64, written out."""
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    loss = lse - shifted[np.arange(len(z)), labels]
    grad = np.exp(shifted - lse[:, None])
    grad[np.arange(len(z)), labels] -= 1.0
    return loss, grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data())
def test_cross_entropy_and_grad_against_float64(nb, dtype, reduction, data):
    z, scale = data.draw(logits(dtype, max_n=40, max_c=300, masked=data.draw(st.booleans())))
    labels = np.array([data.draw(st.sampled_from(np.flatnonzero(np.isfinite(row)).tolist())) for row in z])
    loss, grad = nb.cross_entropy_and_grad(z, labels, reduction=reduction)
    per_sample, full_grad = reference_cross_entropy(z, labels)
    divide = len(z) if reduction == "mean" else 1
    expected = per_sample if reduction == "none" else per_sample.sum() / divide
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    assert_close(np.asarray(loss), expected, dtype, scale=scale)
    assert_close(grad, full_grad / divide, dtype)
    assert_close(nb.cross_entropy_grad(z, labels, reduction=reduction), full_grad / divide, dtype)


@pytest.mark.parametrize("case, message", [
    ("nan", "row 1"),  # a NaN row: the shared definition names it
    ("inf", "row 1"),
    ("masked label", "the loss of sample 1 is infinite"),
    ("label out of range", "label 7 .* out of range"),
    ("summed loss overflows", "the summed loss overflows float32"),
])
def test_cross_entropy_errors_are_the_shared_definitions(nb, case, message):
    z = np.zeros((3, 5), np.float32)
    labels = np.array([0, 1, 2])
    if case == "summed loss overflows":  # each sample's loss is 2e38, finite; their sum is not
        z[:, 1], labels = -2e38, np.array([1, 1, 1])
    elif case == "nan":
        z[1, 3] = np.nan
    elif case == "inf":
        z[1, 3] = np.inf
    elif case == "masked label":
        z[1, 1] = -np.inf
    else:
        labels = np.array([0, 7, 2])
    with pytest.raises(ValueError, match=message):
        nb.cross_entropy_and_grad(z, labels)


def test_cross_entropy_with_ignored_labels_and_options_takes_the_shared_definition(nb):
    rng = np.random.default_rng(0)
    z, labels = rng.standard_normal((6, 4)), np.array([0, -100, 3, 2, -100, 1])
    loss, grad = nb.cross_entropy_and_grad(z, labels)
    per_sample, full_grad = reference_cross_entropy(z[labels >= 0], labels[labels >= 0])
    np.testing.assert_allclose(loss, per_sample.mean(), rtol=1e-12)
    np.testing.assert_allclose(grad[labels >= 0], full_grad / 4, rtol=1e-12, atol=1e-15)
    assert not grad[labels < 0].any()
    smoothed, _ = nb.cross_entropy_and_grad(z, np.array([0, 1, 3, 2, 0, 1]), label_smoothing=0.1)
    assert np.isfinite(smoothed) and smoothed > 0


@given(data=st.data())
def test_softmax_against_float64(nb, dtype, data):
    z, _ = data.draw(logits(dtype, max_n=40, max_c=300, masked=data.draw(st.booleans())))
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    expected = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    out = nb.softmax(z)
    assert out.dtype == dtype
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_softmax_names_a_row_with_no_softmax(nb, bad):
    z = np.zeros((3, 4), np.float32)
    z[2, 1] = bad
    with pytest.raises(ValueError, match="row 2"):
        nb.softmax(z)
    masked = np.zeros((2, 3))
    masked[1] = -np.inf
    with pytest.raises(ValueError, match="row 1"):
        nb.softmax(masked)


def test_affine_relu_and_relu_backward_against_numpy(nb, dtype):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((9, 7), (7, 5), (5,)))
    x[3, 2] = np.nan  # NaN stays NaN, as in np.maximum
    expected = np.maximum(x.astype(np.float64) @ w + b, 0)
    assert_close(nb.affine_relu(x, w, b), expected, dtype)
    h = np.maximum(rng.standard_normal((9, 5)), 0).astype(dtype)
    dh = rng.standard_normal((9, 5)).astype(dtype)
    np.testing.assert_array_equal(nb.relu_backward(h, dh.copy()), np.where(h > 0, dh, 0))
    # a transposed view takes the NumPy path and gives the same
    np.testing.assert_array_equal(nb.relu_backward(h.T, dh.T.copy(order="F")), np.where(h > 0, dh, 0).T)


@pytest.mark.parametrize("shape", [(1, 1), (9, 5), (300, 70)])
def test_relu_bias_backward_against_float64(nb, dtype, shape):
    """The ReLU's backward and the column sums of its result in one pass: the gradient exact, the sums
    within the dtype's rounding of float64's; a NaN gradient behind a closed ReLU gives 0, as in torch."""
    rng = np.random.default_rng(2)
    h = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    dh = rng.standard_normal(shape).astype(dtype)
    dh[-1, -1], h[-1, -1] = np.nan, 0.0
    expected = np.where(h > 0, dh, 0)
    dz, dbias = nb.relu_bias_backward(h, dh.copy())
    np.testing.assert_array_equal(dz, expected)
    assert dbias.dtype == dtype and dbias.shape == (shape[1],)
    assert_close(dbias, expected.astype(np.float64).sum(axis=0), dtype, scale=shape[0])
    # a transposed view takes the NumPy path and gives the same
    dz, dbias_t = nb.relu_bias_backward(h.T, dh.T.copy(order="F"))
    np.testing.assert_array_equal(dz, expected.T)
    assert_close(dbias_t, expected.astype(np.float64).sum(axis=1), dtype, scale=shape[0])


@given(settings=sgd_settings(), seed=st.integers(0, 2**32 - 1))
def test_sgd_step_against_torch(nb, settings, seed):
    """Four steps on parameters of both dtypes, a transposed gradient among them, against torch.optim.SGD
    in float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shapes, dtypes = [(40, 30), (30,), (30, 4), ()], [np.float32, np.float32, np.float64, np.float64]
    initial = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    reference = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in initial]
    optimizer = torch.optim.SGD(reference, **settings)
    params, state = [np.array(p) for p in initial], nb.sgd_init(initial)
    for _ in range(4):
        grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
        grads[2] = np.asfortranarray(grads[2])  # not C-contiguous: the NumPy passes take it
        for p, g in zip(reference, grads):
            p.grad = torch.from_numpy(np.array(g, dtype=np.float64))
        optimizer.step()
        before = [g.copy() for g in grads]
        params, state = nb.sgd_step(params, grads, state, **settings)
        for g, g0 in zip(grads, before):
            np.testing.assert_array_equal(g, g0)  # gradients are not modified
    for ours, theirs, d in zip(params, reference, dtypes):
        assert np.asarray(ours).dtype == d
        assert_close(np.asarray(ours), theirs.detach().numpy(), d, scale=4)


def test_the_loops_are_off_with_softgrad_numba_0(monkeypatch):
    monkeypatch.setenv("SOFTGRAD_NUMBA", "0")
    assert numba_kernels.kernels() is None
    monkeypatch.setenv("SOFTGRAD_NUMBA", "1")
    assert (numba_kernels.kernels() is not None) == HAVE_NUMBA


def test_the_loops_take_only_contiguous_float_arrays():
    a = np.zeros((3, 4), np.float32)
    assert numba_kernels.takes(a, a.copy())
    assert not numba_kernels.takes(a, a.astype(np.float64))
    assert not numba_kernels.takes(a.T)
    assert not numba_kernels.takes(a.astype(np.float16))
    assert not numba_kernels.takes(np.zeros(3, np.int64))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_the_fused_loops_are_what_runs(monkeypatch):
    """The plain cases never reach the shared definition or the NumPy passes: the loops compute them."""
    from softgrad.backends.array_api import ArrayAPIBackend

    be = NumPyBackend(jit=True)
    calls = []
    for name in ("sgd", "cross_entropy_rows", "softmax_rows", "bias_relu", "relu_backward", "relu_bias_backward"):
        kernel = getattr(be.kernels, name)
        monkeypatch.setattr(be.kernels, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])

    def refuse(name):
        raise AssertionError(f"the shared {name} ran")

    for name in ("cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"):  # where the hook declines
        monkeypatch.setattr(ArrayAPIBackend, f"_shared_{name}", lambda *a, _n=name, **k: refuse(_n))
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 5, 8)
    be.cross_entropy_and_grad(z, y)
    be.softmax(z)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((8, 3), (3, 4), (4,)))
    h = be.affine_relu(x, w, b)
    be.relu_backward(h, rng.standard_normal(h.shape).astype(np.float32))
    be.relu_bias_backward(h, rng.standard_normal(h.shape).astype(np.float32))
    params = [w.copy(), b.copy()]
    be.sgd_step(params, [w, b], be.sgd_init(params), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert sorted(set(calls)) == ["bias_relu", "cross_entropy_rows", "relu_backward", "relu_bias_backward", "sgd",
                                  "softmax_rows"]
    assert calls.count("sgd") == 2


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_the_float32_exp_is_as_accurate_as_numpys_with_the_loops_flags():
    import numba

    exp_shifted = numba_kernels._exp_shifted(numba)

    @numba.njit(fastmath=set(numba_kernels.FASTMATH))  # as the loops compile it, inlined
    def run(x, out):
        for i in range(x.size):
            out[i] = exp_shifted(x[i])

    x = np.linspace(-87.29, 0.0, 400_001).astype(np.float32)
    out = np.empty_like(x)
    run(x, out)
    reference = np.exp(x.astype(np.float64))
    assert (np.abs(out - reference) / reference).max() < 1.5e-7  # NumPy's own float32 exp: 2.0e-7
    edge = np.array([-87.4, -100.0, -np.inf, 0.0], np.float32)
    run(edge, out[:4])
    np.testing.assert_array_equal(out[:4], [0.0, 0.0, 0.0, 1.0])  # 0 where float32 would be subnormal


def test_a_read_only_gradient_is_refused_by_numpy_not_by_the_compiler(nb):
    h, dh = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    dh.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nb.relu_backward_inplace(h, dh)  # the hook that writes into dh
    np.testing.assert_array_equal(nb.relu_backward(h, dh), dh)  # the protocol's relu_backward writes nothing
