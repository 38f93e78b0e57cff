"""The CuPy backend's CUDA kernels, run on the CPU (tests/cuda_on_cpu.py).

The kernels' own source runs here with every CUDA thread a fiber, so what
they compute (reductions across warps, the launch shapes the backend picks,
the argument types it passes, the fallbacks) is checked on a machine without
a GPU, against the float64 NumPy reference, torch.optim.SGD and (for
``linear_cross_entropy``'s fused chunk head) torch's float64 autograd. The first
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
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.conformance import reference as ref
from softgrad.backends.conformance.strategies import logits, masked_logits_and_labels
from softgrad.backends.cuda_kernels import SOURCE, linear_ce_head_launch, sgd_launch, softmax_xent_launch
from softgrad.backends.cupy_backend import CuPyBackend
from softgrad.numerics.losses.linear_cross_entropy import ChunkOps
from softgrad.numerics.losses.linear_cross_entropy import linear_cross_entropy as shared_linear_cross_entropy

from tests.conftest import TOLERANCES, assert_close
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
    assert linear_ce_head_launch(rows, classes) == softmax_xent_launch(rows, classes)
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
    general = ArrayAPIBackend._shared_cross_entropy_and_grad  # what runs where fused_cross_entropy declines
    monkeypatch.setattr(ArrayAPIBackend, "_shared_cross_entropy_and_grad",
                        lambda *a, **k: calls.append("cross_entropy_and_grad") or general(*a, **k))
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


# ---- linear_cross_entropy: the fused chunk head (linear_ce_head_*) through the backend's own code ----


def torch_linear_cross_entropy(x, w, y, *, linear_bias=None, weight=None, reduction="mean", ignore_index=-100,
                               label_smoothing=0.0, z_loss=0.0, softcap=None, grad_output=None):
    """The independent reference: torch's float64 autograd of ``F.cross_entropy`` of the (capped) logits,
    plus ``z_loss * lse**2`` over the tokens not ignored (``"mean"``: divided by their count)."""
    torch = pytest.importorskip("torch")
    f64 = dict(dtype=torch.float64)
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    wt = torch.tensor(np.asarray(w, np.float64), requires_grad=True)
    bt = None if linear_bias is None else torch.tensor(np.asarray(linear_bias, np.float64), requires_grad=True)
    yt = torch.tensor(np.asarray(y))
    z = xt @ wt.T if bt is None else xt @ wt.T + bt
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = torch.nn.functional.cross_entropy(
        z, yt, weight=None if weight is None else torch.tensor(np.asarray(weight, np.float64)), reduction=reduction,
        ignore_index=ignore_index, label_smoothing=label_smoothing)
    if z_loss:
        kept = (yt != ignore_index).to(**f64) if yt.ndim == 1 else torch.ones(len(yt), **f64)
        per_row = z_loss * torch.logsumexp(z, dim=1) ** 2 * kept
        loss = loss + (per_row if reduction == "none" else per_row.sum() / kept.sum() if reduction == "mean"
                       else per_row.sum())
    loss.backward(torch.ones_like(loss) if grad_output is None else torch.tensor(np.asarray(grad_output, np.float64)))
    grads = (xt.grad, wt.grad, None if bt is None else bt.grad)
    return loss.detach().numpy(), tuple(None if g is None else g.numpy() for g in grads)


def linear_ce_problem(dtype, n, d, classes, seed, *, bias=False, weight=None, ignored=(), ignore_index=-100,
                      grad_output=None, **options):
    """Inputs (logits of order 1-3), labels and options; ``weight="zero"`` weighs a target class 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((classes, d)) * 1.5 / np.sqrt(d)).astype(dtype)
    y = rng.integers(0, classes, n)
    y[list(ignored)] = ignore_index
    if bias:
        options["linear_bias"] = rng.standard_normal(classes).astype(dtype)
    if weight is not None:
        options["weight"] = rng.uniform(0.2, 2.0, classes).astype(dtype)
        if weight == "zero":
            options["weight"][y[y != ignore_index][0]] = 0.0
    if grad_output == "rows":
        options["grad_output"] = rng.uniform(-2.0, 2.0, n).astype(dtype)
    elif grad_output is not None:
        options["grad_output"] = grad_output
    if ignore_index != -100:
        options["ignore_index"] = ignore_index
    return x, w, y, options


@pytest.fixture
def launches(monkeypatch):
    """The names of the kernels the CuPy backend launches (a spy on ``CuPyBackend._kernel``)."""
    names = []
    kernel = CuPyBackend._kernel
    monkeypatch.setattr(CuPyBackend, "_kernel", lambda self, name: names.append(name) or kernel(self, name))
    return names


LINEAR_CE_CASES = [  # (n, d, V, chunk_size, options)
    pytest.param(7, 4, 2, None, dict(), id="V2-mean-one-chunk"),
    pytest.param(12, 6, 33, 4, dict(bias=True, reduction="sum"), id="V33-bias-sum-chunk-divides"),
    pytest.param(10, 8, 257, 3, dict(weight=True, ignored=(1, 6)), id="V257-weight-ignored-chunk-remainder"),
    pytest.param(9, 8, 1000, 4, dict(label_smoothing=0.1), id="V1000-smoothing"),
    pytest.param(11, 5, 300, 5, dict(weight="zero", label_smoothing=0.2, ignored=(0, 4)),
                 id="V300-weight-with-a-zero-smoothing-ignored"),
    pytest.param(10, 6, 64, 3, dict(z_loss=1e-2, ignored=(9,)), id="V64-z_loss-ignored"),
    pytest.param(8, 6, 500, 8, dict(softcap=2.0, bias=True, reduction="sum"), id="V500-softcap-bias-sum"),
    pytest.param(10, 6, 129, 4, dict(reduction="none", grad_output="rows", weight=True, ignored=(2, 3)),
                 id="V129-none-grad_output-weight-ignored"),
    pytest.param(9, 4, 40, 2, dict(reduction="none", grad_output="rows", label_smoothing=0.3, z_loss=0.05,
                                   softcap=1.5), id="V40-none-grad_output-smoothing-z_loss-softcap"),
    pytest.param(8, 6, 100, 3, dict(reduction="sum", grad_output=0.5, z_loss=1e-2, bias=True),
                 id="V100-sum-scalar-grad_output"),
    pytest.param(6, 5, 31, 1, dict(weight=True, ignore_index=3, ignored=(5,)), id="V31-in-range-ignore_index"),
    pytest.param(6, 8, 3000, 4, dict(bias=True, weight=True, label_smoothing=0.05, z_loss=1e-3, softcap=5.0,
                                     ignored=(2,), grad_output=2.0), id="V3000-everything"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, classes, chunk, setup", LINEAR_CE_CASES)
def test_linear_cross_entropy_and_grad_with_the_fused_head_match_torch(cupy_on_cpu, launches, dtype, n, d, classes,
                                                                       chunk, setup):
    x, w, y, options = linear_ce_problem(dtype, n, d, classes, seed=n * classes + d, **setup)
    loss, grads = cupy_on_cpu.linear_cross_entropy_and_grad(x, w, y, chunk_size=chunk, **options)
    expected_loss, expected_grads = torch_linear_cross_entropy(x, w, y, **options)
    tol = TOLERANCES[dtype]  # float32 against the float64 reference: rtol 2e-5, atol 1e-6
    for what, actual, expected in zip(("loss", "d input", "d linear_weight", "d linear_bias"),
                                      (loss, *grads), (expected_loss, *expected_grads)):
        assert (actual is None) == (expected is None), what
        if actual is not None:
            assert actual.dtype == dtype and actual.shape == expected.shape, what
            np.testing.assert_allclose(actual, expected, err_msg=what, **tol)
    kept = int(np.sum(y != options.get("ignore_index", -100)))
    chunks = -(-kept // (chunk or kept))
    assert launches == [f"linear_ce_head_{'f32' if dtype == np.float32 else 'f64'}"] * chunks
    # the loss alone (no grad_output there): the same kernel, the same value
    alone = cupy_on_cpu.linear_cross_entropy(x, w, y, chunk_size=chunk,
                                             **{k: v for k, v in options.items() if k != "grad_output"})
    np.testing.assert_allclose(alone, expected_loss, err_msg="loss alone", **tol)
    assert len(launches) == 2 * chunks


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_ce_head_matches_the_shared_head_with_chunks_from_the_memory_budget(cupy_on_cpu, launches, dtype):
    """The fused head against the shared ChunkOps on the same backend, every option at once, and a chunk
    size from the memory budget (one buffer a row: CuPyChunkOps.buffers)."""
    x, w, y, options = linear_ce_problem(dtype, 13, 6, 70, seed=5, bias=True, weight="zero", label_smoothing=0.1,
                                         z_loss=1e-2, softcap=3.0, ignored=(0, 7), grad_output=1.5)
    itemsize = np.dtype(dtype).itemsize
    budget = 70 * itemsize * 4  # 4 rows a chunk with one buffer (the shared code's 4 buffers: 1 row)
    loss, grads = cupy_on_cpu.linear_cross_entropy_and_grad(x, w, y, memory_budget=budget, **options)
    assert len(launches) == 3  # 11 tokens kept, 4 a chunk
    shared_loss, shared_grads = shared_linear_cross_entropy(cupy_on_cpu, x, w, y, memory_budget=budget,
                                                            want_grad=True, ops=ChunkOps(cupy_on_cpu), **options)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for actual, expected in zip((loss, *grads), (shared_loss, *shared_grads)):
        np.testing.assert_allclose(actual, expected, **tol)


def test_float16_inputs_compute_in_float32_with_the_f32_kernel(cupy_on_cpu, launches):
    x, w, y, options = linear_ce_problem(np.float16, 10, 8, 200, seed=3, bias=True, label_smoothing=0.1,
                                         z_loss=1e-3, softcap=4.0, ignored=(4,))
    loss, grads = cupy_on_cpu.linear_cross_entropy_and_grad(x, w, y, chunk_size=4, **options)
    expected_loss, expected_grads = torch_linear_cross_entropy(x, w, y, **options)
    assert launches == ["linear_ce_head_f32"] * 3
    for actual, expected in zip((loss, *grads), (expected_loss, *expected_grads)):
        assert actual.dtype == np.float16
        np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=2e-3, atol=2e-4)


def test_probability_targets_take_the_shared_head(cupy_on_cpu, launches):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((6, 5)), rng.standard_normal((30, 5))
    target = rng.dirichlet(np.ones(30), size=6)
    loss, grads = cupy_on_cpu.linear_cross_entropy_and_grad(x, w, target, chunk_size=4, label_smoothing=0.1,
                                                            z_loss=1e-2)
    expected_loss, expected_grads = torch_linear_cross_entropy(x, w, target, label_smoothing=0.1, z_loss=1e-2)
    assert launches == []
    for actual, expected in zip((loss, *grads[:2]), (expected_loss, *expected_grads[:2])):
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_accumulation_through_cublas_gemm_with_beta_one(launches, dtype):
    """On a GPU ``d W`` is accumulated by ``cupy.cublas.gemm("T", "N", g, xc, out=dw, beta=1.0)``; here a
    stand-in with that function's contract (its asserts, ``out = alpha op(a) op(b) + beta out``, in place)."""
    calls = []

    class Cublas:
        @staticmethod
        def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
            assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
            op_a, op_b = (a if transa == "N" else a.T), (b if transb == "N" else b.T)
            assert out is not None and out.shape == (op_a.shape[0], op_b.shape[1]) and out.dtype == a.dtype
            calls.append((transa, transb, beta))
            out[...] = alpha * (op_a @ op_b) + beta * out
            return out

    backend = cpu_cupy_backend()
    backend.cupy.cublas = Cublas  # the CpuCuPy instance: NumPy has no cublas
    x, w, y, options = linear_ce_problem(dtype, 9, 6, 50, seed=8, bias=True, ignored=(3,))
    loss, grads = backend.linear_cross_entropy_and_grad(x, w, y, chunk_size=3, **options)
    assert calls == [("T", "N", 1.0)] * 3 and len(launches) == 3
    expected_loss, expected_grads = torch_linear_cross_entropy(x, w, y, **options)
    tol = TOLERANCES[dtype]  # float32 against the float64 reference: rtol 2e-5, atol 1e-6
    for actual, expected in zip((loss, *grads), (expected_loss, *expected_grads)):
        np.testing.assert_allclose(actual, expected, **tol)


def _error(backend, x, w, y, ops=None, **options):
    with pytest.raises(ValueError) as caught:
        shared_linear_cross_entropy(backend, x, w, y, want_grad=True, ops=ops, op="linear_cross_entropy_and_grad",
                                    **options)
    return str(caught.value)


@pytest.mark.parametrize("case", ["nan-input", "inf-bias", "all-masked-row", "masked-target",
                                  "masked-class-smoothing-unweighted"])
def test_rows_without_a_finite_loss_give_the_shared_codes_error(cupy_on_cpu, launches, case):
    """The kernel's row max (NaN when a logit is NaN) and non-finite losses lead the caller to the same
    diagnosis as the shared head."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((40, 4))
    bias, y, options = np.zeros(40), np.array([1, 2, 3, 4, 5]), {}
    if case == "nan-input":
        x[3, 1] = np.nan
    elif case == "inf-bias":
        bias[7] = np.inf
    elif case == "all-masked-row":
        x[2] = 0.0
        bias[:] = -np.inf
    elif case == "masked-target":
        bias[4] = -np.inf
    else:
        bias[30] = -np.inf
        options = dict(label_smoothing=0.1)
    message = _error(cupy_on_cpu, x, w, y, linear_bias=bias, chunk_size=2, **options)
    assert launches  # the kernel ran, then the caller diagnosed
    assert message == _error(cupy_on_cpu, x, w, y, ops=ChunkOps(cupy_on_cpu), linear_bias=bias, chunk_size=2,
                             **options)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_zero_class_weight_cancels_a_masked_logit(cupy_on_cpu, launches, dtype):
    """Masked classes (bias -inf) weighed 0, with label smoothing: every term they touch is 0, not NaN."""
    x, w, y, options = linear_ce_problem(dtype, 8, 5, 60, seed=9, weight=True, label_smoothing=0.2, z_loss=1e-2)
    bias = np.zeros(60, dtype)
    masked = np.setdiff1d(np.arange(60), y)[:10]
    bias[masked], options["weight"][masked] = -np.inf, 0.0
    loss, grads = cupy_on_cpu.linear_cross_entropy_and_grad(x, w, y, linear_bias=bias, chunk_size=3, **options)
    assert len(launches) == 3 and np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    shared_loss, shared_grads = shared_linear_cross_entropy(cupy_on_cpu, x, w, y, linear_bias=bias, chunk_size=3,
                                                            want_grad=True, ops=ChunkOps(cupy_on_cpu), **options)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for actual, expected in zip((loss, *grads), (shared_loss, *shared_grads)):
        np.testing.assert_allclose(actual, expected, **tol)
    np.testing.assert_array_equal(grads[2][masked], 0.0)


@pytest.mark.parametrize("change", ["no-tanh-derivative", "target-read-after-the-barrier"])
def test_a_wrong_linear_ce_head_fails_the_reference_check(change):
    """The checks above can fail: a kernel without the softcap's ``1 - tanh^2``, or one that reads the
    target's logit after other threads have overwritten the row with G."""
    if change == "no-tanh-derivative":
        wrong = SOURCE.replace("if (softcap > (T)0) g *= (T)1 - tanh_j * tanh_j;", "")
    else:
        wrong = SOURCE.replace("        const T nll = lse - z_t;",
                               "        const T nll = lse - capped(zr[t], softcap, tanh_j);")
    assert wrong != SOURCE
    backend = cpu_cupy_backend()
    backend._module = build(wrong)
    x, w, y, options = linear_ce_problem(np.float64, 6, 4, 40, seed=2, softcap=2.0)
    loss, grads = backend.linear_cross_entropy_and_grad(x, w, y, chunk_size=3, **options)
    expected_loss, expected_grads = torch_linear_cross_entropy(x, w, y, **options)
    assert not all(np.allclose(a, b, rtol=1e-6) for a, b in zip((loss, *grads[:2]), (expected_loss,
                                                                                      *expected_grads[:2])))
