"""Checks of ``linear_cross_entropy`` and ``linear_cross_entropy_and_grad`` (the chunked cross-entropy of a
linear layer).

The reference is written here, in float64 NumPy, from the definition: the
dense logits ``z = x @ W.T + b`` (then ``cap * tanh(z / cap)`` with a
softcap), the cross-entropy of ``torch.nn.functional.cross_entropy`` with
every keyword, the z-loss ``z_loss * lse**2`` per token not ignored, and the
gradients from the closed form of ``d loss / d z`` pushed through the matmul.
Where torch (2.14 or later) is installed, ``torch.nn.functional.linear_cross_entropy``
and its autograd, in float64, are the second oracle. Inputs: N up to 40
tokens, d up to 8 features, V up to 300 classes, every keyword and chunk size
(dividing N or not, 1, more than N), class-index and probability targets;
and one vocabulary of 50,000 classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance.checks import Check, _raises, _torch, assert_close

LINEAR_OPS = ("linear_cross_entropy", "linear_cross_entropy_and_grad")


# ---- the float64 reference ---------------------------------------------------------------------


@dataclass
class LinearReference:
    """The float64 loss and gradients, and for each the magnitude its rounding errors scale with
    (``scale`` of :func:`~backends.conformance.checks.assert_close`)."""

    loss: np.ndarray
    d_input: np.ndarray
    d_linear_weight: np.ndarray
    d_linear_bias: np.ndarray | None
    scales: dict  # "loss", "d_input", "d_linear_weight", "d_linear_bias"
    logit_gradient: np.ndarray  # d loss / d (pre-softcap logits), (N, V)


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def reference(x, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean", ignore_index=-100,
              label_smoothing=0.0, z_loss=0.0, softcap=None, grad_output=None) -> LinearReference:
    """``cross_entropy(x @ W.T + b, target, ...)`` plus the z-loss, and its gradients, in float64.

    ``target``: labels (N,) or probabilities (N, V). ``grad_output``: None, a number (scales "mean"
    and "sum"), or (N,) for "none" (the gradient is that of ``sum(grad_output * loss)``). Every row
    must have a finite logit.
    """
    x, w, b = _f64(x), _f64(linear_weight), _f64(linear_bias)
    n = x.shape[0]
    z0 = x @ w.T + (0.0 if b is None else b)
    tanh = None
    if softcap is not None:
        tanh = np.tanh(z0 / softcap)
        z = softcap * tanh
    else:
        z = z0
    lse, p = _log_softmax_parts(z)
    q, kept, denominator = _target_rows(np.asarray(target), w.shape[0], _f64(weight), float(label_smoothing),
                                        ignore_index)
    with np.errstate(invalid="ignore"):
        neg_logp = lse[:, None] - z  # +inf at a masked class: it counts only where the target puts mass
        ce = np.sum(np.where(q != 0.0, q * neg_logp, 0.0), axis=1)
    mass = q.sum(axis=1)
    lse_kept = np.where(kept, lse, 0.0)
    z_row = float(z_loss) * lse_kept**2
    n_kept = int(kept.sum())
    if reduction == "none":
        loss, ce_scale, z_scale = ce + z_row, 1.0, 1.0
    elif reduction == "sum":
        loss, ce_scale, z_scale = ce.sum() + z_row.sum(), 1.0, 1.0
    else:
        ce_scale, z_scale = 1.0 / denominator, 1.0 / max(n_kept, 1)
        loss = ce.sum() * ce_scale + z_row.sum() * z_scale
    if grad_output is None:
        row = np.ones(n)
    else:
        go = _f64(grad_output)
        row = np.full(n, float(go)) if go.ndim == 0 else go
    g_capped = row[:, None] * (ce_scale * (mass[:, None] * p - q) + z_scale * 2.0 * float(z_loss) * lse_kept[:, None] * p)
    g = g_capped if tanh is None else g_capped * (1.0 - tanh * tanh)
    d_input, d_w = g @ w, g.T @ x
    d_b = None if b is None else g.sum(axis=0)
    scales = _error_scales(x, w, b, g, mass=mass, lse_kept=lse_kept, z_loss=float(z_loss), reduction=reduction,
                           denominator=denominator, n_kept=n_kept)
    return LinearReference(np.asarray(loss), d_input, d_w, d_b, scales, g)


def _log_softmax_parts(z):
    """``(lse, softmax)`` of the rows of ``z``, shifted by each row's maximum."""
    m = np.max(z, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(z - m[:, None])
        s = e.sum(axis=1)
        return m + np.log(s), e / s[:, None]


def _target_rows(target, num_classes, class_weight, eps, ignore_index):
    """``(q, kept, denominator)``: the smoothed, class-weighted target distribution per row (0 at an ignored
    row), the rows kept, and what "mean" divides by (torch's: the weights of the kept targets for labels, N
    for probabilities, weights or not)."""
    n = target.shape[0]
    cw = np.ones(num_classes) if class_weight is None else class_weight
    if target.ndim == 1:  # class indices
        kept = target != ignore_index
        labels = np.where(kept, target, 0).astype(np.int64)
        onehot = np.zeros((n, num_classes))
        onehot[np.arange(n), labels] = 1.0
        q = ((1.0 - eps) * onehot + eps / num_classes) * cw[None, :]
        q[~kept] = 0.0
        return q, kept, float(cw[labels][kept].sum())
    q = ((1.0 - eps) * _f64(target) + eps / num_classes) * cw[None, :]
    return q, np.ones(n, dtype=bool), float(n)


def _error_scales(x, w, b, g, *, mass, lse_kept, z_loss, reduction, denominator, n_kept):
    """:class:`LinearReference`'s ``scales``: the rounding errors of the logits (|x| @ |W|.T, relative) carried
    through each row's cross-entropy and z-loss, added up as the reduction adds the rows, and through the
    gradients' matmuls."""
    big = 1.0 + float(np.max(np.abs(x) @ np.abs(w).T + (0.0 if b is None else np.abs(np.where(np.isfinite(b), b, 0)))))
    abs_lse = np.abs(lse_kept)
    row_error = mass * (big + abs_lse) + z_loss * abs_lse * (abs_lse + 2 * big)
    if reduction == "none":
        loss_scale = float(np.max(row_error))
    elif reduction == "sum":
        loss_scale = float(row_error.sum())
    else:
        loss_scale = float(row_error.sum()) / min(denominator, max(n_kept, 1))
    ag = np.abs(g)
    return {"loss": loss_scale,
            "d_input": big * float(np.max(ag @ np.abs(w), initial=0.0)),
            "d_linear_weight": big * float(np.max(ag.T @ np.abs(x), initial=0.0)),
            "d_linear_bias": big * float(np.max(ag.sum(axis=0), initial=0.0))}


# ---- generated cases ---------------------------------------------------------------------------


class LinearCase(NamedTuple):
    """One case of :func:`linear_case`: NumPy arrays of one dtype (labels int64/int32), the options of
    ``linear_cross_entropy`` (arrays as NumPy arrays: ``linear_bias``, ``weight``), and a ``grad_output``
    for ``_and_grad`` (None, a number for "mean"/"sum", an (N,) array for "none")."""

    x: np.ndarray
    w: np.ndarray
    target: np.ndarray
    options: dict
    grad_output: Any = None


@st.composite
def linear_case(draw, dtype, max_n=40, max_d=8, max_v=300, kinds=("index", "prob"), extras=True) -> LinearCase:
    """A :class:`LinearCase` of ``dtype``.

    Chunk sizes: None (the memory budget's), 1, a divisor of N, any up to N + 8. Ignored tokens:
    scattered, and a contiguous run covering a whole chunk of the original rows. ``extras``: draw
    ``z_loss`` and ``softcap`` too (torch's function has neither).
    """
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    num_classes = draw(st.integers(2, max_v))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w_scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    x = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((num_classes, d)) * w_scale).astype(dtype)
    options = _draw_options(draw, rng, dtype, n, num_classes, extras=extras)
    if draw(st.sampled_from(kinds)) == "index":
        target = _draw_labels(draw, rng, n, num_classes, options)
    else:
        target = rng.dirichlet(np.ones(num_classes) * draw(st.sampled_from([0.1, 1.0, 10.0])), size=n)
        if draw(st.booleans()):  # some one-hot rows: zeros elsewhere
            rows = rng.random(n) < 0.5
            target[rows] = np.eye(num_classes)[rng.integers(0, num_classes, int(rows.sum()))]
        target = target.astype(dtype)
    grad_output = None
    if draw(st.booleans()):
        if options["reduction"] == "none":
            grad_output = rng.standard_normal(n).astype(dtype)
            grad_output[rng.random(n) < 0.2] = 0
        else:
            grad_output = draw(st.sampled_from([0.5, -2.0, 3.0]))
    return LinearCase(x, w, target, options, grad_output)


def _draw_options(draw, rng, dtype, n, num_classes, *, extras) -> dict:
    """The reduction, a bias, class weights, label smoothing, a chunk size and (``extras``) z_loss and softcap."""
    options: dict = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if draw(st.booleans()):
        options["linear_bias"] = rng.standard_normal(num_classes).astype(dtype)
    if draw(st.booleans()):
        options["weight"] = rng.uniform(0.1, 2.0, num_classes).astype(dtype)
    if draw(st.booleans()):
        options["label_smoothing"] = draw(st.sampled_from([0.1, 1.0]) | st.floats(0.0, 1.0))
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    chunk = draw(st.none() | st.just(1) | st.sampled_from(divisors) | st.integers(1, n + 8))
    if chunk is not None:
        options["chunk_size"] = chunk
    if extras:
        z_loss = draw(st.sampled_from([0.0, 1e-4, 0.1, 1.0]))
        if z_loss:
            options["z_loss"] = z_loss
        if draw(st.booleans()):
            options["softcap"] = draw(st.sampled_from([1.0, 5.0, 30.0]) | st.floats(0.5, 50.0))
    return options


def _draw_labels(draw, rng, n, num_classes, options):
    """Class labels, some of them ignored (then ``options["ignore_index"]`` is set where it is not -100's
    default, or by chance where it is): scattered, and a run as long as a chunk; at least one kept."""
    target = rng.integers(0, num_classes, n)
    if draw(st.booleans()):
        chunk = options.get("chunk_size")
        ignore_index = draw(st.sampled_from([-100, -1, 0, num_classes - 1]))
        if ignore_index != -100 or draw(st.booleans()):
            options["ignore_index"] = ignore_index
        ignored = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.7]))
        run = chunk if chunk is not None and chunk <= n else draw(st.integers(1, n))
        first = draw(st.integers(0, n // run - 1)) * run
        ignored[first:first + run] = True  # a whole chunk of the original rows
        target[ignored] = ignore_index
        kept = np.flatnonzero(target != ignore_index)
        if len(kept) == 0:  # one token kept ("mean" over no token raises; that has its own check)
            target[draw(st.integers(0, n - 1))] = 1 if ignore_index == 0 else 0
    return target.astype(draw(st.sampled_from([np.int64, np.int32])))


def on_backend(be, options):
    """The options with their arrays moved to ``be``."""
    return {k: be.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}


def check_against(be, dtype, case: LinearCase, expected: LinearReference, *, what: str = "") -> None:
    """Both methods on ``be``, on ``case``, against ``expected``: values, shapes, dtypes, the bias gradient's
    presence."""
    x, w, target, options, grad_output = case
    xb, wb, tb, kwargs = be.asarray(x), be.asarray(w), be.asarray(target), on_backend(be, options)
    go = grad_output if grad_output is None or np.isscalar(grad_output) else be.asarray(grad_output)
    value = be.to_numpy(be.linear_cross_entropy(xb, wb, tb, **kwargs))
    loss, (dx, dw, db) = be.linear_cross_entropy_and_grad(xb, wb, tb, grad_output=go, **kwargs)
    loss, dx, dw = be.to_numpy(loss), be.to_numpy(dx), be.to_numpy(dw)
    shape = (x.shape[0],) if options.get("reduction", "mean") == "none" else ()
    for name, array, want in (("loss", value, shape), ("loss of _and_grad", loss, shape),
                              ("d_input", dx, x.shape), ("d_linear_weight", dw, w.shape)):
        assert array.shape == want and array.dtype == dtype, f"{what}{name}: {array.shape} {array.dtype}"
    s = expected.scales
    assert_close(value, expected.loss, dtype, scale=s["loss"], what=f"{what}linear_cross_entropy")
    assert_close(loss, expected.loss, dtype, scale=s["loss"], what=f"{what}loss of linear_cross_entropy_and_grad")
    assert_close(dx, expected.d_input, dtype, scale=s["d_input"], what=f"{what}d_input")
    assert_close(dw, expected.d_linear_weight, dtype, scale=s["d_linear_weight"], what=f"{what}d_linear_weight")
    if options.get("linear_bias") is None:
        assert db is None, f"{what}d_linear_bias without a bias: {db!r}, expected None"
    else:
        db = be.to_numpy(db)
        assert db.shape == (w.shape[0],) and db.dtype == dtype, f"{what}d_linear_bias: {db.shape} {db.dtype}"
        assert_close(db, expected.d_linear_bias, dtype, scale=s["d_linear_bias"], what=f"{what}d_linear_bias")


def torch_linear_oracle(x, w, target, options, grad_output):
    """``torch.nn.functional.linear_cross_entropy`` and its autograd in float64 (the dense path):
    ``(loss, d_input, d_linear_weight, d_linear_bias)``; None without torch 2.14 or for z_loss/softcap."""
    torch = _torch()
    if torch is None or not hasattr(torch.nn.functional, "linear_cross_entropy"):
        return None
    if options.get("z_loss") or options.get("softcap") is not None:
        return None
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).requires_grad_(True)
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64)).requires_grad_(True)
    target = np.asarray(target)
    tt = torch.from_numpy(target.astype(np.int64) if target.ndim == 1 else target.astype(np.float64))
    kwargs = {k: v for k, v in options.items() if k not in ("chunk_size", "memory_budget", "linear_bias", "weight")}
    bt = None
    if options.get("linear_bias") is not None:
        bt = torch.from_numpy(np.asarray(options["linear_bias"], dtype=np.float64)).requires_grad_(True)
    if options.get("weight") is not None:
        kwargs["weight"] = torch.from_numpy(np.asarray(options["weight"], dtype=np.float64))
    loss = torch.nn.functional.linear_cross_entropy(xt, wt, tt, linear_bias=bt, **kwargs)
    if grad_output is None:
        objective = loss.sum()
    else:
        objective = (loss * torch.as_tensor(np.asarray(grad_output, dtype=np.float64))).sum()
    grads = torch.autograd.grad(objective, [t for t in (xt, wt, bt) if t is not None])
    return (loss.detach().numpy(), grads[0].numpy(), grads[1].numpy(), None if bt is None else grads[2].numpy())


# ---- the checks --------------------------------------------------------------------------------


def linear_cross_entropy_matches_references(be, dtype, data):
    """Loss and the three gradients, every keyword and chunk size, against float64 and torch's function."""
    x, w, target, options, grad_output = data.draw(linear_case(dtype))
    expected = reference(x, w, target, grad_output=grad_output, **{k: v for k, v in options.items()
                                                                   if k not in ("chunk_size", "memory_budget")})
    check_against(be, dtype, LinearCase(x, w, target, options, grad_output), expected)
    oracle = torch_linear_oracle(x, w, target, options, grad_output)
    if oracle is not None:
        for name, ours, theirs in zip(("loss", "d_input", "d_linear_weight", "d_linear_bias"),
                                      (expected.loss, expected.d_input, expected.d_linear_weight,
                                       expected.d_linear_bias), oracle):
            if theirs is not None:  # the reference itself against torch: float64 on both sides
                np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * max(1.0, expected.scales[name]),
                                           err_msg=f"the float64 reference's {name} vs torch")


def linear_cross_entropy_large_vocabulary(be, dtype, data):
    """V = 50,000 classes, N = 6, d = 3: chunks of 4 rows (not dividing N) and the default."""
    rng = np.random.default_rng(11)
    n, d, num_classes = 6, 3, 50_000
    x = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((num_classes, d)) * 2).astype(dtype)
    b = rng.standard_normal(num_classes).astype(dtype)
    target = rng.integers(0, num_classes, n)
    target[2] = -100
    options = {"linear_bias": b, "label_smoothing": 0.1, "z_loss": 1e-3}
    expected = reference(x, w, target, **options)
    for chunk in (4, None):
        check_against(be, dtype, LinearCase(x, w, target, {**options, "chunk_size": chunk}, None), expected,
                      what=f"V=50000, chunk_size={chunk}: ")
    go = rng.standard_normal(n).astype(dtype)
    none = {"linear_bias": b, "reduction": "none", "softcap": 20.0}
    check_against(be, dtype, LinearCase(x, w, target, {**none, "chunk_size": 4}, go),
                  reference(x, w, target, grad_output=go, **none), what="V=50000, none: ")


def linear_cross_entropy_nonfinite_and_bad_input(be, dtype, data):
    """A -inf bias masks a class; NaN/inf rows, targets on a masked class, bad shapes and options: named errors."""
    x = np.array([[0.5, -1.0], [1.0, 2.0], [-0.5, 0.25], [2.0, 0.0]], dtype=dtype)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.5, -2.0]], dtype=dtype)
    b = np.array([0.0, 0.5, -np.inf, 0.25, -1.0], dtype=dtype)
    y = np.array([0, 1, 3, 4])
    xb, wb, bb, yb = be.asarray(x), be.asarray(w), be.asarray(b), be.asarray(y)
    other = np.float64 if dtype == np.float32 else np.float32
    for chunk in (None, 3):  # masked class 2: finite, and its gradients are 0
        check_against(be, dtype, LinearCase(x, w, y, {"linear_bias": b, "chunk_size": chunk}),
                      reference(x, w, y, linear_bias=b), what=f"-inf bias, chunk_size={chunk}: ")
    for op in LINEAR_OPS:
        call = getattr(be, op)
        _raises(ValueError, "sample 1 is infinite", lambda c=call: c(
            xb, wb, be.asarray(np.array([0, 2, 3, 4])), linear_bias=bb), f"{op}: target on a -inf bias")
        _raises(ValueError, "infinite", lambda c=call: c(xb, wb, yb, linear_bias=bb, label_smoothing=0.1),
                f"{op}: smoothing puts mass on a -inf bias")
        bad = x.copy()
        bad[2, 1] = np.nan
        _raises(ValueError, "row 2 of the logits holds NaN", lambda c=call, a=bad: c(be.asarray(a), wb, yb),
                f"{op}: NaN in row 2 of the input")
        bad = x.copy()
        bad[3, 0] = np.inf
        _raises(ValueError, "row 3 of the logits", lambda c=call, a=bad: c(be.asarray(a), wb, yb, chunk_size=2),
                f"{op}: inf in row 3 of the input")
        bad = w.copy()
        bad[1, 0] = np.nan
        _raises(ValueError, "row 0 of the logits holds NaN", lambda c=call, a=bad: c(xb, be.asarray(a), yb),
                f"{op}: NaN in the weight")
        _raises(ValueError, r"linear_weight has shape \(5, 3\).*\(V, 2\)", lambda c=call: c(
            xb, be.asarray(np.ones((5, 3), dtype=dtype)), yb), f"{op}: linear_weight (V, d+1)")
        _raises(ValueError, r"linear_bias must have shape \(V,\) = \(5,\)", lambda c=call: c(
            xb, wb, yb, linear_bias=be.asarray(np.zeros(4, dtype=dtype))), f"{op}: bias (V-1,)")
        _raises(TypeError, "one dtype", lambda c=call: c(xb, be.asarray(w.astype(other)), yb),
                f"{op}: linear_weight of another dtype")
        _raises(ValueError, r"label 5 \(sample 1\) is out of range for C=5", lambda c=call: c(
            xb, wb, be.asarray(np.array([0, 5, 1, 1]))), f"{op}: label out of range")
        _raises(ValueError, "z_loss must be >= 0", lambda c=call: c(xb, wb, yb, z_loss=-0.1), f"{op}: z_loss < 0")
        _raises(ValueError, "softcap must be > 0", lambda c=call: c(xb, wb, yb, softcap=0.0), f"{op}: softcap = 0")
        _raises(ValueError, "chunk_size must be >= 1", lambda c=call: c(xb, wb, yb, chunk_size=0),
                f"{op}: chunk_size = 0")
        _raises(ValueError, "memory_budget must be >= 1", lambda c=call: c(xb, wb, yb, memory_budget=0),
                f"{op}: memory_budget = 0")
        _raises(TypeError, "unknown option", lambda c=call: c(xb, wb, yb, chunksize=2), f"{op}: unknown keyword")
        _raises(TypeError, "keyword", lambda c=call: c(xb, wb, yb, bb), f"{op}: the bias passed by position")
        _raises(ValueError, "reduction='mean' over no weight", lambda c=call: c(
            xb, wb, be.asarray(np.full(4, -100))), f"{op}: mean with every token ignored")


LINEAR_CHECKS: tuple[Check, ...] = (
    Check("linear_cross_entropy_matches_references", "linear_cross_entropy", linear_cross_entropy_matches_references),
    Check("linear_cross_entropy_large_vocabulary", "linear_cross_entropy", linear_cross_entropy_large_vocabulary,
          generated=False),
    Check("linear_cross_entropy_nonfinite_and_bad_input", "linear_cross_entropy",
          linear_cross_entropy_nonfinite_and_bad_input, generated=False),
)
