"""Checks of the convolution and pooling operations (``conv2d``, ``conv2d_backward``, ``max_pool2d``,
``max_pool2d_backward``, ``avg_pool2d``, ``avg_pool2d_backward``, ``permute_dims``).

References: the float64 NumPy definitions written here (each output a sum over the kernel's taps of a strided
slice of the zero-padded input; the gradients as the sums they are the adjoints of; the first maximum of a
window in row-major order for max pooling), ``torch.nn.functional.conv2d``/``max_pool2d``/``avg_pool2d`` and
torch autograd in float64 where torch is installed, and central finite differences of the backend's own
forward (in float64). Shapes are small and drawn by Hypothesis: N up to 3, up to 3 groups of up to 3
channels in and out, kernels up to 4x4 (pools 3x3), stride up to 3, padding up to 2 (pools: half the
kernel), dilation up to 2, images a few entries larger than the window; inputs standard normal or small
integers (ties, for max pooling). A backend that overrides nothing runs the array-API defaults
(:mod:`softgrad.numerics.convolution`, :mod:`softgrad.numerics.pooling`) and passes; one with its own
kernels proves them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from softgrad.backends.conformance.checks import Check, _raises, _torch, assert_close

# ---- the float64 NumPy reference ---------------------------------------------------------------------


def _pairs(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _geometry(shape, kernel, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = _pairs(stride), _pairs(padding), _pairs(dilation)
    out_h = (shape[2] + 2 * ph - dh * (kernel[0] - 1) - 1) // sh + 1
    out_w = (shape[3] + 2 * pw - dw * (kernel[1] - 1) - 1) // sw + 1
    return (sh, sw), (ph, pw), (dh, dw), (out_h, out_w)


def _tap(padded, i, j, stride, dilation, out):
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out
    return padded[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


def reference_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """``y[n, o] = b[o] + sum_{c in o's group, i, j} w[o, c, i, j] * xpad[n, c, i*d + s*ho, j*d + s*wo]``."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    o_all, cg, kh, kw = weight.shape
    stride, (ph, pw), dilation, out = _geometry(x.shape, (kh, kw), stride, padding, dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    og = o_all // groups
    y = np.zeros((x.shape[0], o_all, *out))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = _tap(padded[:, g * cg:(g + 1) * cg], i, j, stride, dilation, out)
                taps = weight[g * og:(g + 1) * og, :, i, j]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, taps)
    return y if bias is None else y + np.asarray(bias, np.float64)[None, :, None, None]


def reference_conv2d_backward(x, weight, dy, stride, padding, dilation, groups):
    """``(dx, dweight, dbias)``: each tap's term of the forward sum, transposed."""
    x, weight, dy = (np.asarray(a, np.float64) for a in (x, weight, dy))
    o_all, cg, kh, kw = weight.shape
    stride, (ph, pw), dilation, out = _geometry(x.shape, (kh, kw), stride, padding, dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dpadded, dweight = np.zeros_like(padded), np.zeros_like(weight)
    og = o_all // groups
    for g in range(groups):
        dyg, wg = dy[:, g * og:(g + 1) * og], weight[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = _tap(padded[:, g * cg:(g + 1) * cg], i, j, stride, dilation, out)
                dweight[g * og:(g + 1) * og, :, i, j] = np.einsum("nohw,nchw->oc", dyg, patch)
                _tap(dpadded[:, g * cg:(g + 1) * cg], i, j, stride, dilation, out)[...] += np.einsum(
                    "nohw,oc->nchw", dyg, wg[:, :, i, j])
    dx = dpadded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dx, dweight, dy.sum(axis=(0, 2, 3))


def _pool_taps(x, kernel, stride, padding, fill):
    stride, (ph, pw), dilation, out = _geometry(x.shape, kernel, stride, padding, 1)
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    taps = [_tap(padded, i, j, stride, dilation, out) for i in range(kernel[0]) for j in range(kernel[1])]
    return padded, np.stack(taps), (stride, dilation, out, (ph, pw))


def reference_max_pool2d(x, kernel, stride, padding):
    """The largest entry of each window (padding never wins), and the gradient to the first one, row-major."""
    _, taps, _ = _pool_taps(x, kernel, stride, padding, -np.inf)
    return taps.max(axis=0)


def reference_max_pool2d_backward(x, dy, kernel, stride, padding):
    padded, taps, (stride, dilation, out, (ph, pw)) = _pool_taps(x, kernel, stride, padding, -np.inf)
    winner = taps.argmax(axis=0)  # NumPy's argmax: the first maximum
    dpadded = np.zeros_like(padded)
    for k in range(taps.shape[0]):
        i, j = divmod(k, kernel[1])
        _tap(dpadded, i, j, stride, dilation, out)[...] += np.where(winner == k, dy, 0.0)
    return dpadded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


def reference_avg_pool2d(x, kernel, stride, padding):
    """The mean of each window, padded zeros counted (torch's ``count_include_pad=True``)."""
    _, taps, _ = _pool_taps(x, kernel, stride, padding, 0.0)
    return taps.mean(axis=0)


def reference_avg_pool2d_backward(x_shape, dy, kernel, stride, padding):
    stride, (ph, pw), dilation, out = _geometry(x_shape, kernel, stride, padding, 1)
    dpadded = np.zeros((*x_shape[:2], x_shape[2] + 2 * ph, x_shape[3] + 2 * pw))
    share = np.asarray(dy, np.float64) / (kernel[0] * kernel[1])
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            _tap(dpadded, i, j, stride, dilation, out)[...] += share
    return dpadded[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


# ---- generated cases ------------------------------------------------------------------------------------


def _pair_or_int(data, low, high, label):
    first = data.draw(st.integers(low, high), label=label)
    return (first, data.draw(st.integers(low, high), label=label)) if data.draw(st.booleans()) else first


def _values(rng, shape, dtype, ties: bool):
    """Standard normal values, or small integers (ties), representable in ``dtype``."""
    values = rng.integers(-2, 3, size=shape).astype(np.float64) if ties else rng.standard_normal(shape)
    return values.astype(dtype)


def conv_case(data, dtype) -> dict[str, Any]:
    """x, weight, bias (or None), dy and the keyword arguments of a conv2d call, drawn small."""
    groups = data.draw(st.integers(1, 3), label="groups")
    cg = data.draw(st.integers(1, 3), label="channels in per group")
    og = data.draw(st.integers(1, 3), label="channels out per group")
    kernel = (data.draw(st.integers(1, 4), label="kH"), data.draw(st.integers(1, 4), label="kW"))
    options = {"stride": _pair_or_int(data, 1, 3, "stride"), "padding": _pair_or_int(data, 0, 2, "padding"),
               "dilation": _pair_or_int(data, 1, 2, "dilation"), "groups": groups}
    (ph, pw), (dh, dw) = _pairs(options["padding"]), _pairs(options["dilation"])
    span = (dh * (kernel[0] - 1) + 1, dw * (kernel[1] - 1) + 1)
    size = [data.draw(st.integers(max(1, span[a] - 2 * (ph, pw)[a]), span[a] + 5), label="H, W")
            for a in (0, 1)]
    n = data.draw(st.integers(1, 3), label="N")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = _values(rng, (n, cg * groups, *size), dtype, False)
    weight = _values(rng, (og * groups, cg, *kernel), dtype, False)
    bias = _values(rng, (og * groups,), dtype, False) if data.draw(st.booleans(), label="bias") else None
    out = reference_conv2d(x, weight, bias, **options).shape
    return {"x": x, "weight": weight, "bias": bias, "dy": _values(rng, out, dtype, False), "options": options}


def pool_case(data, dtype) -> dict[str, Any]:
    kernel = (data.draw(st.integers(1, 3), label="kH"), data.draw(st.integers(1, 3), label="kW"))
    stride = data.draw(st.none() | st.integers(1, 3) | st.tuples(st.integers(1, 3), st.integers(1, 3)),
                       label="stride")
    padding = tuple(data.draw(st.integers(0, kernel[a] // 2), label="padding") for a in (0, 1))
    size = [data.draw(st.integers(max(1, kernel[a] - 2 * padding[a]), kernel[a] + 5), label="H, W")
            for a in (0, 1)]
    shape = (data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 3), label="C"), *size)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = _values(rng, shape, dtype, ties=data.draw(st.booleans(), label="ties"))
    kernel_size = kernel if kernel[0] != kernel[1] or data.draw(st.booleans()) else kernel[0]
    out = reference_avg_pool2d(x, kernel, stride if stride is not None else kernel, padding).shape
    return {"x": x, "args": (kernel_size, stride, padding), "kernel": kernel,
            "stride": stride if stride is not None else kernel, "padding": padding,
            "dy": _values(rng, out, dtype, False)}


def _magnitude(result) -> float:
    """What a sum's rounding error scales with: the largest sum of the magnitudes of its terms (the same
    operation on |inputs|), at least 1."""
    return max(1.0, float(np.max(result)))


def _on(be, a):
    return None if a is None else be.asarray(a)


def _host(be, a, dtype, what):
    out = be.to_numpy(a)
    assert out.dtype == np.dtype(dtype), f"{what}: dtype {out.dtype}, expected {np.dtype(dtype).name}"
    return out


# ---- conv2d ------------------------------------------------------------------------------------------------


def conv2d_matches_reference_and_torch(be, dtype, data):
    case = conv_case(data, dtype)
    x, weight, bias, options = case["x"], case["weight"], case["bias"], case["options"]
    y = _host(be, be.conv2d(be.asarray(x), be.asarray(weight), _on(be, bias), **options), dtype, "conv2d")
    expected = reference_conv2d(x, weight, bias, **options)
    scale = _magnitude(reference_conv2d(np.abs(x), np.abs(weight), None, **options))
    assert y.shape == expected.shape, f"conv2d: shape {y.shape}, expected {expected.shape} ({options})"
    assert_close(y, expected, dtype, scale=scale, what=f"conv2d {options}")
    torch = _torch()
    if torch is not None:
        t = torch.nn.functional.conv2d(*(None if a is None else torch.from_numpy(a.astype(np.float64))
                                         for a in (x, weight, bias)), **options)
        assert_close(y, t.numpy(), dtype, scale=scale, what=f"conv2d against torch {options}")


def conv2d_backward_matches_reference_and_autograd(be, dtype, data):
    case = conv_case(data, dtype)
    x, weight, dy, options = case["x"], case["weight"], case["dy"], case["options"]
    need_dx = data.draw(st.booleans(), label="need_dx")
    need_bias = data.draw(st.booleans(), label="need_bias")
    got = be.conv2d_backward(be.asarray(x), be.asarray(weight), be.asarray(dy), need_dx=need_dx,
                             need_bias=need_bias, **options)
    assert len(got) == 3 and (got[0] is None) != need_dx and (got[2] is None) != need_bias, \
        f"conv2d_backward(need_dx={need_dx}, need_bias={need_bias}) returned " \
        f"{[type(g).__name__ for g in got]}"
    expected = reference_conv2d_backward(x, weight, dy, **options)
    torch = _torch()
    if torch is not None:
        leaves = [torch.tensor(a.astype(np.float64), requires_grad=True)
                  for a in (x, weight, np.zeros(dy.shape[1]))]
        torch.nn.functional.conv2d(*leaves, **options).backward(torch.from_numpy(dy.astype(np.float64)))
    magnitudes = reference_conv2d_backward(np.abs(x), np.abs(weight), np.abs(dy), **options)
    scales = [_magnitude(m) for m in magnitudes]
    for k, (name, result) in enumerate(zip(("dx", "dweight", "dbias"), got)):
        if result is None:
            continue
        result = _host(be, result, dtype, f"conv2d_backward {name}")
        assert_close(result, expected[k], dtype, scale=scales[k], what=f"conv2d_backward {name} {options}")
        if torch is not None:
            assert_close(result, leaves[k].grad.numpy(), dtype, scale=scales[k],
                         what=f"conv2d_backward {name} against torch autograd {options}")


def conv2d_backward_matches_finite_differences(be, dtype, data):
    """``<dy, conv2d(x + h v) - conv2d(x - h v)> / 2h`` against ``<dx, v>``, and alike for the weight and
    the bias, along random directions, on the backend's own forward."""
    case = conv_case(data, dtype)
    x, weight, dy, options = case["x"], case["weight"], case["dy"], case["options"]
    bias = case["bias"] if case["bias"] is not None else np.zeros(weight.shape[0])
    grads = [be.to_numpy(g) for g in be.conv2d_backward(be.asarray(x), be.asarray(weight), be.asarray(dy),
                                                          **options)]
    rng, h = np.random.default_rng(1), 1e-6
    for k, name in enumerate(("x", "weight", "bias")):
        direction = rng.standard_normal((x, weight, bias)[k].shape)
        values = []
        for sign in (1.0, -1.0):
            moved = [x, weight, bias]
            moved[k] = moved[k] + sign * h * direction
            y = be.conv2d(*(be.asarray(a) for a in moved), **options)
            values.append(float(np.sum(dy * be.to_numpy(y))))
        numeric, analytic = (values[0] - values[1]) / (2 * h), float(np.sum(grads[k] * direction))
        tolerance = 1e-6 * (1 + abs(numeric)) + 1e-9 * max(abs(v) for v in values) / h
        assert abs(numeric - analytic) <= tolerance, \
            f"conv2d_backward d{name}: {analytic} along a direction, finite differences {numeric} ({options})"


# ---- pooling --------------------------------------------------------------------------------------------


def _torch_pool(torch, op, x, case, dy):
    leaf = torch.tensor(x.astype(np.float64), requires_grad=True)
    y = getattr(torch.nn.functional, op)(leaf, *case["args"])
    y.backward(torch.from_numpy(dy.astype(np.float64)))
    return y.detach().numpy(), leaf.grad.numpy()


def max_pool2d_matches_reference_and_torch(be, dtype, data):
    """The forward, and the backward with ties given to the first maximum of the window (torch's CPU rule)."""
    case = pool_case(data, dtype)
    x, dy, geometry = case["x"], case["dy"], (case["kernel"], case["stride"], case["padding"])
    y = _host(be, be.max_pool2d(be.asarray(x), *case["args"]), dtype, "max_pool2d")
    dx = _host(be, be.max_pool2d_backward(be.asarray(x), be.asarray(dy), *case["args"]), dtype,
               "max_pool2d_backward")
    what = f"kernel_size, stride, padding = {case['args']}"
    np.testing.assert_array_equal(y, reference_max_pool2d(x, *geometry), err_msg=f"max_pool2d {what}")
    scale = max(1.0, float(np.abs(dy).max()) * case["kernel"][0] * case["kernel"][1])
    assert_close(dx, reference_max_pool2d_backward(x, dy, *geometry), dtype, scale=scale,
                 what=f"max_pool2d_backward {what}")
    torch = _torch()
    if torch is not None:
        ty, tdx = _torch_pool(torch, "max_pool2d", x, case, dy)
        np.testing.assert_array_equal(y, ty, err_msg=f"max_pool2d against torch {what}")
        assert_close(dx, tdx, dtype, scale=scale, what=f"max_pool2d_backward against torch autograd {what}")


def avg_pool2d_matches_reference_and_torch(be, dtype, data):
    case = pool_case(data, dtype)
    x, dy, geometry = case["x"], case["dy"], (case["kernel"], case["stride"], case["padding"])
    y = _host(be, be.avg_pool2d(be.asarray(x), *case["args"]), dtype, "avg_pool2d")
    dx = _host(be, be.avg_pool2d_backward(tuple(x.shape), be.asarray(dy), *case["args"]), dtype,
               "avg_pool2d_backward")
    what = f"kernel_size, stride, padding = {case['args']}"
    scale = max(1.0, float(np.abs(x).max()), float(np.abs(dy).max()))
    assert_close(y, reference_avg_pool2d(x, *geometry), dtype, scale=scale, what=f"avg_pool2d {what}")
    assert_close(dx, reference_avg_pool2d_backward(x.shape, dy, *geometry), dtype, scale=scale,
                 what=f"avg_pool2d_backward {what}")
    torch = _torch()
    if torch is not None:
        ty, tdx = _torch_pool(torch, "avg_pool2d", x, case, dy)
        assert_close(y, ty, dtype, scale=scale, what=f"avg_pool2d against torch {what}")
        assert_close(dx, tdx, dtype, scale=scale, what=f"avg_pool2d_backward against torch autograd {what}")


def pool_backward_matches_finite_differences(be, dtype, data):
    """Both pools' input gradients against central differences of the backend's forward (distinct values:
    no tie within ``h``)."""
    case = pool_case(data, dtype)
    rng = np.random.default_rng(2)
    x = rng.permutation(case["x"].size).reshape(case["x"].shape) / case["x"].size  # distinct, 1/size apart
    dy, h = case["dy"], 1e-7
    for op in ("max_pool2d", "avg_pool2d"):
        forward = getattr(be, op)
        if op == "max_pool2d":
            grad = be.to_numpy(be.max_pool2d_backward(be.asarray(x), be.asarray(dy), *case["args"]))
        else:
            grad = be.to_numpy(be.avg_pool2d_backward(tuple(x.shape), be.asarray(dy), *case["args"]))
        direction = rng.standard_normal(x.shape)
        values = [float(np.sum(dy * be.to_numpy(forward(be.asarray(x + s * h * direction), *case["args"]))))
                  for s in (1.0, -1.0)]
        numeric, analytic = (values[0] - values[1]) / (2 * h), float(np.sum(grad * direction))
        assert abs(numeric - analytic) <= 1e-6 * (1 + abs(numeric)), \
            f"{op}_backward: {analytic} along a direction, finite differences {numeric} ({case['args']})"


# ---- permute_dims and bad arguments ---------------------------------------------------------------------


def permute_dims_moves_axes(be, dtype, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4), label="shape"))
    axes = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    x = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    np.testing.assert_array_equal(_host(be, be.permute_dims(be.asarray(x), axes), dtype, "permute_dims"),
                                  np.transpose(x, axes))


def conv_bad_arguments_raise(be, dtype, data):
    """Shapes and arguments that do not fit raise one ValueError line naming them."""
    x, w = be.asarray(np.zeros((2, 3, 8, 8), dtype)), be.asarray(np.zeros((6, 1, 5, 5), dtype))
    w3 = be.asarray(np.zeros((6, 3, 5, 5), dtype))
    cases = [
        ("x has 3 channels but weight expects 1", lambda: be.conv2d(x, w)),
        ("weight has 6 output channels, not divisible by groups 4",
         lambda: be.conv2d(x, be.asarray(np.zeros((6, 1, 3, 3), dtype)), groups=4)),
        (r"x must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)",
         lambda: be.conv2d(be.asarray(np.zeros((3, 8, 8), dtype)), w3)),
        (r"bias must have shape \(6,\)", lambda: be.conv2d(x, w3, be.asarray(np.zeros(5, dtype)))),
        ("stride must be at least 1", lambda: be.conv2d(x, w3, stride=0)),
        ("padding must be an int or a pair of ints", lambda: be.conv2d(x, w3, padding=(1, 2, 3))),
        ("the window spans 9 rows but the padded input has 8", lambda: be.conv2d(x, w3, dilation=2)),
        (r"dy has shape \(2, 6, 3, 3\) but the output has shape \(2, 6, 4, 4\)",
         lambda: be.conv2d_backward(x, w3, be.asarray(np.zeros((2, 6, 3, 3), dtype)))),
        (r"padding \(2, 2\) must be at most half of kernel_size \(2, 2\)",
         lambda: be.max_pool2d(x, 2, padding=2)),
        ("kernel_size must be at least 1", lambda: be.avg_pool2d(x, 0)),
        ("the window spans 9 rows", lambda: be.max_pool2d_backward(x, x, 9)),
        ("x_shape must be a tuple of 4 ints", lambda: be.avg_pool2d_backward((2, 3), x, 2)),
    ]
    for message, call in cases:
        _raises(ValueError, message, call, f"{message!r}")
        try:
            call()
        except ValueError as error:
            assert "\n" not in str(error), f"not one line: {error}"


CONV_CHECKS: tuple[Check, ...] = (
    Check("conv2d_matches_reference_and_torch", "conv2d", conv2d_matches_reference_and_torch),
    Check("conv2d_backward_matches_reference_and_autograd", "conv2d_backward",
          conv2d_backward_matches_reference_and_autograd),
    Check("conv2d_backward_matches_finite_differences", "conv2d_backward",
          conv2d_backward_matches_finite_differences, (np.float64,)),
    Check("max_pool2d_matches_reference_and_torch", "max_pool2d", max_pool2d_matches_reference_and_torch),
    Check("avg_pool2d_matches_reference_and_torch", "avg_pool2d", avg_pool2d_matches_reference_and_torch),
    Check("pool_backward_matches_finite_differences", "max_pool2d_backward",
          pool_backward_matches_finite_differences, (np.float64,)),
    Check("permute_dims_moves_axes", "permute_dims", permute_dims_moves_axes),
    Check("conv_bad_arguments_raise", "conv2d", conv_bad_arguments_raise, generated=False),
)
