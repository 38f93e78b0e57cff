"""The CuPy backend's CUDA kernels, run on the CPU (tests/cuda_on_cpu.py).

The kernels' own source runs here with every CUDA thread a fiber, so what
they compute (reductions across warps, the launch shapes the backend picks,
the argument types it passes, the fallbacks) is checked on a machine without
a GPU, against the float64 NumPy reference and torch.optim.SGD. The first
tests show that the emulator can fail: it rejects a partial-warp shuffle and a
divergent barrier, exposes a missing ``__syncthreads``, and a wrong kernel
fails the reference check.

What stays for a GPU (tests/test_cuda.py, ``make gpu-check``): NVRTC's code
generation, real concurrency, CuPy's own argument passing, and speed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.conformance import reference as ref
from backends.conformance.strategies import logits, masked_logits_and_labels
from backends.cuda_kernels import SOURCE, sgd_launch, softmax_xent_launch
from backends.cupy_backend import CuPyBackend
from tests.conftest import assert_close
from tests.cuda_on_cpu import EmulationError, build, compiler, cpu_cupy_backend
from tests.test_training import small_data, train

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++) to run the CUDA kernels on")

DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def kernels():
    return build(SOURCE)


def run_softmax_xent(kernels, z, y, scale=1.0, launch=None, seed=1):
    n, c = z.shape
    grad, loss = np.empty_like(z), np.empty(n, z.dtype)
    kernels.seed = seed
    kernel = kernels.get_function("softmax_xent_f32" if z.dtype == np.float32 else "softmax_xent_f64")
    kernel(*(launch or softmax_xent_launch(n, c)),
           (z, np.asarray(y, np.int64), grad, loss, np.int64(n), np.int64(c), z.dtype.type(scale)))
    return loss, grad


# ---- the emulator can fail ---------------------------------------------------------------------


def test_a_full_mask_shuffle_in_a_partial_warp_is_refused(kernels):
    z, y = masked_logits_and_labels(np.float32, 2, 40, 0)
    with pytest.raises(EmulationError, match="partial warp"):
        run_softmax_xent(kernels, z, y, launch=((2,), (48,)))


def test_a_barrier_that_not_every_thread_reaches_is_a_deadlock():
    module = build('extern "C" __global__ void divergent(float *out, long long n) {\n'
                   "    if (threadIdx.x < 16) __syncthreads();\n"
                   "    out[threadIdx.x] = 1.0f;\n}\n")
    with pytest.raises(EmulationError, match="deadlock"):
        module.get_function("divergent")((1,), (64,), (np.zeros(64, np.float32), np.int64(64)))


RACE = """
extern "C" __global__ void broadcast(float *out, long long n) {
    __shared__ float value;
    if (threadIdx.x == 0) value = (float)(blockIdx.x + 1);
    SYNC
    out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}
"""


def test_a_missing_syncthreads_changes_the_result():
    expected = np.repeat(np.arange(1, 5, dtype=np.float32), 64)
    for sync, racy in (("__syncthreads();", False), ("", True)):
        module = build(RACE.replace("SYNC", sync))
        results = []
        for seed in (1, 2, 3):
            out = np.zeros(256, np.float32)
            module.seed = seed
            module.get_function("broadcast")((4,), (64,), (out, np.int64(256)))
            results.append(np.array_equal(out, expected))
        assert not all(results) if racy else all(results)


def test_a_wrong_reduction_fails_the_reference_check():
    wrong = SOURCE.replace("s = s * exp(m - other_m) + other_s;", "s = s + other_s;")
    assert wrong != SOURCE
    z, y = masked_logits_and_labels(np.float64, 6, 300, 1)
    loss, _ = run_softmax_xent(build(wrong), z, y)
    assert not np.allclose(loss, ref.cross_entropy(z, y, reduction="none"), rtol=1e-6)


def test_a_read_of_shared_memory_no_thread_wrote_fails_the_reference_check(kernels):
    """Shared memory starts as NaN bytes every block, as garbage would on a GPU (not as 0)."""
    unguarded = SOURCE.replace("m = lane < warps ? shared_m[lane] : neg_inf<T>();", "m = shared_m[lane];")
    unguarded = unguarded.replace("s = lane < warps ? shared_s[lane] : (T)0;", "s = shared_s[lane];")
    assert unguarded.count("shared_m[lane];") == 1 and unguarded.count("shared_s[lane];") == 1
    z, y = masked_logits_and_labels(np.float32, 4, 300, 2)  # 256 threads: 8 warps, so lanes 8-31 read unwritten slots
    assert np.allclose(run_softmax_xent(kernels, z, y)[0], ref.cross_entropy(z, y, reduction="none"), rtol=1e-5)
    assert not np.allclose(run_softmax_xent(build(unguarded), z, y)[0], ref.cross_entropy(z, y, reduction="none"),
                           rtol=1e-5)


def test_a_write_past_the_end_of_an_argument_is_reported():
    module = build('extern "C" __global__ void past_the_end(float *out, long long n) {\n'
                   "    out[threadIdx.x + 1] = 1.0f;  // one too far for the last thread\n}\n")
    out = np.zeros(32, np.float32)
    with pytest.raises(EmulationError, match="wrote outside the array passed as out"):
        module.get_function("past_the_end")((1,), (32,), (out, np.int64(32)))


@pytest.mark.parametrize("change, message", [
    (dict(scale=0.5), r"scale \(float\) must be a float32, got float"),
    (dict(y=np.zeros(3, np.int32)), "targets must hold int64, got int32"),
    (dict(z=np.zeros((3, 8), np.float32)[:, ::2]), "logits is not C-contiguous"),
])
def test_arguments_are_checked_as_a_gpu_needs_them(kernels, change, message):
    args = dict(z=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64), scale=np.float32(1.0))
    args.update(change)
    z = args["z"]
    with pytest.raises(EmulationError, match=message):
        kernels.get_function("softmax_xent_f32")(
            (3,), (32,), (z, args["y"], np.empty((3, 4), np.float32), np.empty(3, np.float32),
                          np.int64(3), np.int64(4), args["scale"]))


# ---- the kernels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c", [(1, 1), (3, 2), (5, 31), (5, 32), (5, 33), (4, 255), (4, 256), (3, 257),
                                  (16, 1000), (2, 5000)])
@pytest.mark.parametrize("seed", [0, 7])
def test_softmax_xent_kernel_matches_the_reference(kernels, dtype, n, c, seed):
    z, y = masked_logits_and_labels(dtype, n, c, seed + c)
    for reduction, scale in (("none", 1.0), ("mean", 1.0 / n)):
        loss, grad = run_softmax_xent(kernels, z, y, scale=scale, seed=seed)
        assert_close(loss, ref.cross_entropy(z, y, reduction="none"), dtype, scale=10)
        assert_close(grad, ref.cross_entropy_grad(z, y, reduction=reduction), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row, label", [
    ([1.0, 2.0, 3.0], 3),  # label out of range
    ([1.0, 2.0, 3.0], -100),  # an ignored label: the host then takes the general path
    ([-np.inf, -np.inf, -np.inf], 0),  # no softmax at all
    ([np.nan, 1.0, 2.0], 1),
    ([np.inf, 1.0, 2.0], 1),
    ([1.0, -np.inf, 2.0], 1),  # the target's own class masked: an infinite loss
])
def test_rows_the_kernel_cannot_handle_give_a_non_finite_loss(kernels, dtype, row, label):
    """The host checks the sum of the row losses once and falls back when it is not finite."""
    z = np.array([[0.5, 0.1, -1.0], row], dtype)
    loss, _ = run_softmax_xent(kernels, z, [0, label])
    assert np.isfinite(loss[0]) and not np.isfinite(loss[1])


@given(classes=st.integers(1, 100_000), rows=st.integers(1, 1 << 20))
def test_launch_shapes_are_whole_warps_within_cuda_limits(classes, rows):
    (grid,), (block,) = softmax_xent_launch(rows, classes)
    assert grid == rows and block % 32 == 0 and 32 <= block <= 256 and block >= min(classes, 256)
    (grid,), (block,) = sgd_launch(rows)
    assert 1 <= grid <= 4096 and block == 256 and (grid == 4096 or grid * block >= rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov, first", [(0.0, 0, 0), (0.9, 0, 1), (0.9, 1, 0), (0.5, 0, 0)])
def test_sgd_kernel_covers_every_element_with_a_grid_stride_loop(kernels, dtype, momentum, nesterov, first):
    rng = np.random.default_rng(3)
    n = 1000  # 2 blocks of 32 threads: each thread updates about 16 elements
    p, g, buf = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    lr, dampening, wd = 0.1, 0.2, 0.01
    expected_p, expected_buf = p.astype(np.float64), buf.astype(np.float64)
    d = g.astype(np.float64) + wd * expected_p
    if momentum:
        expected_buf = d if first else momentum * expected_buf + (1 - dampening) * d
        d = d + momentum * expected_buf if nesterov else expected_buf
    expected_p -= lr * d
    kernels.get_function("sgd_f32" if dtype == np.float32 else "sgd_f64")(
        (2,), (32,), (p, g, buf, np.int64(n), *(dtype(x) for x in (lr, momentum, dampening, wd)),
                      np.int32(momentum != 0), np.int32(nesterov), np.int32(first)))
    assert_close(p, expected_p, dtype)
    if momentum:
        assert_close(buf, expected_buf, dtype)


# ---- the CuPy backend's own code on the emulated kernels ----------------------------------------


@pytest.fixture(scope="module")
def cupy_on_cpu():
    return cpu_cupy_backend()


def test_plain_labels_take_the_fused_kernel(cupy_on_cpu, monkeypatch):
    calls = []
    general = CuPyBackend._shared_cross_entropy
    monkeypatch.setattr(CuPyBackend, "_shared_cross_entropy", lambda *a, **k: calls.append(a[1]) or general(*a, **k))
    z, y = masked_logits_and_labels(np.float32, 8, 10, 0)
    loss, grad = cupy_on_cpu.cross_entropy_and_grad(z, y)
    assert calls == []  # the fused kernel, no fallback
    assert_close(grad, ref.cross_entropy_grad(z, y), np.float32)
    y[3] = -100  # an ignored sample: the general path
    loss, grad = cupy_on_cpu.cross_entropy_and_grad(z, y)
    assert calls == ["cross_entropy_and_grad"]
    assert_close(loss, ref.cross_entropy(z, y), np.float32, scale=10)


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_fused_cross_entropy_and_grad_match_the_reference(cupy_on_cpu, dtype, data, reduction):
    z, scale = data.draw(logits(dtype, max_n=24, max_c=600, masked=data.draw(st.booleans())))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    finite = np.isfinite(z)
    y = np.array([rng.choice(np.flatnonzero(row)) for row in finite])  # never a masked class
    loss, grad = cupy_on_cpu.cross_entropy_and_grad(z, y, reduction=reduction)
    assert_close(loss, ref.cross_entropy(z, y, reduction=reduction), dtype, scale=scale)
    assert_close(grad, ref.cross_entropy_grad(z, y, reduction=reduction), dtype)


@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-10, 1e-12), (np.float32, 2e-4, 2e-5)])
def test_cupy_backend_follows_the_numpy_trajectory_with_emulated_kernels(cupy_on_cpu, dtype, rtol, atol):
    data = small_data()  # 64 SGD steps, each a fused cross-entropy and 6 fused SGD updates
    reference, reference_history = train("numpy", dtype, data)
    model, history = train(cupy_on_cpu, dtype, data)
    for a, b in zip(reference.params, model.params):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for a, b in zip(reference_history, history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rtol * 10, abs=atol * 10)
