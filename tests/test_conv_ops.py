"""Convolution and pooling operations: what the conformance kit's property checks do not already say.

The property checks themselves (every backend, float32 and float64, generated N, C, H, W, O, kernel,
stride, padding, dilation and groups, against a float64 NumPy reference, ``torch.nn.functional`` and
torch autograd, central finite differences in float64, max-pool ties) live in
``backends/conformance/conv_checks.py``, and ``tests/test_properties.py`` runs them on every backend with
the rest of the kit (``pytest tests/test_properties.py -k "conv or pool or permute"``). Here: the tie rule
and the errors on fixed cases, each backend's override against the array-API default, a plugin from
scratch that gets the operations through ``complete`` and one whose convolution is wrong (the kit must fail
it), and the CUDA max-pool kernels launched with a grid that exercises their grid-stride loop (through the
CPU emulator, ``tests/cuda_on_cpu.py``).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from softgrad.backends import get_backend
from softgrad.numerics.hooks import BackendDefaults

from tests.conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

OPS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")


def _torch_max_pool_grad(x, dy, *args):
    leaf = torch.tensor(x, requires_grad=True)
    F.max_pool2d(leaf, *args).backward(torch.tensor(dy))
    return leaf.grad.numpy()


@pytest.mark.parametrize("args", [(2,), ((3, 2), (1, 2), (1, 1))], ids=str)
def test_max_pool_ties_go_where_torch_sends_them(be, dtype, args):
    """A window of equal entries (a ReLU's zeros, plateaus of integers) gives its gradient to its first entry
    in row-major order, as torch's CPU kernel does, overlapping windows included."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.integers(-1, 2, size=(2, 3, 7, 6)), 0).astype(dtype)  # mostly ties
    x[1, 2] = 0.0  # a whole plane of them
    dy_shape = F.max_pool2d(torch.tensor(x), *args).shape
    dy = rng.integers(1, 5, size=tuple(dy_shape)).astype(dtype)
    dx = be.to_numpy(be.max_pool2d_backward(be.asarray(x), be.asarray(dy), *args))
    np.testing.assert_array_equal(dx, _torch_max_pool_grad(x, dy, *args))  # small integers: exact


def test_the_contracts_example_error_reads_the_same_everywhere(be):
    x, w = be.asarray(np.zeros((2, 3, 28, 28), np.float32)), be.asarray(np.zeros((6, 1, 5, 5), np.float32))
    with pytest.raises(ValueError) as caught:
        be.conv2d(x, w)
    expected = "conv2d: x has 3 channels but weight expects 1 (weight (6, 1, 5, 5), groups 1)"
    assert str(caught.value) == expected


def test_dtypes_and_foreign_arrays_are_type_errors_naming_the_argument(be):
    x = be.asarray(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(TypeError, match="conv2d: weight is float64 but x is float32"):
        be.conv2d(x, be.asarray(np.zeros((2, 1, 3, 3), np.float64)))
    with pytest.raises(TypeError, match="max_pool2d: x must be float32 or float64, got int64"):
        be.max_pool2d(be.asarray(np.zeros((1, 1, 4, 4), np.int64)), 2)
    if be.name in ("torch", "jax", "array-api-strict"):  # backends that know their own arrays
        with pytest.raises(TypeError, match="conv2d: x is a numpy.ndarray, not an array of the"):
            be.conv2d(np.zeros((1, 1, 6, 6), np.float32), be.asarray(np.zeros((2, 1, 3, 3), np.float32)))


def _default_twin(be):
    """The same backend with the array-API defaults in place of its own convolution and pooling."""
    twin = type(be).__new__(type(be))
    twin.__dict__.update(be.__dict__)
    for name in OPS:
        setattr(twin, name, types.MethodType(getattr(BackendDefaults, name), twin))
    return twin


@pytest.mark.parametrize("width,options", [
    (8, {"stride": 1, "padding": 2, "dilation": 1, "groups": 1}),
    (8, {"stride": (2, 1), "padding": (0, 1), "dilation": (1, 2), "groups": 2}),
    (21, {"stride": (1, 1), "padding": (1, 0), "dilation": (2, 1), "groups": 2}),
], ids=["padded", "strided-dilated-grouped", "wide"])  # NumPy's two layouts: under and over 16 columns out
def test_each_backends_override_matches_the_array_api_default(be, width, options):
    """A hook changes nothing beyond rounding: the backend's own kernels against the default on the same
    backend, float64."""
    twin = _default_twin(be)
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 9, width)), rng.standard_normal((6, 4 // options["groups"], 3, 3)), \
        rng.standard_normal(6)
    on = [be.asarray(a) for a in (x, w, b)]
    y = be.conv2d(*on, **options)
    assert_close(be.to_numpy(y), twin.to_numpy(twin.conv2d(*on, **options)), np.float64)
    dy = be.asarray(rng.standard_normal(tuple(y.shape)))
    for mine, default in zip(be.conv2d_backward(on[0], on[1], dy, **options),
                             twin.conv2d_backward(on[0], on[1], dy, **options)):
        assert_close(be.to_numpy(mine), be.to_numpy(default), np.float64, scale=10.0)
    pool = (3, 2, 1)
    x4 = on[0]
    y = be.max_pool2d(x4, *pool)
    np.testing.assert_array_equal(be.to_numpy(y), be.to_numpy(twin.max_pool2d(x4, *pool)))
    dy = be.asarray(rng.standard_normal(tuple(y.shape)))
    assert_close(be.to_numpy(be.max_pool2d_backward(x4, dy, *pool)),
                 be.to_numpy(twin.max_pool2d_backward(x4, dy, *pool)), np.float64)
    assert_close(be.to_numpy(be.avg_pool2d(x4, *pool)), be.to_numpy(twin.avg_pool2d(x4, *pool)), np.float64)
    assert_close(be.to_numpy(be.avg_pool2d_backward(tuple(x4.shape), dy, *pool)),
                 be.to_numpy(twin.avg_pool2d_backward(tuple(x4.shape), dy, *pool)), np.float64)


@pytest.mark.parametrize("width", [8, 30], ids=["batch-innermost", "batch-outer"])
def test_a_result_is_never_a_buffer_the_next_call_reuses(be, width):
    """NumPy reuses its working buffers from call to call; what an operation returns is the caller's own
    (a batch of one image is the case where a transpose of a buffer is already contiguous)."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 8, width)), rng.standard_normal((3, 2, 3, 3))
    y = be.conv2d(be.asarray(x), be.asarray(w))
    dy = rng.standard_normal(tuple(y.shape))
    dx, dw, _ = be.conv2d_backward(be.asarray(x), be.asarray(w), be.asarray(dy))
    p = be.max_pool2d(be.asarray(x), 2)
    kept = [be.to_numpy(a).copy() for a in (y, dx, dw, p)]
    be.conv2d(be.asarray(-x), be.asarray(w))
    be.conv2d_backward(be.asarray(-x), be.asarray(w), be.asarray(-dy))
    be.max_pool2d(be.asarray(-x), 2)
    for before, after in zip(kept, (y, dx, dw, p)):
        np.testing.assert_array_equal(be.to_numpy(after), before)


def test_numpy_keeps_no_large_buffer_and_computes_the_same_without_them(monkeypatch):
    """Buffers over the size limit (a big evaluation batch) are made fresh for each call and not kept; the
    results are those of the kept ones."""
    from softgrad.backends import numpy_conv

    be, rng = get_backend("numpy"), np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 4, 9, 9)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    dy = rng.standard_normal((3, 6, 4, 7))
    options = {"stride": (2, 1), "padding": (0, 0), "dilation": 1, "groups": 2}
    kept = [be.conv2d(x, w, b, **options), *be.conv2d_backward(x, w, dy, **options),
            be.max_pool2d_backward(x, x[:, :, :5, :5], 3, 2, 1)]
    monkeypatch.setattr(numpy_conv, "_MAX_KEPT_BYTES", 0)
    monkeypatch.setattr(numpy_conv, "_local", __import__("threading").local())
    fresh = [be.conv2d(x, w, b, **options), *be.conv2d_backward(x, w, dy, **options),
             be.max_pool2d_backward(x, x[:, :, :5, :5], 3, 2, 1)]
    assert getattr(numpy_conv._local, "buffers", {}) == {}
    for a, c in zip(kept, fresh):
        np.testing.assert_array_equal(a, c)


def test_a_plugin_from_scratch_gets_the_operations_and_passes_the_kit():
    """``complete`` binds the array-API defaults to a backend that never heard of convolutions; the kit's
    convolution checks pass on it."""
    from softgrad.backends.conformance import run_checks
    from softgrad.backends.conformance.conv_checks import CONV_CHECKS
    from softgrad.numerics.protocol import complete

    from tests.test_plugins import FromScratch

    be = complete(FromScratch())
    assert all(getattr(be, name).__func__ is getattr(BackendDefaults, name) for name in OPS)
    results = run_checks(be, examples=4, checks=CONV_CHECKS)
    assert all(r.passed for r in results), [(r.check, r.dtype, r.message) for r in results if not r.passed]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_kits_check_fails_a_convolution_that_flips_its_kernel(dtype):
    """A true convolution (the kernel flipped) is not torch's cross-correlation: the kit's check says so
    (run as the kit runs it, without Hypothesis' shrinking, which would take seconds here)."""
    from hypothesis import Phase, given, settings
    from hypothesis import strategies as st
    from softgrad.backends.conformance.conv_checks import conv2d_matches_reference_and_torch

    class Flipped(type(get_backend("numpy"))):
        def conv2d(self, x, weight, bias=None, **options):
            return super().conv2d(x, np.ascontiguousarray(weight[:, :, ::-1, ::-1]), bias, **options)

    @settings(max_examples=10, phases=[Phase.generate], derandomize=True, database=None, deadline=None)
    @given(data=st.data())
    def run(data):
        conv2d_matches_reference_and_torch(Flipped(), dtype, data)

    with pytest.raises(AssertionError, match="conv2d"):
        run()


def test_torchs_max_pool_backward_recomputes_the_winners_of_a_tensor_written_since_its_forward():
    """The torch backend reuses the forward's winners only for the same, unwritten tensor (its version
    counter); written in place after the forward, or another tensor, the backward follows the new values."""
    be = get_backend("torch")
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float64).reshape(2, 3, 6, 6)
    dy = torch.ones(2, 3, 3, 3, dtype=torch.float64)
    be.max_pool2d(x, 2)
    expected = _torch_max_pool_grad(x.numpy(), dy.numpy(), 2)
    np.testing.assert_array_equal(be.max_pool2d_backward(x, dy, 2).numpy(), expected)
    x.mul_(-1)  # the winners move from the last entry of each window to the first
    expected = _torch_max_pool_grad(x.numpy(), dy.numpy(), 2)
    np.testing.assert_array_equal(be.max_pool2d_backward(x, dy, 2).numpy(), expected)
    view = x[:, :, 1:, 1:]
    be.max_pool2d(view, 2)
    x[:, :, 1:, 1:].neg_()  # written through another view of the same storage
    np.testing.assert_array_equal(be.max_pool2d_backward(view, dy[:, :, :2, :2], 2).numpy(),
                                  _torch_max_pool_grad(view.numpy().copy(), dy[:, :, :2, :2].numpy(), 2))


# ---- the CUDA max-pool kernels, compiled for the CPU emulator --------------------------------------------


def test_the_cupy_backend_pools_through_its_kernels():
    """cupy-on-cpu's max_pool2d and its backward launch the CUDA kernels (not the array-API default), and
    agree with torch, ties included."""
    from tests.cuda_on_cpu import compiler, cpu_cupy_backend

    if not compiler():
        pytest.skip("no C++ compiler (g++) to run the CUDA kernels on the CPU")
    be = cpu_cupy_backend()
    launched = []
    kernel = be._kernel
    be._kernel = lambda name: launched.append(name) or kernel(name)
    x = np.maximum(np.random.default_rng(3).integers(-1, 3, size=(2, 2, 6, 5)), 0).astype(np.float32)
    dy = np.ones(tuple(F.max_pool2d(torch.tensor(x), 3, 2, 1).shape), np.float32)
    np.testing.assert_array_equal(be.max_pool2d(x, 3, 2, 1), F.max_pool2d(torch.tensor(x), 3, 2, 1).numpy())
    expected = _torch_max_pool_grad(x, dy, 3, 2, 1)
    np.testing.assert_array_equal(be.max_pool2d_backward(x, dy, 3, 2, 1), expected)
    assert launched == ["max_pool2d_f32", "max_pool2d_f32", "max_pool2d_backward_f32"]


@pytest.mark.parametrize("suffix,dtype", [("f32", np.float32), ("f64", np.float64)])
def test_the_max_pool_kernels_cover_every_entry_with_a_small_grid(suffix, dtype):
    """Two blocks of one warp for hundreds of entries: the grid-stride loops reach every one (a GPU launch
    caps the grid at 4096 blocks)."""
    from softgrad.backends.cuda_kernels import SOURCE

    from tests.cuda_on_cpu import build, compiler

    if not compiler():
        pytest.skip("no C++ compiler (g++) to run the CUDA kernels on the CPU")
    module = build(SOURCE)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 9, 7)).astype(dtype)
    y_t = F.max_pool2d(torch.tensor(x), (2, 3), (2, 1), (1, 1))
    y, winners = np.empty(tuple(y_t.shape), dtype), np.empty(tuple(y_t.shape), np.int64)
    sizes = tuple(np.int64(k) for k in (12, 9, 7, *y.shape[2:], 2, 3, 2, 1, 1, 1))
    module.get_function(f"max_pool2d_{suffix}")((2,), (32,), (x, y, winners, *sizes))
    np.testing.assert_array_equal(y, y_t.numpy())
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.empty_like(x)
    module.get_function(f"max_pool2d_backward_{suffix}")((2,), (32,), (dy, winners, dx, *sizes))
    expected = _torch_max_pool_grad(x, dy, (2, 3), (2, 1), (1, 1))
    assert_close(dx, expected, dtype)


def test_torch_convolutions_on_a_gpu_turn_tf32_off_for_the_call_only():
    """cuDNN computes float32 convolutions in TF32 by default; the torch backend turns that off around its own
    calls and restores every setting after (checked on the CPU with an array that says it is on a GPU)."""
    from softgrad.backends import torch_conv

    cudnn, be = torch.backends.cudnn, get_backend("torch")
    before = (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, cudnn.conv.fp32_precision)
    with torch_conv._full_float32(be, types.SimpleNamespace(is_cuda=True)):
        assert cudnn.allow_tf32 is False and cudnn.conv.fp32_precision != "tf32"
        assert (cudnn.enabled, cudnn.benchmark, cudnn.deterministic) == before[:3]
    assert (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32,
            cudnn.conv.fp32_precision) == before
    with torch_conv._full_float32(be, torch.zeros(1)):  # on the CPU nothing changes
        assert cudnn.allow_tf32 == before[3]
