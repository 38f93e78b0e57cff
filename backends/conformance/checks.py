"""The protocol's checks: one source for the conformance kit and for softgrad's own suite.

Each :class:`Check` is a function ``fn(be, dtype, data)`` that asserts one
property of a backend, against independent references: the float64 NumPy
functions in :mod:`backends.conformance.reference`, central finite
differences, PyTorch's ``torch.nn.functional`` and autograd where torch is
installed, and the NumPy backend for a short training trajectory. ``data``
is Hypothesis' ``st.data()`` for property checks, ``None`` for the others.
The suite runs every check on every backend (``tests/test_properties.py``);
``python -m backends.conformance NAME`` runs them on any registered backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance import reference as ref
from softgrad.backends.conformance.strategies import logits, loss_case, sgd_settings

# Tolerances, per dtype, for comparing against a float64 reference computed
# from the same (exactly representable) inputs.
TOLERANCES = {
    np.float32: dict(rtol=2e-5, atol=1e-6),
    np.float64: dict(rtol=1e-10, atol=1e-12),
}

# the largest error seen by assert_close while a check runs, as a fraction of the tolerance it was
# allowed, and the largest absolute error (the kit's table shows both)
_largest_error: contextvars.ContextVar[list | None] = contextvars.ContextVar("largest_error", default=None)


@contextlib.contextmanager
def recording_errors() -> Iterator[list]:
    """Collect ``[largest error / its tolerance, largest absolute error]`` of the assert_close calls inside."""
    box = [0.0, 0.0]
    token = _largest_error.set(box)
    try:
        yield box
    finally:
        _largest_error.reset(token)


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    """``actual`` equals the float64 ``expected`` within the dtype's tolerance.

    ``scale`` widens the absolute tolerance for quantities that grow with the
    logits (log-probabilities, losses).
    """
    tol = TOLERANCES[np.dtype(dtype).type]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    box = _largest_error.get()
    if box is not None and actual.shape == expected.shape:
        _record(box, actual, expected, tol["rtol"], tol["atol"] * max(1.0, scale))
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale),
                               err_msg=what)


def _record(box: list, actual, expected, rtol: float, atol: float) -> None:
    both = np.isfinite(actual) & np.isfinite(expected)
    if np.any(both):
        error = np.abs(actual[both] - expected[both])
        box[0] = max(box[0], float(np.max(error / (atol + rtol * np.abs(expected[both])))))
        box[1] = max(box[1], float(np.max(error)))


def _torch():
    """PyTorch, the second oracle, where it is installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _on(be, kwargs):
    """The keyword arguments with the weight moved to the backend."""
    out = dict(kwargs)
    if out.get("weight") is not None:
        out["weight"] = be.asarray(out["weight"])
    return out


def _torch_kwargs(torch, kwargs):
    out = dict(kwargs)
    if out.get("weight") is not None:
        out["weight"] = torch.from_numpy(np.asarray(out["weight"], dtype=np.float64))
    return out


def _torch_target(torch, target):
    t = torch.from_numpy(np.asarray(target))
    return t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)


# ---- softmax and log_softmax ---------------------------------------------------------


def softmax_rows_are_distributions(be, dtype, data):
    z, _ = data.draw(logits(dtype))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    assert p.dtype == dtype and p.shape == z.shape
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(p, ref.softmax(z), dtype)
    torch = _torch()
    if torch is not None:
        assert_close(p, torch.softmax(torch.from_numpy(z.astype(np.float64)), dim=1).numpy(), dtype)


def softmax_handles_masked_classes(be, dtype, data):
    z, scale = data.draw(logits(dtype, masked=True))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    logp = be.to_numpy(be.log_softmax(be.asarray(z)))
    assert np.all(p[np.isneginf(z)] == 0) and np.all(np.isneginf(logp[np.isneginf(z)]))
    assert not np.any(np.isnan(p)) and not np.any(np.isnan(logp))
    assert_close(p, ref.softmax(z), dtype)
    finite = np.isfinite(z)
    assert_close(logp[finite], ref.log_softmax(z)[finite], dtype, scale=scale)


def softmax_is_shift_invariant(be, dtype, data):
    z, scale = data.draw(logits(dtype, max_c=100))
    shift = data.draw(st.sampled_from([-1e3, -1.0, 0.5, 1e3])).__float__()
    # exact in float64; in float32 the shifted input itself is rounded, so compare within that
    shifted = (z.astype(np.float64) + shift).astype(dtype)
    p = be.to_numpy(be.softmax(be.asarray(z)))
    p_shifted = be.to_numpy(be.softmax(be.asarray(shifted)))
    assert_close(p_shifted, ref.softmax(shifted), dtype)
    if dtype == np.float64:
        np.testing.assert_allclose(p_shifted, p, rtol=1e-9 * max(1.0, abs(shift)),
                                   atol=1e-12 * max(1.0, abs(shift) + scale))


def log_softmax_is_log_of_softmax_where_finite(be, dtype, data):
    z, scale = data.draw(logits(dtype))
    logp = be.to_numpy(be.log_softmax(be.asarray(z)))
    p = be.to_numpy(be.softmax(be.asarray(z)))
    assert logp.dtype == dtype and np.all(np.isfinite(logp))
    assert_close(logp, ref.log_softmax(z), dtype, scale=scale)
    torch = _torch()
    if torch is not None:
        oracle = torch.log_softmax(torch.from_numpy(z.astype(np.float64)), dim=1).numpy()
        assert_close(logp, oracle, dtype, scale=scale)
    usable = p > np.finfo(dtype).tiny * 1e3  # log(softmax) is finite and accurate there
    assert_close(logp[usable], np.log(p[usable].astype(np.float64)), dtype, scale=scale)


def softmax_on_other_axes(be, dtype, data):
    z, _ = data.draw(logits(dtype, max_n=40, max_c=40))
    assert_close(be.to_numpy(be.softmax(be.asarray(z), axis=0)), ref.softmax(z, axis=0), dtype)
    z3 = z.reshape(1, *z.shape)
    assert_close(be.to_numpy(be.log_softmax(be.asarray(z3), axis=1)), ref.log_softmax(z3, axis=1), dtype,
                 scale=float(np.abs(z).max()))


def large_float32_logits_stay_finite(be, dtype, data):
    z, _ = data.draw(logits(np.float32, max_n=64, max_c=100))
    z = (z / max(1e-30, float(np.abs(z).max())) * 1e4).astype(np.float32)  # magnitude 1e4
    for op in (be.softmax, be.log_softmax):
        assert np.all(np.isfinite(be.to_numpy(op(be.asarray(z)))))
    y = np.zeros(z.shape[0], dtype=np.int64)
    assert np.isfinite(float(be.to_numpy(be.cross_entropy(be.asarray(z), be.asarray(y)))))
    assert np.all(np.isfinite(be.to_numpy(be.cross_entropy_grad(be.asarray(z), be.asarray(y)))))


# ---- losses ------------------------------------------------------------------------------


def cross_entropy_is_nll_of_log_softmax(be, dtype, data):
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


def losses_match_reference_and_torch(be, dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    loss = be.to_numpy(be.cross_entropy(be.asarray(z), be.asarray(target), **_on(be, kwargs)))
    assert loss.dtype == dtype
    expected = ref.cross_entropy(z, target, **kwargs)
    assert_close(loss, expected, dtype, scale=scale)
    torch = _torch()
    F = None if torch is None else torch.nn.functional
    if F is not None:
        oracle = F.cross_entropy(torch.from_numpy(z.astype(np.float64)), _torch_target(torch, target),
                                 **_torch_kwargs(torch, kwargs))
        assert_close(loss, oracle.numpy(), dtype, scale=scale)
    if target.ndim == 1:
        logp = ref.log_softmax(z).astype(dtype)
        nll_kwargs = {k: v for k, v in kwargs.items() if k != "label_smoothing"}
        nll = be.to_numpy(be.nll_loss(be.asarray(logp), be.asarray(target), **_on(be, nll_kwargs)))
        assert_close(nll, ref.nll_loss(logp, target, **nll_kwargs), dtype, scale=scale)
        if F is not None:
            oracle = F.nll_loss(torch.from_numpy(logp.astype(np.float64)), _torch_target(torch, target),
                                **_torch_kwargs(torch, nll_kwargs))
            assert_close(nll, oracle.numpy(), dtype, scale=scale)


def gradient_matches_reference_and_autograd(be, dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    zb, tb = be.asarray(z), be.asarray(target)
    grad = be.to_numpy(be.cross_entropy_grad(zb, tb, **_on(be, kwargs)))
    loss_and_grad = be.cross_entropy_and_grad(zb, tb, **_on(be, kwargs))
    assert grad.dtype == dtype and grad.shape == z.shape
    assert_close(grad, ref.cross_entropy_grad(z, target, **kwargs), dtype)
    assert_close(be.to_numpy(loss_and_grad[1]), ref.cross_entropy_grad(z, target, **kwargs), dtype)
    assert_close(be.to_numpy(loss_and_grad[0]), ref.cross_entropy(z, target, **kwargs), dtype, scale=scale)
    torch = _torch()
    if torch is not None:
        z_torch = torch.from_numpy(z.astype(np.float64)).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(z_torch, _torch_target(torch, target), **_torch_kwargs(torch, kwargs))
        (autograd,) = torch.autograd.grad(loss.sum(), z_torch)
        assert_close(grad, autograd.numpy(), dtype)
        assert_close(be.to_numpy(loss_and_grad[1]), autograd.numpy(), dtype)
        assert_close(be.to_numpy(loss_and_grad[0]), loss.detach().numpy(), dtype, scale=scale)


def gradient_matches_finite_differences(be, dtype, data):
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


# ---- non-finite values and bad input -------------------------------------------------------


def _raises(error: type, match: str, call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except error as caught:
        assert re.search(match, str(caught)), f"{what}: {type(caught).__name__}({caught}) does not say {match!r}"
        return
    except Exception as other:
        raise AssertionError(f"{what}: raised {type(other).__name__}({other}), expected {error.__name__}") from None
    raise AssertionError(f"{what}: no {error.__name__} (expected one saying {match!r})")


def nonfinite_semantics(be, dtype, data):
    """Masked classes give exact finite values; rows with no softmax and infinite losses raise."""
    z = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]], dtype=dtype)
    y = np.array([2, 0])
    loss, grad = be.cross_entropy_and_grad(be.asarray(z), be.asarray(y))
    assert_close(be.to_numpy(loss), ref.cross_entropy(z, y), dtype)
    assert_close(be.to_numpy(grad), ref.cross_entropy_grad(z, y), dtype)
    assert be.to_numpy(grad)[0, 1] == 0 and be.to_numpy(grad)[1, 2] == 0
    for ops in ("softmax", "log_softmax"):
        for row, why in (([np.nan, 1.0, 0.0], "holds NaN"), ([np.inf, 1.0, 0.0], r"holds \+inf"),
                         ([-np.inf] * 3, "all -inf")):
            bad = np.array([[0.0, 1.0, 2.0], row], dtype=dtype)
            _raises(ValueError, f"row 1 .*{why}", lambda o=ops, b=bad: getattr(be, o)(be.asarray(b)),
                    f"{ops} of a row that {why}")
    bad = np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 0.0]], dtype=dtype)
    for op in ("cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"):
        _raises(ValueError, "row 1", lambda o=op: getattr(be, o)(be.asarray(bad), be.asarray(y)),
                f"{op} with a NaN logit")
        _raises(ValueError, "sample 0 is infinite", lambda o=op: getattr(be, o)(
            be.asarray(z), be.asarray(np.array([1, 0]))), f"{op} with the target on a -inf logit")


def bad_input_is_named(be, dtype, data):
    """Labels out of range, float labels, length mismatches, bad options: clear errors, never NaN."""
    z = be.asarray(np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]], dtype=dtype))
    for op in ("cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad", "nll_loss"):
        call = getattr(be, op)
        _raises(ValueError, r"label 3 \(sample 1\) is out of range for C=3", lambda c=call: c(
            z, be.asarray(np.array([0, 3]))), f"{op}: label out of range")
        _raises(TypeError, "float", lambda c=call: c(z, be.asarray(np.array([0.0, 1.0], dtype=dtype))),
                f"{op}: float labels")
        _raises(ValueError, "3 labels for 2 samples", lambda c=call: c(z, be.asarray(np.array([0, 1, 2]))),
                f"{op}: N mismatch")
        _raises(ValueError, "reduction must be one of", lambda c=call: c(
            z, be.asarray(np.array([0, 1])), reduction="average"), f"{op}: bad reduction")
        _raises(ValueError, r"empty batch", lambda c=call: c(
            be.asarray(np.zeros((0, 3), dtype=dtype)), be.asarray(np.zeros(0, dtype=np.int64))), f"{op}: N = 0")
    _raises(ValueError, "axis", lambda: be.softmax(z, axis=2), "softmax: axis out of range")


# ---- SGD and training ----------------------------------------------------------------------


def sgd_matches_the_reference_update(be, dtype, data):
    """``sgd_step`` against torch.optim.SGD's rule in float64, for several steps; grads untouched."""
    settings = data.draw(sgd_settings())
    steps = data.draw(st.integers(1, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shapes = [(4, 3), (3,), (7, 2)]
    params0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    hyper = {k: v for k, v in settings.items() if k != "lr"}
    expected = ref.sgd_steps(params0, grads, [settings["lr"]] * steps, **hyper)
    params = [be.asarray(p.copy()) for p in params0]
    state = be.sgd_init(params)
    for k in range(steps):
        before = [g.copy() for g in grads[k]]
        params, state = be.sgd_step(params, [be.asarray(g) for g in grads[k]], state, lr=settings["lr"], **hyper)
        assert state.step == k + 1
        for ours, theirs in zip(params, expected[k]):
            assert be.to_numpy(ours).dtype == dtype
            assert_close(be.to_numpy(ours), theirs, dtype, scale=k + 1, what=f"step {k + 1}")
        for g, g0 in zip(grads[k], before):
            np.testing.assert_array_equal(g, g0)  # gradients are not modified


def views_are_read_and_written_as_views(be, dtype, data):
    """The fused and in-place paths on strided, offset and transposed views (a parameter that is a slice of a
    larger buffer, logits that are every other column): ``sgd_step`` with momentum and ``cross_entropy_and_grad``
    against the float64 references, and not one element of the buffer outside the view changed (a fused kernel
    that walks memory as one flat run writes between a strided view's elements)."""
    sentinel = 7.25
    rng = np.random.default_rng(11)
    p0, g0 = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
    z0, labels = rng.standard_normal((5, 4)).astype(dtype), np.array([0, 3, 1, 2, 3])
    every_other, block = (slice(None), slice(None, None, 2)), (slice(1, None), slice(1, -1))
    for name, shape, index in (("every other column", (3, 8), every_other), ("a block at an offset", (4, 6), block)):
        host, grad_host = np.full(shape, sentinel, dtype), np.full(shape, sentinel, dtype)
        host[index], grad_host[index] = p0, g0
        buffer = be.asarray(host)
        params, state = [buffer[index]], be.sgd_init([buffer[index]])
        for _ in range(2):
            params, state = be.sgd_step(params, [be.asarray(grad_host)[index]], state, lr=0.1, momentum=0.9)
        expected = ref.sgd_steps([p0], [[g0], [g0]], [0.1, 0.1], momentum=0.9)[-1][0]
        assert_close(be.to_numpy(params[0]), expected, dtype, what=f"sgd_step on {name}")
        outside = np.ones(shape, bool)
        outside[index] = False
        after = np.asarray(be.to_numpy(buffer))
        assert np.all(after[outside] == sentinel), f"sgd_step on {name}: wrote outside the view"
    for name, view in (("every other column", be.asarray(np.repeat(z0, 2, axis=1))[:, ::2]),
                       ("transposed", be.asarray(z0.T.copy()).T)):
        loss, grad = be.cross_entropy_and_grad(view, be.asarray(labels))
        assert_close(be.to_numpy(loss), ref.cross_entropy(z0.astype(np.float64), labels), dtype,
                     what=f"cross_entropy on {name}")
        assert_close(be.to_numpy(grad), ref.cross_entropy_grad(z0.astype(np.float64), labels), dtype,
                     what=f"cross_entropy_grad on {name}")


def _train(be, dtype, steps: int = 32):
    """A 12-16-4 ReLU network, trained with cross-entropy and Nesterov SGD, written with protocol ops only."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((steps * 8, 12)).astype(dtype)
    y = rng.integers(0, 4, steps * 8)
    w1 = (rng.standard_normal((12, 16)) * np.sqrt(2 / 12)).astype(dtype)
    w2 = (rng.standard_normal((16, 4)) * np.sqrt(1 / 16)).astype(dtype)
    params = [be.asarray(p) for p in (w1, np.zeros(16, dtype), w2, np.zeros(4, dtype))]
    xb, yb = be.asarray(x), be.asarray(y)
    state = be.sgd_init(params)
    losses = []
    for k in range(steps):
        xs, ys = xb[k * 8:(k + 1) * 8, ...], yb[k * 8:(k + 1) * 8]
        h = be.affine_relu(xs, params[0], params[1])
        z = be.affine(h, params[2], params[3])
        loss, dz = be.cross_entropy_and_grad(z, ys)
        dw2, db2 = be.matmul(h.T, dz), be.sum(dz, axis=0)
        dh, db1 = be.relu_bias_backward(h, be.matmul(dz, params[2].T))
        dw1 = be.matmul(xs.T, dh)
        params, state = be.sgd_step(params, [dw1, db1, dw2, db2], state, lr=0.1, momentum=0.9, nesterov=True,
                                    weight_decay=1e-3)
        losses.append(float(be.to_numpy(loss)))
    return [be.to_numpy(p) for p in params], losses


def training_follows_the_numpy_trajectory(be, dtype, data):
    """32 steps of a small MLP on this backend and on NumPy: float64 within 1e-10, float32 within 2e-4."""
    from softgrad.backends import get_backend

    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-4, 2e-5)
    ours, our_losses = _train(be, dtype)
    theirs, their_losses = _train(get_backend("numpy"), dtype)
    box = _largest_error.get()
    for a, b in zip(ours, theirs):
        if box is not None:
            _record(box, a.astype(np.float64), b.astype(np.float64), rtol, atol)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    np.testing.assert_allclose(our_losses, their_losses, rtol=rtol * 10, atol=atol * 10)


def dense_layer_ops_match_references(be, dtype, data):
    """affine_relu, relu_backward (which leaves dh as it is), relu_backward_inplace and relu_bias_backward
    against float64 NumPy written out, over shapes
    from one element to more than a vector register's worth of rows and columns, NaN and exact zeros
    included (NaN stays NaN forward; the gradient is 0 wherever h is not > 0, as in PyTorch)."""
    rng = np.random.default_rng(11)
    for n, k, m in ((1, 1, 1), (7, 5, 3), (64, 33, 17), (130, 20, 257)):
        # x and W in quarters up to +-1: every product and sum is exact however the matmul rounds (TF32
        # on a GPU included), so what is checked is the bias and the ReLU
        x = (rng.integers(-4, 5, (n, k)) / 4).astype(dtype)
        w, b = (rng.integers(-4, 5, (k, m)) / 4).astype(dtype), rng.standard_normal(m).astype(dtype)
        x[n // 2, k // 2] = np.nan
        expected = np.maximum(x.astype(np.float64) @ w.astype(np.float64) + b, 0.0)
        assert_close(be.to_numpy(be.affine_relu(be.asarray(x), be.asarray(w), be.asarray(b))), expected, dtype,
                     scale=k, what=f"affine_relu {n}x{k}x{m}")
        h = np.maximum(rng.standard_normal((n, m)), 0.0).astype(dtype)
        h[0, 0] = 0.0  # the subgradient at 0 is 0
        dh = rng.standard_normal((n, m)).astype(dtype)
        if n * m > 1:
            dh[-1, -1], h[-1, -1] = np.nan, 0.0  # a NaN gradient behind a closed ReLU gives 0
        dz = np.where(h > 0, dh, 0.0)
        dh_on_backend = be.asarray(dh.copy())
        got = be.to_numpy(be.relu_backward(be.asarray(h), dh_on_backend))
        np.testing.assert_array_equal(got, dz.astype(dtype), err_msg=f"relu_backward {n}x{m}")
        np.testing.assert_array_equal(be.to_numpy(dh_on_backend), dh, err_msg=f"relu_backward wrote into dh {n}x{m}")
        got = be.to_numpy(be.relu_backward_inplace(be.asarray(h), be.asarray(dh.copy())))  # the hook may write dh
        np.testing.assert_array_equal(got, dz.astype(dtype), err_msg=f"relu_backward_inplace {n}x{m}")
        got, dbias = (be.to_numpy(a) for a in be.relu_bias_backward(be.asarray(h), be.asarray(dh.copy())))
        np.testing.assert_array_equal(got, dz.astype(dtype), err_msg=f"relu_bias_backward {n}x{m}")
        assert dbias.shape == (m,) and dbias.dtype == dtype, f"relu_bias_backward: bias gradient {dbias.shape} {dbias.dtype}"
        assert_close(dbias, dz.astype(np.float64).sum(axis=0), dtype, scale=n, what=f"relu_bias_backward sum {n}x{m}")


# ---- the list ------------------------------------------------------------------------------------

DTYPES = (np.float32, np.float64)


@dataclass(frozen=True)
class Check:
    """One property: ``fn(be, dtype, data)``; ``op`` is the row of the kit's table it counts in."""

    name: str
    op: str
    fn: Callable[[Any, Any, Any], None]
    dtypes: tuple = DTYPES
    generated: bool = True  # drawn by Hypothesis (data is st.data()); else run once (data is None)


CHECKS: tuple[Check, ...] = (
    Check("softmax_rows_are_distributions", "softmax", softmax_rows_are_distributions),
    Check("softmax_handles_masked_classes", "softmax", softmax_handles_masked_classes),
    Check("softmax_is_shift_invariant", "softmax", softmax_is_shift_invariant),
    Check("softmax_on_other_axes", "softmax", softmax_on_other_axes),
    Check("log_softmax_is_log_of_softmax_where_finite", "log_softmax", log_softmax_is_log_of_softmax_where_finite),
    Check("large_float32_logits_stay_finite", "softmax", large_float32_logits_stay_finite, (np.float32,)),
    Check("cross_entropy_is_nll_of_log_softmax", "nll_loss", cross_entropy_is_nll_of_log_softmax),
    Check("losses_match_reference_and_torch", "cross_entropy", losses_match_reference_and_torch),
    Check("gradient_matches_reference_and_autograd", "cross_entropy_grad", gradient_matches_reference_and_autograd),
    Check("gradient_matches_finite_differences", "cross_entropy_grad", gradient_matches_finite_differences,
          (np.float64,)),
    Check("nonfinite_semantics", "non-finite values", nonfinite_semantics, generated=False),
    Check("bad_input_is_named", "bad input", bad_input_is_named, generated=False),
    Check("sgd_matches_the_reference_update", "sgd_step", sgd_matches_the_reference_update),
    Check("views_are_read_and_written_as_views", "views", views_are_read_and_written_as_views, generated=False),
    Check("dense_layer_ops_match_references", "dense layer", dense_layer_ops_match_references, generated=False),
    Check("training_follows_the_numpy_trajectory", "training", training_follows_the_numpy_trajectory,
          generated=False),
)
