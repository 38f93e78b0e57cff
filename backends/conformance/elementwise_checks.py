"""Checks of the elementwise losses (regression, binary cross-entropy) and of sigmoid / log-sigmoid.

The same references as for cross-entropy: float64 NumPy written from the
definitions (:mod:`backends.conformance.reference_elementwise`),
``torch.nn.functional`` and autograd in float64 where torch is installed,
and central finite differences. Inputs: 1-D ``(N,)`` and 2-D ``(N, k)``, N up
to 256, magnitudes up to 1e4, every keyword, both dtypes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance import reference_elementwise as ref
from softgrad.backends.conformance.checks import Check, _raises, _torch, assert_close
from softgrad.backends.conformance.strategies import SCALES
from softgrad.numerics.methods import method_of

REGRESSION_LOSSES = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")
BCE = "binary_cross_entropy_with_logits"
ELEMENTWISE_LOSSES = (*REGRESSION_LOSSES, BCE)


@st.composite
def elementwise_case(draw, dtype, loss=None, max_n=256):
    """``(loss name, input, target, options, scale)``: options hold every keyword the loss takes
    (weights as NumPy arrays of the input's dtype); ``scale`` is the loss's natural magnitude."""
    name = draw(st.sampled_from(ELEMENTWISE_LOSSES)) if loss is None else loss
    n = draw(st.integers(1, max_n))
    shape = (n,) if draw(st.booleans()) else (n, draw(st.integers(1, 8)))
    scale = draw(SCALES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    options = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if name == BCE:
        if draw(st.booleans()):
            target = rng.integers(0, 2, shape).astype(dtype)  # labels as probabilities
        else:
            target = rng.uniform(0, 1, shape).astype(dtype)
        if draw(st.booleans()):
            weight_shape = draw(st.sampled_from([shape, shape[-1:], (1,)] + ([(n, 1)] if len(shape) == 2 else [])))
            options["weight"] = rng.uniform(0.1, 2.0, weight_shape).astype(dtype)
        if draw(st.booleans()):
            options["pos_weight"] = rng.uniform(0.1, 5.0, shape[-1:]).astype(dtype)
        return name, x, target, options, scale
    # regression: targets near the predictions, some equal (d = 0: the subgradient), at the same scale
    noise = rng.standard_normal(shape) * scale * draw(st.sampled_from([0.01, 1.0, 3.0]))
    target = (x.astype(np.float64) + noise).astype(dtype)
    equal = rng.random(shape) < draw(st.sampled_from([0.0, 0.1]))
    target = np.where(equal, x, target).astype(dtype)
    if name != "smooth_l1_loss" and draw(st.booleans()):  # torch's per-element weight
        options["weight"] = rng.uniform(0.0, 2.0, shape).astype(dtype)
        options["weight"].flat[0] = 1.0  # never all zero
    if name == "smooth_l1_loss":
        options["beta"] = draw(st.sampled_from([0.0, 1.0]) | st.floats(1e-3, 10.0)) * scale
    if name == "huber_loss":
        options["delta"] = draw(st.sampled_from([1.0]) | st.floats(1e-3, 10.0)) * scale
    return name, x, target, options, scale


def _on(be, options):
    return {k: be.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}


def _magnitude(name, scale):
    """How large the loss's values grow with the inputs' scale (widens the absolute tolerance)."""
    return scale * scale if name == "mse_loss" else scale


def torch_oracle(name, x, target, options):
    """The loss and its autograd gradient from ``torch.nn.functional`` in float64; None without torch."""
    torch = _torch()
    if torch is None:
        return None
    F = torch.nn.functional
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tt = torch.from_numpy(target.astype(np.float64))
    kwargs = {k: torch.from_numpy(v.astype(np.float64)) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    function = {"mse_loss": F.mse_loss, "l1_loss": F.l1_loss, "smooth_l1_loss": F.smooth_l1_loss,
                "huber_loss": F.huber_loss, BCE: F.binary_cross_entropy_with_logits}[name]
    value = function(xt, tt, **kwargs)
    (gradient,) = torch.autograd.grad(value.sum(), xt)
    return value.detach().numpy(), gradient.numpy()


def elementwise_losses_match_references(be, dtype, data):
    """X, X_grad and X_and_grad of every elementwise loss against float64 NumPy and torch (with autograd)."""
    name, x, target, options, scale = data.draw(elementwise_case(dtype))
    xb, tb, kwargs = be.asarray(x), be.asarray(target), _on(be, options)
    value = be.to_numpy(method_of(be, name)(xb, tb, **kwargs))
    grad = be.to_numpy(method_of(be, f"{name}_grad")(xb, tb, **kwargs))
    both = [be.to_numpy(a) for a in method_of(be, f"{name}_and_grad")(xb, tb, **kwargs)]
    expected_shape = x.shape if options["reduction"] == "none" else ()
    assert value.shape == expected_shape and value.dtype == dtype, (value.shape, value.dtype)
    assert grad.shape == x.shape and grad.dtype == dtype, (grad.shape, grad.dtype)
    magnitude = _magnitude(name, scale)
    expected_value, expected_grad = ref.loss(name, x, target, **options), ref.grad(name, x, target, **options)
    for what, actual, expected, s in (("loss", value, expected_value, magnitude), ("grad", grad, expected_grad, scale),
                                      ("loss of X_and_grad", both[0], expected_value, magnitude),
                                      ("grad of X_and_grad", both[1], expected_grad, scale)):
        assert_close(actual, expected, dtype, scale=s, what=f"{name} {what} vs float64 reference")
    oracle = torch_oracle(name, x, target, options)
    if oracle is not None:
        assert_close(value, oracle[0], dtype, scale=magnitude, what=f"{name} vs torch")
        assert_close(grad, oracle[1], dtype, scale=scale, what=f"{name} grad vs torch autograd")


def elementwise_gradients_match_finite_differences(be, dtype, data):
    """Directional derivatives of the float64 reference loss against the backend's gradient."""
    name, x, target, options, _ = data.draw(elementwise_case(np.float64, max_n=32))
    options["reduction"] = data.draw(st.sampled_from(["mean", "sum"]))
    grad = be.to_numpy(method_of(be, f"{name}_grad")(be.asarray(x), be.asarray(target), **_on(be, options)))
    d = np.abs(x - target)
    kinks = [d] if name in REGRESSION_LOSSES else []  # |d| is not differentiable at 0
    threshold = options.get("beta", options.get("delta"))
    if threshold:
        kinks.append(np.abs(d - threshold))  # where the pieces meet (the second derivative jumps)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = rng.standard_normal(x.shape)
        # a step that crosses no kink; where the loss has no kink nearby, 1e-5 of the inputs' size
        room = min([float(np.min(k[k > 0], initial=np.inf)) for k in kinks], default=np.inf)
        h = min(1e-5 * max(1.0, float(np.abs(x).max())), 0.25 * room / max(1.0, float(np.abs(direction).max())))
        if not h > 0:
            continue
        moved = [(x + s * h * direction) for s in (1, -1)]
        if kinks and name in REGRESSION_LOSSES:  # an element sitting exactly on d = 0 moves off it: skip it
            direction = np.where(d == 0, 0.0, direction)
            moved = [(x + s * h * direction) for s in (1, -1)]
        f_plus, f_minus = (ref.loss(name, m, target, **options) for m in moved)
        numeric = (f_plus - f_minus) / (2 * h)
        analytic = float(np.sum(grad * direction))
        assert abs(numeric - analytic) <= 1e-6 * (1 + abs(numeric)) + 1e-9 * abs(f_plus) / h, (
            f"{name}: directional derivative {analytic} vs finite difference {numeric} (h={h})")


def sigmoid_and_log_sigmoid_are_stable(be, dtype, data):
    """sigmoid and log_sigmoid against float64 and torch, finite for |z| up to 1e4 (float32 included)."""
    n = data.draw(st.integers(1, 256))
    scale = data.draw(SCALES)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    z = (rng.standard_normal((n, data.draw(st.integers(1, 4)))) * scale).astype(dtype)
    z[0, 0] = dtype(1e4) if data.draw(st.booleans()) else dtype(-1e4)
    s = be.to_numpy(be.sigmoid(be.asarray(z)))
    log_s = be.to_numpy(be.log_sigmoid(be.asarray(z)))
    assert s.dtype == dtype and log_s.dtype == dtype and s.shape == z.shape
    assert np.all(np.isfinite(log_s)) and np.all((s >= 0) & (s <= 1))
    assert_close(s, ref.sigmoid(z), dtype, what="sigmoid")
    assert_close(log_s, ref.log_sigmoid(z), dtype, scale=float(np.abs(z).max()), what="log_sigmoid")
    # where sigmoid is a normal number, it has full relative precision (no 1 - (1 - tiny))
    normal = ref.sigmoid(z) > np.finfo(dtype).tiny * 1e6
    np.testing.assert_allclose(s[normal], ref.sigmoid(z)[normal], rtol=4 * np.finfo(dtype).eps * 10)
    torch = _torch()
    if torch is not None:
        zt = torch.from_numpy(z.astype(np.float64))
        assert_close(s, torch.sigmoid(zt).numpy(), dtype, what="sigmoid vs torch")
        assert_close(log_s, torch.nn.functional.logsigmoid(zt).numpy(), dtype, scale=float(np.abs(z).max()),
                     what="log_sigmoid vs torch")


def elementwise_bad_input_is_named(be, dtype, data):
    """Shapes that differ, integer regression targets, targets outside [0, 1], bad beta/delta, NaN: clear errors."""
    x = be.asarray(np.array([[0.5], [-1.0], [2.0]], dtype=dtype))
    column_host = np.array([[1.0], [0.0], [1.0]])
    column, flat = be.asarray(np.array([[1.0], [0.0], [1.0]], dtype=dtype)), be.asarray(np.array([1.0, 0.0, 1.0],
                                                                                                    dtype=dtype))
    other = np.float64 if dtype == np.float32 else np.float32
    nan_input = be.asarray(np.array([[0.5], [np.nan], [2.0]], dtype=dtype))
    nan_target = be.asarray(np.array([[1.0], [0.0], [np.nan]], dtype=dtype))
    for name in ELEMENTWISE_LOSSES:
        for suffix in ("", "_grad", "_and_grad"):
            call = method_of(be, name + suffix)
            op = name + suffix
            _raises(ValueError, r"shape \(3, 1\) but the target \(3,\)", lambda c=call: c(x, flat),
                    f"{op}: (N, 1) against (N,)")
            _raises(TypeError, "int64", lambda c=call: c(x, be.asarray(np.array([[1], [0], [1]], dtype=np.int64))),
                    f"{op}: integer target")
            _raises(TypeError, "one dtype", lambda c=call: c(x, be.asarray(np.asarray(column_host, dtype=other))),
                    f"{op}: target of another dtype")
            _raises(ValueError, "reduction must be one of", lambda c=call: c(x, column, reduction="avg"),
                    f"{op}: bad reduction")
            _raises(ValueError, "empty", lambda c=call: c(be.asarray(np.zeros((0, 1), dtype=dtype)),
                                                          be.asarray(np.zeros((0, 1), dtype=dtype))), f"{op}: N = 0")
            _raises(ValueError, r"input holds nan at \(1, 0\)", lambda c=call: c(nan_input, column),
                    f"{op}: NaN input")
            _raises(ValueError, r"target holds nan at \(2, 0\)", lambda c=call: c(x, nan_target), f"{op}: NaN target")
    for suffix in ("", "_grad", "_and_grad"):
        call = method_of(be, BCE + suffix)
        for bad in (1.5, -0.25):
            target = be.asarray(np.array([[1.0], [bad], [0.0]], dtype=dtype))
            _raises(ValueError, rf"target holds {bad} at \(1, 0\); targets are probabilities in \[0, 1\]",
                    lambda c=call, t=target: c(x, t), f"{BCE}{suffix}: target {bad}")
        _raises(ValueError, "pos_weight has shape", lambda c=call: c(
            x, column, pos_weight=be.asarray(np.ones(3, dtype=dtype))), f"{BCE}{suffix}: pos_weight (3,) for (3, 1)")
        _raises(ValueError, "weight has shape", lambda c=call: c(
            x, column, weight=be.asarray(np.ones((2, 1), dtype=dtype))), f"{BCE}{suffix}: weight (2, 1) for (3, 1)")
    for name in ("mse_loss", "l1_loss", "huber_loss"):
        _raises(ValueError, "the weight has shape", lambda n=name: method_of(be, n)(
            x, column, weight=be.asarray(np.ones(3, dtype=dtype))), f"{name}: a weight of another shape")
        _raises(ValueError, "the weight holds nan", lambda n=name: method_of(be, n)(
            x, column, weight=be.asarray(np.array([[1.0], [np.nan], [1.0]], dtype=dtype))), f"{name}: NaN weight")
    for name in ("mse_loss", "l1_loss"):
        _raises(ValueError, "sum of the weights, which is 0", lambda n=name: method_of(be, n)(
            x, column, weight=be.asarray(np.zeros((3, 1), dtype=dtype))), f"{name}: weights summing to 0")
    for name, key in (("smooth_l1_loss", "beta"), ("huber_loss", "delta")):
        for bad in (-1.0, float("nan"), float("inf")):
            _raises(ValueError, f"{key} must be finite", lambda n=name, k=key, b=bad: method_of(be, n)(x, column, **{k: b}),
                    f"{name}: {key}={bad}")
        _raises(TypeError, f"{key} must be a real number", lambda n=name, k=key: method_of(be, n)(x, column, **{k: "1"}),
                f"{name}: {key} as a string")
    _raises(ValueError, "delta must be finite and > 0", lambda: method_of(be, "huber_loss")(x, column, delta=0.0), "huber delta=0")
    for op in ("sigmoid", "log_sigmoid"):
        _raises(ValueError, "NaN", lambda o=op: method_of(be, o)(be.asarray(np.array([0.0, np.nan], dtype=dtype))),
                f"{op} of NaN")
        _raises(TypeError, "float32 or float64", lambda o=op: method_of(be, o)(be.asarray(np.array([1, 2]))),
                f"{op} of integers")


ELEMENTWISE_CHECKS: tuple[Check, ...] = (
    Check("elementwise_losses_match_references", "elementwise losses", elementwise_losses_match_references),
    Check("elementwise_gradients_match_finite_differences", "elementwise losses",
          elementwise_gradients_match_finite_differences, (np.float64,)),
    Check("sigmoid_and_log_sigmoid_are_stable", "sigmoid", sigmoid_and_log_sigmoid_are_stable),
    Check("elementwise_bad_input_is_named", "bad input", elementwise_bad_input_is_named, generated=False),
)
