"""The GPU path: the fused kernels' source, and (on a CUDA machine) what only a GPU can run.

Without a GPU the kernels still compile here, with NVRTC (what CuPy uses at
run time) and with nvcc when it is installed; the GPU cases skip with the
reason the backend gives.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from softgrad.backends import get_backend
from softgrad.backends.conformance import reference as ref
from softgrad.backends.conformance.strategies import masked_logits_and_labels
from softgrad.backends.cuda_kernels import KERNEL_NAMES, SOURCE
from softgrad.numerics.losses import cross_entropy as shared

from tests.conftest import BACKEND_STATUS as STATUS
from tests.conftest import assert_close, backend_param
from tests.test_training import train

GPU_BACKENDS = [backend_param("cupy"), backend_param("torch:cuda")]


def test_kernels_compile_with_nvrtc():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (and its NVRTC) is not installed")
    program = nvrtc.createProgram(SOURCE, "softgrad_kernels.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_90", "-std=c++14"])
    except nvrtc.NVRTCError:
        pytest.fail("NVRTC rejected the kernels:\n" + nvrtc.getProgramLog(program))
    ptx = nvrtc.getPTX(program).decode() if isinstance(nvrtc.getPTX(program), bytes) else nvrtc.getPTX(program)
    for name in KERNEL_NAMES:
        assert f".entry {name}(" in ptx


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_kernels_compile_with_nvcc(tmp_path):
    source = tmp_path / "kernels.cu"
    source.write_text(SOURCE)
    result = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", str(source), "-o", str(tmp_path / "kernels.ptx")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    assert all(f".entry {name}(" in ptx for name in KERNEL_NAMES)


# ---- on a GPU ----------------------------------------------------------------------------------


@pytest.fixture(params=GPU_BACKENDS)
def gpu(request):
    return get_backend(request.param)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c", [(1, 2), (37, 10), (4096, 1000), (64, 5000)])
def test_fused_cross_entropy_matches_the_shared_path_and_the_reference(gpu, dtype, n, c):
    z, y = masked_logits_and_labels(dtype, n, c, seed=n + c)
    for reduction in ("mean", "sum", "none"):
        loss, grad = gpu.cross_entropy_and_grad(gpu.asarray(z), gpu.asarray(y), reduction=reduction)
        shared_loss, shared_grad = shared.cross_entropy(gpu, gpu.asarray(z), gpu.asarray(y), reduction=reduction,
                                                        op="check", want_grad=True)
        assert_close(gpu.to_numpy(loss), ref.cross_entropy(z, y, reduction=reduction), dtype, scale=10)
        assert_close(gpu.to_numpy(grad), ref.cross_entropy_grad(z, y, reduction=reduction), dtype)
        assert_close(gpu.to_numpy(loss), gpu.to_numpy(shared_loss), dtype, scale=10)
        assert_close(gpu.to_numpy(grad), gpu.to_numpy(shared_grad), dtype)


@pytest.mark.gpu
def test_fused_path_falls_back_for_ignored_and_bad_labels(gpu):
    z = gpu.asarray(np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]]))
    loss = gpu.cross_entropy_and_grad(z, gpu.asarray(np.array([-100, 1])))[0]
    assert float(gpu.to_numpy(loss)) == pytest.approx(ref.cross_entropy(gpu.to_numpy(z), [-100, 1]))
    with pytest.raises(ValueError, match=r"label 3 \(sample 1\) is out of range for C=3"):
        gpu.cross_entropy_and_grad(z, gpu.asarray(np.array([0, 3])))
    with pytest.raises(ValueError, match="row 0 of the logits holds NaN"):
        gpu.cross_entropy_and_grad(gpu.asarray(np.array([[np.nan, 1.0]])), gpu.asarray(np.array([0])))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-9, 1e-11), (np.float32, 5e-4, 5e-5)])
def test_gpu_training_follows_the_numpy_trajectory(gpu, dtype, rtol, atol):
    from tests.test_training import small_data

    data = small_data()
    reference, reference_history = train("numpy", dtype, data)
    model, history = train(gpu.name, dtype, data)
    for a, b in zip(reference.params, model.params):
        np.testing.assert_allclose(a, gpu.to_numpy(b), rtol=rtol, atol=atol)
    assert history[-1]["train_loss"] == pytest.approx(reference_history[-1]["train_loss"], rel=rtol * 10)


@pytest.mark.gpu
@pytest.mark.skipif(any(STATUS[name] != "available" for name in ("cupy", "torch:cuda")),
                    reason="needs both cupy and torch:cuda: " + "; ".join(
                        STATUS[name] for name in ("cupy", "torch:cuda") if STATUS[name] != "available"))
def test_dlpack_shares_memory_between_cupy_and_torch():
    cupy_be, torch_be = get_backend("cupy"), get_backend("torch:cuda")
    import torch

    tensor = torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)
    array = cupy_be.asarray(tensor)
    assert array.data.ptr == tensor.data_ptr()  # no copy
    back = torch_be.asarray(array)
    assert back.data_ptr() == tensor.data_ptr()
    assert torch_be.to_numpy(back).tolist() == [[0, 1, 2], [3, 4, 5]]
