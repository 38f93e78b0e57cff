"""Every backend's fused or in-place path on any memory layout, and the raw errors and silent
NaNs the attack found, each as a class over every backend.

References: ``torch.optim.X(foreach=False)`` and ``torch.nn.functional`` with autograd, in float64 on contiguous
copies, and float64 NumPy written from the definitions. The layout tests also check that no byte outside the
view changes (the sentinel value around it stays).
"""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.backends import get_backend
from softgrad.backends.numpy_backend import NumPyBackend
from softgrad.numerics import validation as v
from softgrad.numerics.optim.sgd import SGDState

from tests.conftest import AVAILABLE

torch = pytest.importorskip("torch")

SENTINEL = 7.25
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _cupy_on_cpu():
    from tests.cuda_on_cpu import compiler, cpu_cupy_backend

    if not compiler():
        pytest.skip("no C++ compiler (g++) to run the CUDA kernels on the CPU")
    return cpu_cupy_backend()


# the backends whose arrays are mutable views: every in-place path (NumPy with and without numba, torch's fused
# kernel and its _foreach ops, CuPy's kernel emulated on the CPU)
IN_PLACE = {"numpy": lambda: get_backend("numpy"), "numpy-no-jit": lambda: NumPyBackend(jit=False),
            "torch": lambda: get_backend("torch"), "cupy-on-cpu": _cupy_on_cpu}


@pytest.fixture(scope="module", params=list(IN_PLACE))
def mutable(request):
    return IN_PLACE[request.param]()


def _is_torch(be) -> bool:
    return be.name.startswith("torch")


# a layout: where an (R, C) view lies in a larger buffer that holds SENTINEL everywhere else
LAYOUTS = {
    "columns ::2": (lambda r, c: (r, 2 * c), lambda b, r, c: b[:, ::2]),
    "rows ::2": (lambda r, c: (2 * r, c), lambda b, r, c: b[::2]),
    "block": (lambda r, c: (r + 1, c + 2), lambda b, r, c: b[1:, 1:-1]),
    "offset": (lambda r, c: (r * c + 3,), lambda b, r, c: b[3:].reshape(r, c)),
    "transposed": (lambda r, c: (c, r), lambda b, r, c: b.T),
}


def _view(be, values: np.ndarray, layout: str, dtype):
    """``(buffer, view)``: the view holds ``values``, the rest of the buffer SENTINEL."""
    r, c = values.shape
    shape, take = LAYOUTS[layout]
    host = np.full(shape(r, c), SENTINEL, dtype)
    take(host, r, c)[...] = values
    buffer = torch.from_numpy(host) if _is_torch(be) else host
    return buffer, take(buffer, r, c)


def _outside(be, buffer, layout, r, c) -> np.ndarray:
    """The buffer's values outside the view."""
    host = np.array(be.to_numpy(buffer))
    mask = np.ones(host.shape, bool)
    LAYOUTS[layout][1](mask, r, c)[...] = False
    return host[mask]


def _torch_optim(name, params0, grads, **hyperparameters):
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    tensors = [torch.tensor(np.asarray(p, np.float64), requires_grad=True) for p in params0]
    optimizer = cls(tensors, lr=0.1, foreach=False, **hyperparameters)
    for step in grads:
        for t, g in zip(tensors, step):
            t.grad = torch.tensor(np.asarray(g, np.float64))
        optimizer.step()
    return [t.detach().numpy() for t in tensors]


# ---- the in-place SGD on views ---------------------------------------------------------------------


def test_the_issues_strided_view_example(mutable):
    base = torch.zeros(2, 6) if _is_torch(mutable) else np.zeros((2, 6), np.float32)
    p = base[:, ::2]
    g = (torch.ones(2, 6) if _is_torch(mutable) else np.ones((2, 6), np.float32))[:, ::2]
    new, _ = mutable.sgd_step([p], [g], mutable.sgd_init([p]), lr=0.1)
    np.testing.assert_allclose(mutable.to_numpy(new[0]), np.full((2, 3), -0.1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(mutable.to_numpy(base))[:, 1::2], 0.0)  # nothing outside the view


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("settings", [{}, {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
                                      {"momentum": 0.9, "nesterov": True}], ids=["plain", "momentum", "nesterov"])
def test_sgd_on_a_view_updates_the_view_and_nothing_else(mutable, layout, settings):
    rng = np.random.default_rng(0)
    dtype = np.float32
    r, c = 3, 4
    p0 = rng.standard_normal((r, c)).astype(dtype)
    grads = [rng.standard_normal((r, c)).astype(dtype) for _ in range(2)]
    buffer, p = _view(mutable, p0, layout, dtype)
    state = mutable.sgd_init([p])
    params = [p]
    for g in grads:  # the gradients in the same layout: strides that match, memory that is not contiguous
        params, state = mutable.sgd_step(params, [_view(mutable, g, layout, dtype)[1]], state, lr=0.1, **settings)
    (expected,) = _torch_optim("sgd", [p0], [[g] for g in grads], **settings)
    np.testing.assert_allclose(mutable.to_numpy(params[0]), expected, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_array_equal(_outside(mutable, buffer, layout, r, c), SENTINEL)


@pytest.mark.parametrize("layout", ["columns ::2", "transposed"])
def test_a_resumed_momentum_buffer_that_is_a_view(mutable, layout):
    rng = np.random.default_rng(1)
    p0, g0, b0 = (rng.standard_normal((3, 4)) for _ in range(3))
    p = mutable.asarray(p0.copy())
    buffer, b = _view(mutable, b0, layout, np.float64)
    new, state = mutable.sgd_step([p], [mutable.asarray(g0)], SGDState(1, (b,)), lr=0.1, momentum=0.9)
    expected_buffer = 0.9 * b0 + g0
    np.testing.assert_allclose(mutable.to_numpy(new[0]), p0 - 0.1 * expected_buffer, rtol=1e-12)
    np.testing.assert_allclose(mutable.to_numpy(state.momentum_buffers[0]), expected_buffer, rtol=1e-12)
    np.testing.assert_array_equal(_outside(mutable, buffer, layout, 3, 4), SENTINEL)


def _buffer(be, values):
    return torch.tensor(values) if _is_torch(be) else np.array(values)


@pytest.mark.parametrize("settings", [{}, {"momentum": 0.9}, {"weight_decay": 0.1, "momentum": 0.5, "nesterov": True}])
@pytest.mark.parametrize("alias", ["gradient is the parameter", "gradient before", "gradient after"])
def test_a_gradient_sharing_the_parameters_memory(mutable, alias, settings):
    """Every input is read before anything is written: the float64 definition on copies (torch refuses the
    partial overlaps; the backends copy the gradient)."""
    x = np.random.default_rng(2).standard_normal(9)
    base = _buffer(mutable, x)
    p, g = {"gradient is the parameter": (base[:8], base[:8]), "gradient before": (base[1:], base[:-1]),
            "gradient after": (base[:-1], base[1:])}[alias]
    p0, g0 = np.array(mutable.to_numpy(p)), np.array(mutable.to_numpy(g))
    new, _ = mutable.sgd_step([p], [g], mutable.sgd_init([p]), lr=0.1, **settings)
    g_eff = g0 + settings.get("weight_decay", 0.0) * p0
    step = g_eff + settings["momentum"] * g_eff if settings.get("nesterov") else g_eff
    np.testing.assert_allclose(mutable.to_numpy(new[0]), p0 - 0.1 * step, rtol=1e-12)


def test_a_gradient_that_is_the_momentum_buffer(mutable):
    x = np.random.default_rng(3).standard_normal(4)
    b = _buffer(mutable, x)
    p = _buffer(mutable, np.zeros(4))
    new, state = mutable.sgd_step([p], [b], SGDState(1, (b,)), lr=1.0, momentum=0.5)
    np.testing.assert_allclose(mutable.to_numpy(state.momentum_buffers[0]), 1.5 * x, rtol=1e-12)
    np.testing.assert_allclose(mutable.to_numpy(new[0]), -1.5 * x, rtol=1e-12)


def test_a_parameter_whose_elements_share_memory_is_refused(mutable):
    row = _buffer(mutable, np.arange(4.0))
    p = row.expand(3, 4) if _is_torch(mutable) else np.lib.stride_tricks.as_strided(row, (3, 4), (0, 8))
    g = _buffer(mutable, np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"sgd_step: parameter 0 has elements that share memory"):
        mutable.sgd_step([p], [g], mutable.sgd_init([p]), lr=0.1)
    np.testing.assert_array_equal(mutable.to_numpy(row), np.arange(4.0))
    with pytest.raises(ValueError, match=r"momentum buffer 0 shares memory with parameter 0"):
        q = _buffer(mutable, np.ones(4))
        mutable.sgd_step([q], [_buffer(mutable, np.ones(4))], SGDState(1, (q,)), lr=0.1, momentum=0.9)


@pytest.mark.parametrize("layout", ["columns ::2", "transposed"])
@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_other_optimizers_on_views(mutable, name, layout):
    rng = np.random.default_rng(4)
    p0, g0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    buffer, p = _view(mutable, p0, layout, np.float64)
    new, _ = getattr(mutable, f"{name}_step")([p], [_view(mutable, g0, layout, np.float64)[1]],
                                             getattr(mutable, f"{name}_init")([p]), lr=0.1)
    np.testing.assert_allclose(mutable.to_numpy(new[0]), _torch_optim(name, [p0], [[g0]])[0], rtol=1e-10)
    np.testing.assert_array_equal(_outside(mutable, buffer, layout, 3, 4), SENTINEL)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cross_entropy_and_linear_cross_entropy_on_views(mutable, layout):
    rng = np.random.default_rng(5)
    z0, x0, w0, b0 = (rng.standard_normal(s) for s in ((5, 4), (6, 3), (5, 3), (1, 5)))
    y = np.array([0, 3, 1, 2, 3])
    y_lin = np.array([4, 0, 1, 2, 3, 0])
    zb, z = _view(mutable, z0, layout, np.float64)
    xb, x = _view(mutable, x0, layout, np.float64)
    _, w = _view(mutable, w0, "transposed", np.float64)
    _, bias = _view(mutable, b0, "columns ::2", np.float64)
    for reduction in ("mean", "none"):
        loss, grad = mutable.cross_entropy_and_grad(z, mutable.asarray(y), reduction=reduction)
        zt = torch.tensor(z0, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(zt, torch.tensor(y), reduction=reduction)
        expected.sum().backward()
        np.testing.assert_allclose(mutable.to_numpy(loss), expected.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(mutable.to_numpy(grad), zt.grad.numpy(), rtol=1e-12, atol=1e-15)
    loss, (dx, dw, db) = mutable.linear_cross_entropy_and_grad(x, w, mutable.asarray(y_lin), linear_bias=bias[0],
                                                               chunk_size=4)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0[0]))
    expected = torch.nn.functional.cross_entropy(xt @ wt.T + bt, torch.tensor(y_lin))
    expected.backward()
    for ours, theirs in ((loss, expected), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(mutable.to_numpy(ours), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(_outside(mutable, zb, layout, 5, 4), SENTINEL)
    np.testing.assert_array_equal(_outside(mutable, xb, layout, 6, 3), SENTINEL)


@pytest.mark.parametrize("seed", range(40))
def test_internal_overlap_matches_enumerating_the_elements(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(n) for n in rng.integers(1, 4, ndim))
    strides = tuple(int(s) * 4 for s in rng.integers(0, 7, ndim))
    offsets = np.zeros(1, np.int64)
    for n, s in zip(shape, strides):
        offsets = (offsets[:, None] + s * np.arange(n)[None, :]).ravel()
    assert v.has_internal_overlap(shape, strides, 4) == (len(np.unique(offsets)) < len(offsets))


# ---- the raw errors and silent NaNs ----------------------------------------------------------------


def test_optimizers_take_any_iterable_of_arrays(be):
    p0, g0 = [np.array([1.0, 2.0]), np.array([3.0])], [np.array([0.5, -1.0]), np.array([2.0])]
    for name in ("sgd", "adam", "rmsprop"):
        expected = _torch_optim(name, p0, [g0])
        params = [be.asarray(p.copy()) for p in p0]
        state = getattr(be, f"{name}_init")(p for p in params)
        new, _ = getattr(be, f"{name}_step")((p for p in params), map(be.asarray, g0), state, lr=0.1)
        for ours, theirs in zip(new, expected):
            np.testing.assert_allclose(be.to_numpy(ours), theirs, rtol=1e-12)
    with pytest.raises(TypeError, match=r"sgd_step: params must be a list of arrays.*single"):
        be.sgd_step(be.asarray(p0[0]), [be.asarray(g0[0])], be.sgd_init([]), lr=0.1)
    with pytest.raises(TypeError, match=r"adam_step: grads must be a list of arrays.*int"):
        be.adam_step([be.asarray(p0[0])], 3, be.adam_init([be.asarray(p0[0])]), lr=0.1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_momentum_buffer_of_none_starts_with_that_step(be, nesterov):
    """``SGDState(0, (None, buffer))``: torch.optim.SGD's state with one parameter's buffer not yet made."""
    p0, g0, b1 = [np.array([1.0, 2.0]), np.array([3.0])], [np.array([0.5, -1.0]), np.array([2.0])], np.array([0.25])
    tensors = [torch.tensor(p, requires_grad=True) for p in p0]
    optimizer = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, nesterov=nesterov, foreach=False)
    optimizer.state[tensors[1]]["momentum_buffer"] = torch.tensor(b1)
    for buffers in ((None, None), (None, b1)):
        params = [be.asarray(p.copy()) for p in p0]
        state = SGDState(0, tuple(None if b is None else be.asarray(b.copy()) for b in buffers))
        for _ in range(2):
            params, state = be.sgd_step(params, [be.asarray(g) for g in g0], state, lr=0.1, momentum=0.9,
                                        nesterov=nesterov)
        if buffers[1] is not None:
            for _ in range(2):
                for t, g in zip(tensors, g0):
                    t.grad = torch.tensor(g)
                optimizer.step()
            for ours, theirs in zip(params, tensors):
                np.testing.assert_allclose(be.to_numpy(ours), theirs.detach().numpy(), rtol=1e-12)
        else:
            expected = _torch_optim("sgd", p0, [g0, g0], momentum=0.9, nesterov=nesterov)
            for ours, theirs in zip(params, expected):
                np.testing.assert_allclose(be.to_numpy(ours), theirs, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "uint64"])
def test_unsigned_labels(be, dtype):
    rng = np.random.default_rng(6)
    z0, x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    y = np.array([0, 3, 1], dtype=dtype)
    y64 = torch.tensor(y.astype(np.int64))
    for op, value in (("cross_entropy", torch.nn.functional.cross_entropy(torch.tensor(z0), y64)),
                      ("nll_loss", torch.nn.functional.nll_loss(torch.tensor(z0), y64))):
        np.testing.assert_allclose(be.to_numpy(getattr(be, op)(be.asarray(z0), be.asarray(y))), value.item(),
                                   rtol=1e-12)
    expected = torch.nn.functional.cross_entropy(torch.tensor(x0 @ w0.T), y64).item()
    loss, _ = be.linear_cross_entropy_and_grad(be.asarray(x0), be.asarray(w0), be.asarray(y))
    np.testing.assert_allclose(be.to_numpy(loss), expected, rtol=1e-12)
    if dtype == "uint64":  # above 2**63: int64 would wrap it to a negative number
        with pytest.raises(ValueError, match=r"cross_entropy: label 9223372036854775809 \(sample 1\) is out of range"):
            be.cross_entropy(be.asarray(z0), be.asarray(np.array([0, 2**63 + 1, 1], dtype=np.uint64)))
        with pytest.raises(ValueError, match=r"linear_cross_entropy: label 9223372036854775809"):
            be.linear_cross_entropy(be.asarray(x0), be.asarray(w0),
                                    be.asarray(np.array([0, 2**63 + 1, 1], dtype=np.uint64)))


def test_a_label_beyond_int32_is_out_of_range(be):
    """JAX's compiled cross-entropy cast labels to int32 before checking them: 2**32 + 1 read as 1."""
    z = be.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cross_entropy: label 4294967297 \(sample 1\) is out of range"):
        be.cross_entropy(z, be.asarray(np.array([0, 2**32 + 1], dtype=np.int64)))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_cross_entropy_with_zero_features(be, reduction):
    bias = np.array([0.5, -1.0, 2.0, 0.0])
    y = np.array([0, 3, 1])
    bt = torch.tensor(bias, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(torch.zeros((3, 0), dtype=torch.float64) @ torch.zeros(
        (4, 0), dtype=torch.float64).T + bt, torch.tensor(y), reduction=reduction)
    expected.sum().backward()
    loss, (dx, dw, db) = be.linear_cross_entropy_and_grad(be.asarray(np.zeros((3, 0))), be.asarray(np.zeros((4, 0))),
                                                          be.asarray(y), linear_bias=be.asarray(bias),
                                                          reduction=reduction)
    np.testing.assert_allclose(be.to_numpy(loss), expected.detach().numpy(), rtol=1e-12)
    assert tuple(dx.shape) == (3, 0) and tuple(dw.shape) == (4, 0)
    np.testing.assert_allclose(be.to_numpy(db), bt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_grad_output_that_is_not_finite_is_named(be, bad):
    x, w, y = be.asarray(np.ones((3, 2))), be.asarray(np.ones((4, 2))), be.asarray(np.array([0, 3, 1]))
    with pytest.raises(ValueError, match=r"linear_cross_entropy_and_grad: grad_output holds (nan|inf) at 1"):
        be.linear_cross_entropy_and_grad(x, w, y, reduction="none", grad_output=be.asarray(np.array([1.0, bad, 1.0])))
    with pytest.raises(ValueError, match=r"grad_output is (nan|inf)"):
        be.linear_cross_entropy_and_grad(x, w, y, grad_output=float(bad))


@pytest.mark.parametrize("requires", ["input", "linear_weight", "linear_bias"])
def test_torch_linear_cross_entropy_on_tensors_that_require_grad(requires):
    be = get_backend("torch")
    rng = np.random.default_rng(7)
    x0, w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    y = torch.tensor([0, 4, 2, 1])
    reference = [torch.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    expected = torch.nn.functional.cross_entropy(reference[0] @ reference[1].T + reference[2], y)
    expected.backward()
    given = {name: torch.tensor(a, requires_grad=name == requires)
             for name, a in (("input", x0), ("linear_weight", w0), ("linear_bias", b0))}
    loss, grads = be.linear_cross_entropy_and_grad(given["input"], given["linear_weight"], y,
                                                   linear_bias=given["linear_bias"])
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    for ours, theirs in zip(grads, reference):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-15)
    value = be.linear_cross_entropy(given["input"], given["linear_weight"], y, linear_bias=given["linear_bias"])
    np.testing.assert_allclose(value.item(), expected.item(), rtol=1e-12)


@pytest.mark.parametrize("call", [
    lambda be, m: be.softmax(m(3, 4)),
    lambda be, m: be.cross_entropy_and_grad(m(3, 4), torch.zeros(3, dtype=torch.int64)),
    lambda be, m: be.cross_entropy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64, device="meta")),
    lambda be, m: be.mse_loss(m(3), m(3)),
    lambda be, m: be.linear_cross_entropy_and_grad(m(3, 2), m(4, 2), torch.zeros(3, dtype=torch.int64)),
    lambda be, m: be.sgd_step([m(3)], [m(3)], be.sgd_init([m(3)]), lr=0.1, momentum=0.9),
    lambda be, m: be.adam_step([m(3)], [m(3)], be.adam_init([m(3)]), lr=0.1),
    lambda be, m: be.asarray(m(3)),
    lambda be, m: be.to_numpy(be.affine_relu(m(3, 2), m(2, 2), m(2))),
], ids=["softmax", "cross_entropy_and_grad", "meta labels", "mse_loss", "linear_ce", "sgd_step", "adam_step",
        "asarray", "to_numpy"])
def test_torch_meta_tensors_are_named(call):
    be = get_backend("torch")
    with pytest.raises(TypeError, match=r"is a meta tensor \(a shape and dtype with no data\)"):
        call(be, lambda *shape: torch.empty(*shape, device="meta", dtype=torch.float64))


# ---- the L1 gradient of a subnormal residual ----------------------------------------------------------


@pytest.mark.skipif("jax" not in AVAILABLE, reason="JAX is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_l1_gradient_of_a_subnormal_residual(dtype):
    """XLA flushes subnormals to zero in every operation; the sign comes from the bits (torch gives +-1/N)."""
    be = get_backend("jax")
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([tiny, -tiny, 3 * tiny, 1.0, 0.0], dtype)
    y = np.array([0.0, 0.0, tiny, 1.0, -0.0], dtype)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    torch.nn.functional.l1_loss(xt, torch.tensor(y.astype(np.float64))).backward()
    for op in ("l1_loss_grad", "smooth_l1_loss_grad"):
        options = {"beta": 0.0} if op.startswith("smooth") else {}
        grad = be.to_numpy(getattr(be, op)(be.asarray(x), be.asarray(y), **options))
        np.testing.assert_array_equal(grad, xt.grad.numpy().astype(dtype))


# ---- cupy without a GPU ---------------------------------------------------------------------------------------


def test_cupy_without_a_driver_says_so_first():
    from softgrad.backends.cupy_backend import no_cuda_device_reason

    error = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
    assert "no NVIDIA GPU or driver found" in no_cuda_device_reason(error, driver_version=None)
    old = no_cuda_device_reason(error, driver_version=11040)
    assert "the NVIDIA driver supports CUDA up to 11.4" in old and "cupy-cuda11x" in old
