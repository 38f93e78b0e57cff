"""``linear_cross_entropy`` and ``linear_cross_entropy_and_grad``: the chunked cross-entropy of a linear layer.

References, never the code under test: the dense composition
``cross_entropy(x @ W.T + b, ...)`` (with softcap and z-loss) in float64
torch, differentiated by autograd; ``torch.nn.functional.linear_cross_entropy``
itself (dense, and its chunked path) with ``.backward()``; and the float64
NumPy reference of the conformance kit (``backends/conformance/linear_checks.py``),
used here only for the size of the rounding errors each quantity may carry.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softgrad.backends import get_backend
from softgrad.backends.conformance.linear_checks import (
    LinearCase,
    LinearReference,
    check_against,
    linear_case,
    on_backend,
)
from softgrad.backends.conformance.linear_checks import reference as numpy_reference

from tests.conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional
if not hasattr(F, "linear_cross_entropy"):
    pytest.skip("needs torch >= 2.14 (torch.nn.functional.linear_cross_entropy)", allow_module_level=True)

OPS = ("linear_cross_entropy", "linear_cross_entropy_and_grad")
CHUNKING = ("chunk_size", "memory_budget")
# a third of the profile's examples (ci: 10 per backend and dtype; JAX: 3, see conftest.EXAMPLES_DIVISOR)
EXAMPLES = max(5, settings.default.max_examples // 3)
ON_JAX = ("XLA compiles every new shape and option set anew (about a second each on a CPU): on JAX this test runs "
          "in float64 only or not at all; the property test here and the kit's checks (tests/test_properties.py) "
          "cover it in both dtypes")


def _on_jax(be) -> bool:
    return be.name.startswith("jax")


def _float64_only_on_jax(be, dtype):
    if _on_jax(be) and dtype != np.float64:
        pytest.skip(ON_JAX)


def _not_on_jax(be):
    if _on_jax(be):
        pytest.skip(ON_JAX)


def _t64(a):
    return torch.from_numpy(np.array(a, dtype=np.float64))


def dense_autograd(x, w, target, *, linear_bias=None, weight=None, reduction="mean", ignore_index=-100,
                   label_smoothing=0.0, z_loss=0.0, softcap=None, grad_output=None, chunk_size=None,
                   memory_budget=None):
    """The dense composition in float64 torch and its autograd: ``(loss, d_input, d_weight, d_bias)``.

    logits ``x @ W.T + b``, then ``softcap * tanh(z / softcap)``, then ``F.cross_entropy``, plus
    ``z_loss * logsumexp(z)**2`` per kept token (for "mean" over the number of kept tokens). The
    gradient is of ``sum(loss)`` ("none"), ``sum(grad_output * loss)``, or ``grad_output * loss``.
    """
    xt = _t64(x).requires_grad_(True)
    wt = _t64(w).requires_grad_(True)
    bt = None if linear_bias is None else _t64(linear_bias).requires_grad_(True)
    z = xt @ wt.T
    if bt is not None:
        z = z + bt
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    target = np.asarray(target)
    index = target.ndim == 1
    tt = torch.from_numpy(target.astype(np.int64)) if index else _t64(target)
    loss = F.cross_entropy(z, tt, weight=None if weight is None else _t64(weight), reduction=reduction,
                           ignore_index=ignore_index, label_smoothing=label_smoothing)
    if z_loss:
        kept = (tt != ignore_index).to(torch.float64) if index else torch.ones(len(tt), dtype=torch.float64)
        z_row = z_loss * torch.logsumexp(z, dim=1) ** 2 * kept
        loss = loss + (z_row if reduction == "none" else z_row.sum() if reduction == "sum"
                       else z_row.sum() / kept.sum())
    objective = loss.sum() if grad_output is None else (loss * _t64(grad_output)).sum()
    params = [t for t in (xt, wt, bt) if t is not None]
    grads = torch.autograd.grad(objective, params)
    return (loss.detach().numpy(), grads[0].numpy(), grads[1].numpy(),
            None if bt is None else grads[2].numpy())


def expected_from_torch(x, w, target, options, grad_output=None) -> LinearReference:
    """Torch autograd's values, with the rounding-error magnitudes of the NumPy reference."""
    loss, dx, dw, db = dense_autograd(x, w, target, grad_output=grad_output, **options)
    plain = {k: v for k, v in options.items() if k not in CHUNKING}
    scales = numpy_reference(x, w, target, grad_output=grad_output, **plain)
    return LinearReference(loss, dx, dw, db, scales.scales, scales.logit_gradient)


def _close16(actual, expected, rtol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1e-3, float(np.abs(expected).max())),
                               err_msg=what)


# ---- 1. every option, every backend: against torch autograd of the dense composition -----------


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_matches_torch_autograd_of_the_dense_composition(be, dtype, data):
    _float64_only_on_jax(be, dtype)
    x, w, target, options, grad_output = data.draw(linear_case(dtype))
    expected = expected_from_torch(x, w, target, options, grad_output)
    check_against(be, dtype, LinearCase(x, w, target, options, grad_output), expected)


def test_the_kits_numpy_reference_is_torch_autograd():
    """The conformance kit's float64 reference (its closed-form gradient) against torch autograd."""
    rng = np.random.default_rng(3)
    n, d, num_classes = 9, 4, 13
    x, w = rng.standard_normal((n, d)), rng.standard_normal((num_classes, d)) * 2
    b, cw = rng.standard_normal(num_classes), rng.uniform(0.1, 2, num_classes)
    labels = rng.integers(0, num_classes, n)
    labels[[2, 3, 4]] = -1
    probs = rng.dirichlet(np.ones(num_classes), n)
    for target, extra in ((labels, {"ignore_index": -1}), (probs, {})):
        for reduction in ("mean", "sum", "none"):
            go = rng.standard_normal(n) if reduction == "none" else 1.5
            options = dict(linear_bias=b, weight=cw, reduction=reduction, label_smoothing=0.2, z_loss=0.3,
                           softcap=4.0, **extra)
            ours = numpy_reference(x, w, target, grad_output=go, **options)
            theirs = dense_autograd(x, w, target, grad_output=go, **options)
            for name, a, t in zip(("loss", "d_input", "d_weight", "d_bias"),
                                  (ours.loss, ours.d_input, ours.d_linear_weight, ours.d_linear_bias), theirs):
                np.testing.assert_allclose(a, t, rtol=1e-12, atol=1e-13, err_msg=f"{reduction} {name}")


# ---- 2. against torch.nn.functional.linear_cross_entropy, dense and chunked ---------------------


def _torch_linear(x, w, target, options, grad_output, chunk):
    """torch's own function, float64, ``.backward()``; ``chunk`` None: options=None (dense)."""
    xt, wt = _t64(x).requires_grad_(True), _t64(w).requires_grad_(True)
    bt = None if options.get("linear_bias") is None else _t64(options["linear_bias"]).requires_grad_(True)
    target = np.asarray(target)
    tt = torch.from_numpy(target.astype(np.int64)) if target.ndim == 1 else _t64(target)
    kwargs = {k: v for k, v in options.items() if k in ("reduction", "ignore_index", "label_smoothing")}
    if options.get("weight") is not None:
        kwargs["weight"] = _t64(options["weight"])
    torch_options = None if chunk is None else torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chunked case that falls back to the dense path would warn
        loss = F.linear_cross_entropy(xt, wt, tt, linear_bias=bt, options=torch_options, **kwargs)
    objective = loss.sum() if grad_output is None else (loss * _t64(grad_output)).sum()
    objective.backward()
    return (loss.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy())


def _torch_cases(rng, n, d, num_classes, dtype):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((num_classes, d)).astype(dtype)
    b = rng.standard_normal(num_classes).astype(dtype)
    cw = rng.uniform(0.2, 2.0, num_classes).astype(dtype)
    labels = rng.integers(0, num_classes, n)
    labels[[1, 4, 5]] = -100  # 4 and 5: a whole chunk of 2
    probs = rng.dirichlet(np.ones(num_classes) * 0.5, n).astype(dtype)
    go = rng.standard_normal(n).astype(dtype)
    # (target, options, grad_output, torch's chunked path takes it)
    return x, w, [
        (labels, {}, None, True),
        (labels, {"linear_bias": b, "weight": cw, "reduction": "sum"}, None, True),
        (labels, {"weight": cw, "reduction": "none"}, go, True),
        (labels, {"linear_bias": b, "weight": cw, "label_smoothing": 0.15}, None, False),
        (np.where(labels == -100, 0, labels), {"reduction": "none", "label_smoothing": 0.3, "ignore_index": 0}, None,
         False),
        (probs, {"linear_bias": b, "weight": cw}, None, True),
        (probs, {"reduction": "sum"}, 0.5, True),
        (probs, {"weight": cw, "label_smoothing": 0.2, "reduction": "none"}, go, False),
    ]


def test_matches_torch_linear_cross_entropy_dense_and_chunked(be, dtype):
    _not_on_jax(be)
    rng = np.random.default_rng(5)
    x, w, cases = _torch_cases(rng, n=7, d=3, num_classes=11, dtype=dtype)
    for number, (target, options, go, chunked) in enumerate(cases):
        torch_chunks = [None, 2, 3] if chunked else [None]
        for ours, theirs in ((None, None), (2, 2), (3, 3), (8, None)):
            if theirs not in torch_chunks:
                continue
            opts = {**options, "chunk_size": ours} if ours is not None else options
            loss, dx, dw, db = _torch_linear(x, w, target, options, go, theirs)
            scales = numpy_reference(x, w, target, grad_output=go, **options).scales
            expected = LinearReference(loss, dx, dw, db, scales, None)
            check_against(be, dtype, LinearCase(x, w, target, opts, go), expected,
                          what=f"case {number}, chunk_size={ours} vs torch options={theirs}: ")


def test_torch_defaults_map_to_ours(be):
    """torch's ignore_index=None is -100 for class indices; reduction "mean", no smoothing."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((6, 4)), rng.standard_normal((9, 4))
    y = np.array([3, -100, 8, 0, -100, 2])
    loss, dx, dw, _ = _torch_linear(x, w, y, {}, None, None)
    ours, (odx, odw, odb) = be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(y))
    assert odb is None
    # torch's default spelled out: ignore_index=None is -100 here too
    explicit = be.linear_cross_entropy(be.asarray(x), be.asarray(w), be.asarray(y), ignore_index=None)
    assert_close(be.to_numpy(explicit), loss, np.float64, what="loss with ignore_index=None")
    assert_close(be.to_numpy(ours), loss, np.float64, what="loss")
    assert_close(be.to_numpy(odx), dx, np.float64, what="d_input")
    assert_close(be.to_numpy(odw), dw, np.float64, what="d_linear_weight")


# ---- 3. a large vocabulary -------------------------------------------------------------------


def test_large_vocabulary(be, dtype):
    _float64_only_on_jax(be, dtype)
    rng = np.random.default_rng(13)
    n, d, num_classes = 6, 3, 50_000
    x = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((num_classes, d)) * 1.5).astype(dtype)
    b = (rng.standard_normal(num_classes) * 0.5).astype(dtype)
    cw = rng.uniform(0.5, 1.5, num_classes).astype(dtype)
    y = rng.integers(0, num_classes, n)
    y[3] = -100
    options = {"linear_bias": b, "weight": cw, "label_smoothing": 0.05, "z_loss": 1e-4}
    expected = expected_from_torch(x, w, y, options)
    chunks = (4,) if _on_jax(be) else (4, 5, None)  # each chunk size compiles anew on XLA
    for chunk in chunks:
        check_against(be, dtype, LinearCase(x, w, y, {**options, "chunk_size": chunk}, None), expected,
                      what=f"V=50000, chunk_size={chunk}: ")


# ---- 4. probability targets --------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_with_smoothing_and_weight(be, dtype, reduction):
    _not_on_jax(be)
    rng = np.random.default_rng(17)
    n, d, num_classes = 5, 4, 23
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((num_classes, d)).astype(dtype)
    target = rng.dirichlet(np.ones(num_classes) * 0.3, n)
    target[1] = 0.0
    target[1, 7] = 1.0  # one-hot row: zeros elsewhere
    target[3, :10] = 0.0
    target[3] /= target[3].sum()  # classes with no mass
    target = target.astype(dtype)
    cw = rng.uniform(0.1, 3.0, num_classes).astype(dtype)
    go = rng.standard_normal(n).astype(dtype) if reduction == "none" else None
    for options in ({"weight": cw, "label_smoothing": 0.25, "reduction": reduction, "chunk_size": 2},
                    {"weight": cw, "label_smoothing": 1.0, "reduction": reduction},
                    {"linear_bias": rng.standard_normal(num_classes).astype(dtype), "label_smoothing": 0.1,
                     "reduction": reduction, "z_loss": 0.01, "chunk_size": 3}):
        expected = expected_from_torch(x, w, target, options, go)
        check_against(be, dtype, LinearCase(x, w, target, options, go), expected, what=f"{options.keys()}: ")


# ---- 5. reduction "none" and grad_output --------------------------------------------------------


def _case_for_grad_output(dtype):
    rng = np.random.default_rng(23)
    n, d, num_classes = 8, 5, 17
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((num_classes, d)).astype(dtype)
    b = rng.standard_normal(num_classes).astype(dtype)
    y = rng.integers(0, num_classes, n)
    y[[2, 6]] = -100
    return rng, x, w, b, y


@pytest.mark.parametrize("chunk", [None, 3])
def test_reduction_none_gradients_without_and_with_grad_output(be, dtype, chunk):
    _float64_only_on_jax(be, dtype)
    if _on_jax(be) and chunk is None:
        pytest.skip(ON_JAX)
    rng, x, w, b, y = _case_for_grad_output(dtype)
    cw = rng.uniform(0.2, 2.0, w.shape[0]).astype(dtype)
    options = {"linear_bias": b, "weight": cw, "reduction": "none", "label_smoothing": 0.1, "chunk_size": chunk}
    # without grad_output: the gradient of sum(loss), which is that of reduction "sum"
    expected = expected_from_torch(x, w, y, options)
    check_against(be, dtype, LinearCase(x, w, y, options, None), expected, what="none, no grad_output: ")
    go = rng.standard_normal(len(y)).astype(dtype)
    go[[0, 2]] = 0.0
    go[5] = -3.0
    # with grad_output: the gradient of sum(grad_output * loss); negative, zero, and on ignored rows
    expected = expected_from_torch(x, w, y, options, go)
    check_against(be, dtype, LinearCase(x, w, y, options, go), expected, what="none, grad_output: ")
    if _on_jax(be):
        return
    xb, wb, yb = be.asarray(x), be.asarray(w), be.asarray(y)
    on = on_backend(be, options)
    # Liger's bug: "none" without grad_output must give the gradients of torch's reduction="sum"
    as_sum = expected_from_torch(x, w, y, {**options, "reduction": "sum"})
    _, none_grads = be.linear_cross_entropy_and_grad(xb, wb, yb, **on)
    for name, a, e in zip(("d_input", "d_linear_weight", "d_linear_bias"), none_grads,
                          (as_sum.d_input, as_sum.d_linear_weight, as_sum.d_linear_bias)):
        assert_close(be.to_numpy(a), e, dtype, scale=as_sum.scales[name], what=f"none vs torch's sum: {name}")
    _, (dx, _, _) = be.linear_cross_entropy_and_grad(xb, wb, yb, grad_output=be.asarray(go), **on)
    assert np.all(be.to_numpy(dx)[[2, 6]] == 0), "ignored rows have zero input gradient"
    # grad_output of ones is no grad_output
    _, ones = be.linear_cross_entropy_and_grad(xb, wb, yb, grad_output=be.asarray(np.ones(len(y), dtype)), **on)
    for name, a, e in zip(("d_input", "d_linear_weight", "d_linear_bias"), ones,
                          (as_sum.d_input, as_sum.d_linear_weight, as_sum.d_linear_bias)):
        assert_close(be.to_numpy(a), e, dtype, scale=as_sum.scales[name], what=f"grad_output=ones: {name}")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_grad_output_scales_mean_and_sum(be, dtype, reduction):
    _not_on_jax(be)
    rng, x, w, b, y = _case_for_grad_output(dtype)
    options = {"linear_bias": b, "reduction": reduction, "z_loss": 0.05, "chunk_size": 3}
    for go in (2.5, -0.5, 0.0):
        expected = expected_from_torch(x, w, y, options, go)
        check_against(be, dtype, LinearCase(x, w, y, options, go), expected, what=f"{reduction}, grad_output={go}: ")
    # a 0-d array of the backend is a scalar too
    expected = expected_from_torch(x, w, y, options, 2.5)
    _, (dx, dw, db) = be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(y),
                                                       grad_output=be.asarray(np.asarray(2.5, dtype=dtype)),
                                                       **{**options, "linear_bias": be.asarray(b)})
    for name, a, e in (("d_input", dx, expected.d_input), ("d_linear_weight", dw, expected.d_linear_weight),
                       ("d_linear_bias", db, expected.d_linear_bias)):
        assert_close(be.to_numpy(a), e, dtype, scale=expected.scales[name], what=f"0-d grad_output: {name}")


def test_every_token_ignored(be):
    x, w = np.ones((4, 2)), np.arange(6.0).reshape(3, 2)
    y = np.full(4, -100)
    xb, wb, yb, bb = be.asarray(x), be.asarray(w), be.asarray(y), be.asarray(np.zeros(3))
    loss, (dx, dw, db) = be.linear_cross_entropy_and_grad(xb, wb, yb, linear_bias=bb, reduction="sum", chunk_size=2)
    assert float(be.to_numpy(loss)) == 0.0
    for g, shape in ((dx, (4, 2)), (dw, (3, 2)), (db, (3,))):
        assert be.to_numpy(g).shape == shape and not np.any(be.to_numpy(g))
    loss, (dx, _, _) = be.linear_cross_entropy_and_grad(xb, wb, yb, reduction="none")
    np.testing.assert_array_equal(be.to_numpy(loss), np.zeros(4))
    np.testing.assert_array_equal(be.to_numpy(dx), np.zeros((4, 2)))
    for op in OPS:
        with pytest.raises(ValueError, match="reduction='mean' over no weight: every target equals ignore_index"):
            getattr(be, op)(xb, wb, yb)


# ---- 6. memory ------------------------------------------------------------------------------------


def test_peak_memory_is_a_chunk_and_the_gradients_never_the_logits():
    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    n, d, num_classes = 2048, 64, 8192
    xb = be.asarray(rng.standard_normal((n, d)).astype(np.float32))
    wb = be.asarray((rng.standard_normal((num_classes, d)) * 0.05).astype(np.float32))
    yb = be.asarray(rng.integers(0, num_classes, n))
    dense = n * num_classes * 4  # 64 MiB of logits
    grads = (n * d + num_classes * d) * 4

    def peak(**options):
        return be.peak_memory(lambda: be.linear_cross_entropy_and_grad(xb, wb, yb, **options))

    def chunk_bytes(rows):
        return rows * num_classes * 4

    be.linear_cross_entropy_and_grad(xb[:8, ...], wb, yb[:8])  # first-call imports are not the method's memory
    by_chunk = {rows: peak(chunk_size=rows) for rows in (128, 512)}
    assert by_chunk[128] < grads + 3 * chunk_bytes(128), by_chunk
    assert by_chunk[128] < dense / 4, by_chunk
    for rows, used in by_chunk.items():  # at least one chunk of logits, at most three and the gradients
        assert chunk_bytes(rows) <= used < grads + 3 * chunk_bytes(rows), (rows, used)
    assert by_chunk[128] + 2 * chunk_bytes(128) < by_chunk[512], by_chunk  # four times the rows: more memory
    budget = 8 * 2**20  # 256 rows of float32 logits at most
    used = peak(memory_budget=budget)
    assert used < grads + 3 * budget, (used, budget)
    assert by_chunk[128] < used < by_chunk[512], (used, by_chunk)


# ---- 7. non-finite values and bad input ------------------------------------------------------------


def _small(be, dtype=np.float64):
    x = np.array([[0.5, -1.0], [1.0, 2.0], [-0.5, 0.25], [2.0, 0.0]], dtype=dtype)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.5, -2.0]], dtype=dtype)
    y = np.array([0, 1, 3, 4])
    return x, w, y, be.asarray(x), be.asarray(w), be.asarray(y)


def test_a_minus_inf_bias_masks_a_class(be, dtype):
    _float64_only_on_jax(be, dtype)
    x, w, y, _, _, _ = _small(be, dtype)
    b = np.array([0.0, 0.5, -np.inf, 0.25, -1.0], dtype=dtype)
    cw = np.array([1.0, 2.0, 0.5, 1.0, 1.0], dtype=dtype)
    cases = [{"linear_bias": b, "weight": cw, "reduction": "sum", "chunk_size": 3}]
    if not _on_jax(be):
        cases += [{"linear_bias": b}, {"linear_bias": b, "reduction": "none", "z_loss": 0.1, "chunk_size": 1}]
    for options in cases:
        expected = expected_from_torch(x, w, y, options)
        assert np.all(np.isfinite(expected.loss))
        check_against(be, dtype, LinearCase(x, w, y, options, None), expected, what=f"-inf bias {sorted(options)}: ")
        _, (_, dw, db) = be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(y),
                                                          **on_backend(be, options))
        assert np.all(be.to_numpy(db)[2] == 0) and np.all(be.to_numpy(dw)[2] == 0)
    probs = np.full((4, 5), 0.25, dtype=dtype)
    probs[:, 2] = 0.0  # no mass on the masked class: torch gives NaN (0 * -inf); the definition's value is finite
    if _on_jax(be):
        return
    expected = numpy_reference(x, w, probs, linear_bias=b)
    assert np.isfinite(expected.loss) and np.all(np.isfinite(expected.d_linear_weight))
    check_against(be, dtype, LinearCase(x, w, probs, {"linear_bias": b}), expected, what="-inf bias, probabilities: ")


@pytest.mark.parametrize("op", OPS)
def test_mass_on_a_masked_class_is_an_infinite_loss_naming_the_sample(be, op):
    _, _, _, xb, wb, yb = _small(be)
    bb = be.asarray(np.array([0.0, 0.5, -np.inf, 0.25, -1.0]))
    call = getattr(be, op)
    with pytest.raises(ValueError, match="the loss of sample 1 is infinite"):
        call(xb, wb, be.asarray(np.array([0, 2, 3, 4])), linear_bias=bb)
    with pytest.raises(ValueError, match="sample 0 is infinite"):
        call(xb, wb, yb, linear_bias=bb, label_smoothing=0.1)  # smoothing puts eps/V on every class
    probs = np.full((4, 5), 0.2)
    with pytest.raises(ValueError, match="sample 0 is infinite"):
        call(xb, wb, be.asarray(probs), linear_bias=bb)


@pytest.mark.parametrize("op", OPS)
def test_non_finite_input_or_weight_names_the_row(be, op):
    if _on_jax(be) and op == "linear_cross_entropy":
        pytest.skip(ON_JAX)
    x, w, _, xb, wb, yb = _small(be)
    call = getattr(be, op)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 of the logits holds NaN"):
        call(be.asarray(bad), wb, yb)
    if _on_jax(be):  # each call below compiles anew before the shared definition names the row
        return
    with pytest.raises(ValueError, match="row 2 of the logits holds NaN"):
        call(be.asarray(bad), wb, yb, chunk_size=1, reduction="none")
    bad = x.copy()
    bad[3] = [np.inf, 1.0]
    with pytest.raises(ValueError, match="row 3 of the logits"):
        call(be.asarray(bad), wb, yb, chunk_size=3)
    bad = w.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 0 of the logits holds NaN"):
        call(xb, be.asarray(bad), yb)
    with pytest.raises(ValueError, match="row 1 of the logits holds NaN"):  # row 0 ignored
        call(xb, be.asarray(bad), be.asarray(np.array([-100, 1, 3, 4])))


def _bad_calls(be, op):
    """``(error, match, call)`` for each bad argument."""
    x, w, y, xb, wb, yb = _small(be)
    call = getattr(be, op)
    f32 = be.asarray(w.astype(np.float32))
    yield ValueError, r"input must have shape \(N, d\)", lambda: call(be.asarray(x[:, 0]), wb, yb)
    yield ValueError, r"linear_weight has shape \(5, 3\) but the input has 2 features: it must be \(V, 2\)", \
        lambda: call(xb, be.asarray(np.ones((5, 3))), yb)
    yield ValueError, r"linear_weight must have shape \(V, d\)", lambda: call(xb, be.asarray(np.ones(5)), yb)
    yield ValueError, r"linear_bias must have shape \(V,\) = \(5,\), got \(4,\)", \
        lambda: call(xb, wb, yb, linear_bias=be.asarray(np.zeros(4)))
    yield ValueError, r"linear_bias must have shape \(V,\) = \(5,\), got \(1, 5\)", \
        lambda: call(xb, wb, yb, linear_bias=be.asarray(np.zeros((1, 5))))
    yield TypeError, "linear_weight is float32 but the input is float64; use one dtype", lambda: call(xb, f32, yb)
    yield TypeError, "linear_bias is float32 but the input is float64", \
        lambda: call(xb, wb, yb, linear_bias=be.asarray(np.zeros(5, np.float32)))
    yield TypeError, "input must be float32 or float64", \
        lambda: call(be.asarray(np.ones((4, 2), np.int64)), wb, yb)
    yield TypeError, "weight is float32 but logits are float64", \
        lambda: call(xb, wb, yb, weight=be.asarray(np.ones(5, np.float32)))
    yield ValueError, r"weight must have shape \(C,\) = \(5,\)", lambda: call(xb, wb, yb, weight=be.asarray(np.ones(4)))
    yield ValueError, r"label 5 \(sample 2\) is out of range for C=5", \
        lambda: call(xb, wb, be.asarray(np.array([0, 1, 5, 2])))
    yield ValueError, r"label -3 \(sample 0\) is out of range", lambda: call(xb, wb, be.asarray(np.array([-3, 1, 1, 2])))
    yield ValueError, "3 labels for 4 samples", lambda: call(xb, wb, be.asarray(np.array([0, 1, 2])))
    yield ValueError, "empty batch", lambda: call(be.asarray(np.zeros((0, 2))), wb, be.asarray(np.zeros(0, np.int64)))
    yield ValueError, "reduction must be one of", lambda: call(xb, wb, yb, reduction="average")
    yield ValueError, r"label_smoothing must lie in \[0, 1\]", lambda: call(xb, wb, yb, label_smoothing=1.5)
    yield ValueError, "z_loss must be >= 0, got -0.1", lambda: call(xb, wb, yb, z_loss=-0.1)
    yield TypeError, "z_loss must be a finite number", lambda: call(xb, wb, yb, z_loss=float("nan"))
    yield TypeError, "z_loss must be a finite number", lambda: call(xb, wb, yb, z_loss="0.1")
    yield ValueError, "softcap must be > 0", lambda: call(xb, wb, yb, softcap=0.0)
    yield ValueError, "softcap must be > 0", lambda: call(xb, wb, yb, softcap=-5.0)
    yield TypeError, "softcap must be a finite number", lambda: call(xb, wb, yb, softcap=float("inf"))
    for name in ("chunk_size", "memory_budget"):
        yield ValueError, f"{name} must be >= 1, got 0", lambda n=name: call(xb, wb, yb, **{n: 0})
        yield ValueError, f"{name} must be >= 1, got -4", lambda n=name: call(xb, wb, yb, **{n: -4})
        for bad in (2.5, True, "8"):
            yield TypeError, f"{name} must be a positive int", lambda n=name, b=bad: call(xb, wb, yb, **{n: b})
    yield TypeError, r"unknown option\(s\) chunksize", lambda: call(xb, wb, yb, chunksize=2)
    yield TypeError, "keyword only", lambda: call(xb, wb, yb, be.asarray(np.zeros(5)))
    yield TypeError, "keyword only", lambda: call(xb, wb, yb, None, None, "sum")
    if op == "linear_cross_entropy":
        yield TypeError, r"unknown option\(s\) grad_output", lambda: call(xb, wb, yb, grad_output=1.0)
    else:
        yield ValueError, r"grad_output must have shape \(4,\) for reduction='none'", \
            lambda: call(xb, wb, yb, reduction="none", grad_output=be.asarray(np.ones(3)))
        yield ValueError, r"grad_output must have shape \(\) for reduction='mean'", \
            lambda: call(xb, wb, yb, grad_output=be.asarray(np.ones(4)))
    yield TypeError, "probability target|float64", \
        lambda: call(xb, wb, be.asarray(np.full((4, 5), 0.2, np.float32)))


@pytest.mark.parametrize("op", OPS)
def test_bad_arguments_are_named(be, op):
    for error, match, bad_call in _bad_calls(be, op):
        with pytest.raises(error, match=match):
            bad_call()


# ---- 8. float16 and bfloat16 ----------------------------------------------------------------------


def _low_precision_case():
    rng = np.random.default_rng(29)
    n, d, num_classes = 12, 8, 300
    x = rng.standard_normal((n, d))
    w = rng.standard_normal((num_classes, d)) * 0.5
    b = rng.standard_normal(num_classes) * 0.1
    y = rng.integers(0, num_classes, n)
    y[4] = -100
    return x, w, b, y


def test_float16_on_numpy():
    be = get_backend("numpy")
    x, w, b, y = _low_precision_case()
    x, w, b = (a.astype(np.float16) for a in (x, w, b))
    for options in ({"linear_bias": b, "chunk_size": 5}, {"linear_bias": b, "reduction": "none", "z_loss": 1e-3,
                                                           "label_smoothing": 0.1, "softcap": 15.0}):
        expected = dense_autograd(x, w, y, **options)  # float64 from the float16 values
        on = {**options, "linear_bias": be.asarray(b)}
        value = be.linear_cross_entropy(be.asarray(x), be.asarray(w), be.asarray(y), **on)
        loss, grads = be.linear_cross_entropy_and_grad(be.asarray(x), be.asarray(w), be.asarray(y), **on)
        for name, got, want in zip(("loss", "loss of _and_grad", "d_input", "d_weight", "d_bias"),
                                   (value, loss, *grads), (expected[0], *expected)):
            got = be.to_numpy(got)
            assert got.dtype == np.float16, (name, got.dtype)
            _close16(got, want, 2e-3, f"float16 {name}")


@pytest.mark.parametrize("dtype, rtol", [("bfloat16", 1e-2), ("float16", 2e-3)])
def test_bfloat16_and_float16_on_torch(dtype, rtol):
    be = get_backend("torch")
    torch_dtype = getattr(torch, dtype)
    x, w, b, y = _low_precision_case()
    xt, wt, bt = (torch.from_numpy(a).to(torch_dtype) for a in (x, w, b))
    x, w, b = (t.to(torch.float64).numpy() for t in (xt, wt, bt))  # the values the backend sees
    go = np.linspace(-1, 2, len(y))
    for options, grad_output in (({"chunk_size": 5}, None), ({"reduction": "sum", "z_loss": 1e-3}, 0.5),
                                 ({"reduction": "none", "label_smoothing": 0.1, "softcap": 10.0}, go)):
        expected = dense_autograd(x, w, y, linear_bias=b, grad_output=grad_output, **options)
        go_t = grad_output if grad_output is None or np.isscalar(grad_output) else \
            torch.from_numpy(grad_output).to(torch_dtype)
        value = be.linear_cross_entropy(xt, wt, torch.from_numpy(y), linear_bias=bt, **options)
        loss, grads = be.linear_cross_entropy_and_grad(xt, wt, torch.from_numpy(y), linear_bias=bt,
                                                       grad_output=go_t, **options)
        if grad_output is not None and not np.isscalar(grad_output):  # grad_output was rounded too
            expected = dense_autograd(x, w, y, linear_bias=b, grad_output=go_t.to(torch.float64).numpy(), **options)
        for name, got, want in zip(("loss", "loss of _and_grad", "d_input", "d_weight", "d_bias"),
                                   (value, loss, *grads), (expected[0], *expected)):
            assert got.dtype == torch_dtype, (name, got.dtype)
            _close16(got.to(torch.float64).numpy(), want, rtol, f"{dtype} {name} {options}")


# ---- 9. a from-scratch plugin gets both methods from complete() ------------------------------------


def test_a_from_scratch_backend_gets_linear_cross_entropy_from_complete():
    from softgrad.numerics.protocol import complete

    from tests.test_plugins import FromScratch

    be = FromScratch()
    assert not hasattr(be, "linear_cross_entropy") and not hasattr(be, "linear_cross_entropy_and_grad")
    assert complete(be) is be
    rng = np.random.default_rng(31)
    x, w = rng.standard_normal((7, 3)), rng.standard_normal((40, 3))
    b, y = rng.standard_normal(40), rng.integers(0, 40, 7)
    y[2] = -100
    options = {"linear_bias": b, "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 5.0, "chunk_size": 3}
    expected = expected_from_torch(x, w, y, options)
    check_against(be, np.float64, LinearCase(x, w, y, options, None), expected, what="from-scratch: ")
    with pytest.raises(TypeError, match="keyword only"):
        be.linear_cross_entropy(be.asarray(x), be.asarray(w), be.asarray(y), be.asarray(b))
