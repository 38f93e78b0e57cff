"""The JAX backend's compiled ``linear_cross_entropy[_and_grad]`` (one XLA loop over the chunks) against torch
float64 autograd of the dense composition, that the compiled loop is what runs (and is compiled once per
configuration, whatever the number of ignored tokens), and that errors are still the shared loop's."""

from __future__ import annotations

import re

import numpy as np
import pytest
from softgrad.backends import available_backends, get_backend

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(available_backends().get("jax") != "available", reason="the jax backend is unavailable")

from softgrad.backends import jax_backend  # noqa: E402
from softgrad.numerics.losses import linear_cross_entropy as shared_loop  # noqa: E402
from softgrad.numerics.methods import linear_cross_entropy_methods  # noqa: E402

F = torch.nn.functional


def _compiled():
    return jax_backend._jit(jax_backend._linear_ce_kernel, jax_backend.LINEAR_CE_STATIC)


# ---- the independent reference: torch float64 autograd of the dense logits ---------------------------------


def torch_reference(x, w, target, *, linear_bias=None, weight=None, reduction="mean", ignore_index=-100,
                    label_smoothing=0.0, z_loss=0.0, softcap=None, grad_output=None, **_):
    """``(loss, (d_input, d_linear_weight, d_linear_bias))`` of
    ``cross_entropy(softcap(x @ w.T + b), target, weight, ...) + z_loss * lse**2`` (per kept token; "mean"
    divides it by the kept tokens), differentiated by torch in float64."""
    def t(a, grad=False):
        return None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=grad)

    xt, wt, bt = t(x, True), t(w, True), t(linear_bias, True)
    z = xt @ wt.T
    if bt is not None:
        z = z + bt
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    index = np.issubdtype(np.asarray(target).dtype, np.integer)
    y = torch.tensor(np.asarray(target, np.int64)) if index else t(target)
    loss = F.cross_entropy(z, y, weight=t(weight), reduction=reduction, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
    if z_loss:
        kept = (y != ignore_index).to(torch.float64) if index else torch.ones(z.shape[0], dtype=torch.float64)
        lse = torch.logsumexp(z, dim=1)
        z_rows = z_loss * torch.where(kept > 0, lse, torch.zeros_like(lse)) ** 2
        loss = loss + (z_rows if reduction == "none" else z_rows.sum() / kept.sum() if reduction == "mean"
                       else z_rows.sum())
    upstream = torch.ones_like(loss) if grad_output is None else t(grad_output)
    (loss * upstream).sum().backward()
    grads = tuple(None if a is None else a.grad.numpy() for a in (xt, wt, bt))
    return loss.detach().numpy(), grads


# ---- helpers -------------------------------------------------------------------------------------------


def close(actual, expected, dtype, what):
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if np.size(expected) else 1.0
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def on_jax(be, options):
    return {k: be.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}


def make_case(rng, n, d, num_classes, dtype, *, bias=False, weight=False, ignored=(), probs=False, ignore_index=-100):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((num_classes, d)) * 0.7).astype(dtype)
    options = {}
    if bias:
        options["linear_bias"] = (rng.standard_normal(num_classes) * 0.5).astype(dtype)
    if weight:
        options["weight"] = rng.uniform(0.3, 2.0, num_classes).astype(dtype)
    if probs:
        p = rng.random((n, num_classes))
        target = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, num_classes, n)
        if ignore_index >= 0:
            target[target == ignore_index] = (ignore_index + 1) % num_classes
        target[list(ignored)] = ignore_index
        if ignore_index != -100:
            options["ignore_index"] = ignore_index
    return x, w, target, options


def check(be, x, w, target, options, dtype, value_too=False):
    expected = torch_reference(x, w, target, **options)
    loss, grads = be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(target),
                                                   **on_jax(be, options))
    assert loss.dtype == dtype and all(g is None or g.dtype == dtype for g in grads)
    close(loss, expected[0], dtype, "loss")
    for name, got, want in zip(("d_input", "d_linear_weight", "d_linear_bias"), grads, expected[1]):
        assert (got is None) == (want is None), name
        if want is not None:
            assert got.shape == want.shape
            close(got, want, dtype, name)
    if value_too:
        value_options = {k: v for k, v in options.items() if k != "grad_output"}
        close(be.linear_cross_entropy(be.asarray(x), be.asarray(w), be.asarray(target), **on_jax(be, value_options)),
              expected[0], dtype, "linear_cross_entropy")


# ---- 1. the options, against torch -----------------------------------------------------------------------

# (name, case arguments, options): N=13, d=5, V=11 unless said; each compiles one configuration
GRID = [
    ("plain-mean", {}, {}),
    ("bias-weight-ignored-whole-chunk", dict(bias=True, weight=True, ignored=(0, 4, 5, 6, 7, 11)),
     {"chunk_size": 4}),  # 7 kept rows: chunks of 4 and 3; rows 4..7 would have been a whole chunk
    ("sum-smoothing-chunk-divides", dict(bias=True, ignored=(2, 9, 10, 12)), {"reduction": "sum",
                                                                             "label_smoothing": 0.1, "chunk_size": 3}),
    ("none-weight-smoothing-zloss-grad-output", dict(weight=True, ignored=(1, 3)),
     {"reduction": "none", "label_smoothing": 0.2, "z_loss": 0.03, "chunk_size": 5, "grad_output": "vector"}),
    ("none-softcap-chunk-1", dict(bias=True, ignored=(6,)), {"reduction": "none", "softcap": 1.5, "chunk_size": 1}),
    ("mean-everything-scalar-grad-output", dict(bias=True, weight=True, ignored=(3, 4, 5, 6)),
     {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0, "chunk_size": 4, "grad_output": 0.5}),
    ("sum-0d-grad-output-zloss", dict(ignored=(8,)), {"reduction": "sum", "z_loss": 0.1, "grad_output": "0-d"}),
    ("ignore-index-in-range", dict(ignore_index=2, weight=True), {"chunk_size": 6}),
    ("probs-mean-weight-smoothing", dict(probs=True, weight=True), {"label_smoothing": 0.1, "chunk_size": 4}),
    ("probs-none-softcap-zloss-grad-output", dict(probs=True, bias=True),
     {"reduction": "none", "softcap": 2.0, "z_loss": 0.05, "chunk_size": 5, "grad_output": "vector"}),
    ("probs-sum-bias", dict(probs=True, bias=True), {"reduction": "sum"}),
    ("two-classes", dict(bias=True), {"z_loss": 0.02, "chunk_size": 2, "num_classes": 2}),
    ("memory-budget-chunks", dict(bias=True, ignored=(0,)), {"memory_budget": 3 * 11 * 8 * 4}),  # 3 rows
]


@pytest.mark.parametrize("seed, name, case, options", [(i, *g) for i, g in enumerate(GRID)], ids=[g[0] for g in GRID])
def test_matches_torch_float64_autograd(seed, name, case, options):
    be = get_backend("jax")
    rng = np.random.default_rng(seed)
    options = dict(options)
    num_classes = options.pop("num_classes", 11)
    x, w, target, extra = make_case(rng, 13, 5, num_classes, np.float64, **case)
    options.update(extra)
    if options.get("grad_output") == "vector":
        options["grad_output"] = rng.standard_normal(13)
    elif options.get("grad_output") == "0-d":
        options["grad_output"] = np.asarray(-1.75)
    check(be, x, w, target, options, np.float64, value_too=name in ("plain-mean", "probs-sum-bias"))


def test_float32_within_tolerance():
    be = get_backend("jax")
    rng = np.random.default_rng(3)
    x, w, target, options = make_case(rng, 29, 7, 37, np.float32, bias=True, weight=True, ignored=(0, 1, 2, 20))
    check(be, x, w, target, {**options, "label_smoothing": 0.05, "z_loss": 1e-3, "chunk_size": 8}, np.float32)
    x, w, target, options = make_case(rng, 29, 7, 37, np.float32, probs=True)
    check(be, x, w, target, {**options, "reduction": "none", "softcap": 4.0}, np.float32)


@pytest.mark.parametrize("chunk_size", [4, None])
def test_a_large_vocabulary(chunk_size):
    be = get_backend("jax")
    rng = np.random.default_rng(13)
    x, w, target, options = make_case(rng, 6, 3, 50_000, np.float64, bias=True, weight=True, ignored=(3,))
    check(be, x, w, target, {**options, "label_smoothing": 0.05, "z_loss": 1e-4, "chunk_size": chunk_size},
          np.float64)


def test_a_minus_inf_bias_masks_a_class():
    be = get_backend("jax")
    rng = np.random.default_rng(5)
    x, w, target, options = make_case(rng, 13, 5, 11, np.float64, bias=True, ignored=(7,))
    options["linear_bias"][4] = -np.inf
    target[target == 4] = 5
    check(be, x, w, target, {**options, "reduction": "sum", "chunk_size": 4, "z_loss": 0.1}, np.float64)


def test_every_token_ignored():
    be = get_backend("jax")
    rng = np.random.default_rng(6)
    x, w, target, options = make_case(rng, 5, 3, 4, np.float64, bias=True, ignored=range(5))
    for reduction in ("sum", "none"):  # zeros: a loss of 0 and no gradient (torch's values)
        check(be, x, w, target, {**options, "reduction": reduction, "chunk_size": 2}, np.float64)
    with pytest.raises(ValueError, match="reduction='mean' over no weight: every target equals ignore_index"):
        be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(target))


def test_float16_and_bfloat16_compute_in_float32_and_return_their_dtype():
    be = get_backend("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(8)
    x, w, target, options = make_case(rng, 9, 4, 6, np.float32, bias=True, ignored=(2,))
    for dtype in (jnp.float16, jnp.bfloat16):
        xs, ws, bs = (jnp.asarray(a, dtype) for a in (x, w, options["linear_bias"]))
        loss, grads = be.linear_cross_entropy_and_grad(xs, ws, be.asarray(target), linear_bias=bs, chunk_size=4,
                                                       z_loss=1e-3)
        assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
        expected = torch_reference(*(np.asarray(a, np.float64) for a in (xs, ws)), target,
                                   linear_bias=np.asarray(bs, np.float64), z_loss=1e-3)
        for got, want in zip((loss, *grads), (expected[0], *expected[1])):  # the results rounded to 16 bits
            np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-2, atol=1e-2)


# ---- 2. the compiled loop is what runs, compiled once per configuration ---------------------------------


def test_the_compiled_loop_runs_and_is_not_recompiled_for_another_count_of_ignored_tokens(monkeypatch):
    be = get_backend("jax")
    calls = []
    original = shared_loop.linear_cross_entropy
    monkeypatch.setattr(shared_loop, "linear_cross_entropy", lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = np.random.default_rng(9)
    x, w, _, options = make_case(rng, 40, 6, 9, np.float32, bias=True)
    xb, wb, bb = be.asarray(x), be.asarray(w), be.asarray(options["linear_bias"])
    sizes = []
    for ignored in (1, 7, 19, 33):  # 39, 33, 21 and 7 kept rows: 5, 5, 3 and 1 chunks of 8 run
        y = rng.integers(0, 9, 40)
        y[rng.permutation(40)[:ignored]] = -100
        loss, _ = be.linear_cross_entropy_and_grad(xb, wb, be.asarray(y), linear_bias=bb, chunk_size=8)
        sizes.append(_compiled()._cache_size())
        assert np.isfinite(float(loss))
    assert sizes[1:] == sizes[:1] * 3  # compiled once
    assert not calls  # the shared Python loop never ran


# ---- 3. errors: the shared loop diagnoses what the compiled one flags ------------------------------------


@pytest.mark.parametrize("op", ["linear_cross_entropy", "linear_cross_entropy_and_grad"])
def test_nan_in_the_input_names_its_row(op):
    be = get_backend("jax")
    rng = np.random.default_rng(10)
    x, w, target, _ = make_case(rng, 11, 4, 7, np.float32, ignored=(0, 1, 2))
    x[6, 2] = np.nan
    with pytest.raises(ValueError, match="row 6 of the logits holds NaN"):
        getattr(be, op)(be.asarray(x), be.asarray(w), be.asarray(target), chunk_size=3)


@pytest.mark.parametrize("op", ["linear_cross_entropy", "linear_cross_entropy_and_grad"])
def test_a_target_on_a_minus_inf_class_is_the_shared_error(op):
    be = get_backend("jax")
    x = np.array([[0.5, -1.0], [2.0, 0.25], [-0.5, 1.5], [1.0, 1.0]])
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.5, -2.0]])
    b = np.array([0.0, 0.5, -np.inf, 0.25, -1.0])
    args = (be.asarray(x), be.asarray(w), be.asarray(np.array([0, 2, 3, 4])))
    with pytest.raises(ValueError) as compiled:
        getattr(be, op)(*args, linear_bias=be.asarray(b))
    with be.scope(), pytest.raises(ValueError) as shared:
        linear_cross_entropy_methods()[op](be, *args, linear_bias=be.asarray(b))
    assert str(compiled.value) == str(shared.value)
    assert re.search(r"infinite|-inf", str(compiled.value))


def test_argument_errors_come_before_compiling():
    be = get_backend("jax")
    xb, wb = be.asarray(np.ones((4, 2))), be.asarray(np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"label 5 \(sample 2\) is out of range for C=5"):
        be.linear_cross_entropy_and_grad(xb, wb, be.asarray(np.array([0, 1, 5, 2])))
    with pytest.raises(ValueError, match="softcap must be > 0"):
        be.linear_cross_entropy(xb, wb, be.asarray(np.array([0, 1, 2, 3])), softcap=0.0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) grad_output"):
        be.linear_cross_entropy(xb, wb, be.asarray(np.array([0, 1, 2, 3])), grad_output=1.0)
    with pytest.raises(TypeError, match="keyword only"):
        be.linear_cross_entropy(xb, wb, be.asarray(np.array([0, 1, 2, 3])), None)
