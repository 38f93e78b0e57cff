"""The CuPy backend: the shared array-API implementation bound to CuPy, on a CUDA GPU."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.cuda_kernels import (
    SOURCE,
    linear_ce_head_launch,
    max_pool2d_launch,
    sgd_launch,
    softmax_xent_launch,
)
from softgrad.backends.numpy_backend import as_host_array
from softgrad.numerics import conv_args
from softgrad.numerics import validation as v
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.losses.linear_cross_entropy import ChunkOps, Plan
from softgrad.numerics.losses.support import validate_class_loss
from softgrad.numerics.optim import sgd
from softgrad.numerics.optim.sgd import SGDState

PIP_CUPY = "pip install 'softgrad[cupy]'  (or: pip install cupy-cuda12x / cupy-cuda13x to match your CUDA driver)"


def no_cuda_device_reason(error: BaseException, driver_version: int | None | str = "probe") -> str:
    """Why CuPy finds no device, the likely cause first: CUDA reports a machine without any NVIDIA driver as
    "CUDA driver version is insufficient", which would send the user to upgrade a driver they do not have."""
    raw = f"{type(error).__name__}: {error}"
    driver = _cuda_driver_version() if driver_version == "probe" else driver_version
    if driver is None:
        return f"backend 'cupy': no CUDA device: no NVIDIA GPU or driver found ({raw})"
    if "InsufficientDriver" in str(error) or "insufficient" in str(error):
        return (f"backend 'cupy': no CUDA device: the NVIDIA driver supports CUDA up to {driver // 1000}."
                f"{driver % 1000 // 10}, older than this CuPy's CUDA runtime needs; update the driver, or install "
                f"the cupy-cuda{driver // 1000}x package that matches it ({raw})")
    if "NoDevice" in str(error):
        return f"backend 'cupy': no CUDA device: the NVIDIA driver is installed but finds no GPU ({raw})"
    return f"backend 'cupy': no CUDA device ({raw})"


def _cuda_driver_version() -> int | None:
    """The CUDA version the installed NVIDIA driver supports (12040 for 12.4), or None where no driver loads."""
    import ctypes
    import sys

    try:
        library = ctypes.WinDLL("nvcuda.dll") if sys.platform == "win32" else ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if library.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
        return int(version.value)
    except (OSError, AttributeError):
        return None


class CuPyBackend(ArrayAPIBackend):
    name = "cupy"

    def __init__(self) -> None:
        try:
            import cupy
        except ImportError as error:
            raise BackendUnavailableError(
                f"backend 'cupy' needs CuPy, which is not installed ({error}): {PIP_CUPY}"
            ) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # CUDARuntimeError: no driver, driver too old, no device
            raise BackendUnavailableError(no_cuda_device_reason(error)) from None
        if count == 0:
            raise BackendUnavailableError("backend 'cupy': no CUDA device (the driver reports 0 GPUs)")
        import array_api_compat.cupy

        self._bind(cupy, array_api_compat.cupy, cupy.ndarray, f"cuda:{cupy.cuda.runtime.getDevice()}")

    def _bind(self, cupy, xp, array_type, device: str) -> None:
        # separate from __init__ so that the tests can bind this class to NumPy and kernels run on
        # the CPU (tests/cuda_on_cpu.py), and so test its logic on a machine without a GPU
        self.cupy = cupy
        self.xp = xp
        self.array_type = array_type
        self.device = device
        self.on_gpu = device.startswith("cuda")
        self._module = None  # the fused kernels, compiled at first use

    def peak_memory(self, run):
        """Bytes CuPy's memory pool holds after ``run()`` from empty: it grows to the peak and keeps it."""
        if not self.on_gpu:
            run()
            return None
        pool = self.cupy.get_default_memory_pool()
        pool.free_all_blocks()
        run()
        self.synchronize()
        return int(pool.total_bytes())

    def asarray(self, x: Any, dtype: Any = None):
        cupy = self.cupy
        if not isinstance(x, (cupy.ndarray, np.ndarray)) and hasattr(x, "__dlpack__") and _on_cuda(x):
            if hasattr(x, "detach"):  # torch refuses to export a tensor that requires grad
                x = x.detach()
            x = cupy.from_dlpack(x)  # a torch CUDA tensor (or any CUDA DLPack producer): no copy
        if isinstance(x, cupy.ndarray):
            if x.dtype.kind not in "biuf":
                raise TypeError(f"cupy.asarray: dtype {x.dtype} is not supported")
            return x if dtype is None else x.astype(np.dtype(dtype), copy=False)
        return cupy.asarray(as_host_array(x, dtype, self.name))

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def _device_of(self, x: Any):
        return x.device

    def maximum(self, a, b):
        # a Python scalar goes to the kernel as an argument: no 0-d device array, no host-to-device copy
        return self.cupy.maximum(a, b)

    # ---- fused kernels (backends/cuda_kernels.py) ------------------------------------------

    def _kernel(self, name: str):
        if self._module is None:
            self._module = self.cupy.RawModule(code=SOURCE, options=("-std=c++14",))
        return self._module.get_function(name)

    # max pooling: the kernels max_pool2d_* (forward, with each window's winner) and max_pool2d_backward_*
    # (gathering dy at the winners); convolution and average pooling: the array-API default through CuPy

    def _max_pool(self, op: str, x, pool: tuple):
        """``(y, winners, window)`` of ``max_pool2d`` by the kernel (after the shared checks)."""
        self.check_array(op, "x", x)
        shape = conv_args.check_image(op, "x", x)
        window = conv_args.pool_window(op, shape, *pool)
        cupy = self.cupy
        x = cupy.ascontiguousarray(x)
        n, c, h, w = shape
        y = cupy.empty((n, c, *window.out), dtype=x.dtype)
        winners = cupy.empty(y.shape, dtype=cupy.int64)
        suffix = "f32" if x.dtype == cupy.float32 else "f64"
        self._kernel(f"max_pool2d_{suffix}")(*max_pool2d_launch(y.size),
                                             (x, y, winners, *self._pool_sizes(shape, window)))
        return y, winners, window

    @staticmethod
    def _pool_sizes(shape, window) -> tuple:
        n, c, h, w = shape
        sizes = (n * c, h, w, *window.out, *window.kernel, *window.stride, *window.padding)
        return tuple(np.int64(k) for k in sizes)

    def max_pool2d(self, x, kernel_size, stride=None, padding=0):
        return self._max_pool("max_pool2d", x, (kernel_size, stride, padding))[0]

    def max_pool2d_backward(self, x, dy, kernel_size, stride=None, padding=0):
        op = "max_pool2d_backward"
        _, winners, window = self._max_pool(op, x, (kernel_size, stride, padding))
        self.check_array(op, "dy", dy)
        conv_args.check_grad(op, x, dy, winners.shape)
        cupy = self.cupy
        dx = cupy.empty(x.shape, dtype=x.dtype)
        suffix = "f32" if x.dtype == cupy.float32 else "f64"
        self._kernel(f"max_pool2d_backward_{suffix}")(
            *max_pool2d_launch(dx.size),
            (cupy.ascontiguousarray(dy), winners, dx, *self._pool_sizes(tuple(x.shape), window)))
        return dx

    def fused_cross_entropy(self, op, logits, target, options):
        """One kernel (``cuda_kernels.softmax_xent``) for the common case (class indices, no weight, no
        smoothing); None where the shared definition must run, and for the value alone (``op`` is
        ``cross_entropy``), where the kernel's gradient would be wasted.

        The kernel's row losses are summed and checked once; anything unusual
        (an ignored or out-of-range label, a row with no softmax) shows up as a
        non-finite total, and the shared path then computes or diagnoses it.
        Reference: ``softgrad.numerics.losses.cross_entropy.cross_entropy``.
        """
        if op == "cross_entropy":
            return None
        weight = options.get("weight")
        ignore_index = options.get("ignore_index", -100)
        reduction = options.get("reduction", "mean")
        label_smoothing = options.get("label_smoothing", 0.0)
        unknown = set(options) - {"weight", "ignore_index", "reduction", "label_smoothing"}
        kind = (None if unknown else
                validate_class_loss(self, op, logits, target, weight, ignore_index, reduction, label_smoothing))
        n, classes = logits.shape if kind else (0, 0)
        if (kind != "index" or weight is not None or label_smoothing != 0.0 or 0 <= ignore_index < classes):
            return None
        cupy = self.cupy
        logits = cupy.ascontiguousarray(logits)
        labels = cupy.ascontiguousarray(target.astype(cupy.int64, copy=False))
        grad = cupy.empty_like(logits)
        row_loss = cupy.empty(n, dtype=logits.dtype)
        scale = logits.dtype.type(1.0 / n if reduction == "mean" else 1.0)
        suffix = "f32" if logits.dtype == cupy.float32 else "f64"
        self._kernel(f"softmax_xent_{suffix}")(*softmax_xent_launch(n, classes),
                                              (logits, labels, grad, row_loss, np.int64(n), np.int64(classes), scale))
        total = row_loss.sum()
        if not math.isfinite(float(total)):  # one 8-byte read back: the step's only synchronisation
            return None
        loss = row_loss if reduction == "none" else (total / n if reduction == "mean" else total)
        return loss, grad

    def chunk_ops(self):
        """``linear_cross_entropy``'s chunks with the fused ``linear_ce_head_*`` kernel (CuPyChunkOps)."""
        return CuPyChunkOps(self)

    def sgd_step(self, params, grads, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        """The whole update of each tensor in one elementwise kernel (see cuda_kernels.sgd)."""
        params, grads, hyper = sgd.checked_call(self, params, grads, state, lr=lr, momentum=momentum,
                                                dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        lr, momentum, dampening, weight_decay = hyper.lr, hyper.momentum, hyper.dampening, hyper.weight_decay
        cupy = self.cupy
        params = list(params)
        old = None if momentum == 0.0 else state.momentum_buffers
        for what, arrays in (("parameter", params), ("momentum buffer", old or ())):
            for i, a in enumerate(arrays):
                if (a is not None and not a.flags.c_contiguous
                        and v.has_internal_overlap(a.shape, a.strides, a.itemsize)):
                    raise v.internal_overlap_error("sgd_step", f"{what} {i}", a.shape, a.strides)
        for i, (p, b) in enumerate(zip(params, old or ())):
            if b is not None and cupy.may_share_memory(p, b):
                raise ValueError(f"sgd_step: momentum buffer {i} shares memory with parameter {i}; the state's "
                                 "buffers must be arrays of their own (from sgd_step, or copies)")
        arrays = params + [b for b in old or () if b is not None]
        if any(not a.flags.c_contiguous or v.dtype_name(a.dtype) not in v.FLOAT_DTYPES for a in arrays):
            return sgd.step(self, params, grads, state, lr=lr, momentum=momentum, dampening=dampening,
                            nesterov=nesterov, weight_decay=weight_decay)
        # a buffer that is None (all of them before the first step) starts with this step: buf = g
        buffers = None if momentum == 0.0 else list(old or [None] * len(params))
        for i, (p, g) in enumerate(zip(params, grads)):
            first = buffers is not None and buffers[i] is None
            if first:
                buffers[i] = cupy.empty_like(p)
            # a gradient in memory the kernel writes (other than as the very same view) is copied first: the
            # kernel's threads would otherwise read values others have written
            if (buffers is not None and not first and cupy.may_share_memory(g, buffers[i])) or (
                    g is not p and cupy.may_share_memory(g, p)
                    and not (g.data.ptr == p.data.ptr if self.on_gpu else g.ctypes.data == p.ctypes.data)):
                g = g.copy()
            g = cupy.ascontiguousarray(g)
            real = p.dtype.type
            kernel = self._kernel("sgd_f32" if p.dtype == cupy.float32 else "sgd_f64")
            kernel(*sgd_launch(p.size), (p, g, p if buffers is None else buffers[i], np.int64(p.size), real(lr),
                                      real(momentum), real(dampening), real(weight_decay),
                                      np.int32(momentum != 0.0), np.int32(nesterov), np.int32(first)))
        return params, SGDState(step=state.step + 1,
                                momentum_buffers=state.momentum_buffers if buffers is None else tuple(buffers))


class CuPyChunkOps(ChunkOps):
    """``linear_cross_entropy``'s chunk operations on the GPU (see core/numerics/losses/linear_cross_entropy.py).

    One ``(rows, V)`` buffer, reused from chunk to chunk: the logits are
    multiplied into it, and the kernel ``linear_ce_head_*`` turns it into the
    logit gradient ``G`` in place while it computes the rows' losses (one
    read and one write of the logits). ``d input`` rows go straight into one
    preallocated array, and cuBLAS accumulates ``d W += G.T @ x`` with
    ``beta = 1`` (no ``(V, d)`` temporary a chunk). Probability targets (and
    a softcap that the compute dtype cannot hold) take the shared ``head``.

    Bound to NumPy (tests/cuda_on_cpu.py) there is no ``cupy.cublas``: the
    accumulation is then ``dw += g.T @ xc``, the same product.
    """

    buffers = 1

    def buffers_for(self, kind, eps, has_weight, softcap):
        return self.buffers if kind == "index" else ChunkOps.buffers  # probability targets: the shared head

    def __init__(self, be: Any) -> None:
        super().__init__(be)
        self.cupy = be.cupy
        self._buffer = None
        self._placeholders: dict = {}
        self._cublas = _cublas(be)

    def logits(self, xc, w, b):
        cupy = self.cupy
        rows, classes = int(xc.shape[0]), int(w.shape[0])
        buffer = self._buffer
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != classes or buffer.dtype != w.dtype:
            buffer = self._buffer = cupy.empty((rows, classes), dtype=w.dtype)
        z = buffer[:rows]
        cupy.matmul(self.cast(xc, w.dtype), w.T, out=z)
        if b is not None:
            z += b
        return z

    def input_grad_store(self, n_rows, d, dtype, device):
        return self.cupy.empty((n_rows, d), dtype=dtype)

    def input_grad(self, store, g, w, start, stop):
        self.cupy.matmul(g, w, out=store[start:stop])

    def input_grad_result(self, store, n_rows, d, dtype, device):
        return store

    def accumulate(self, dw, db, g, xc):
        if self._cublas is not None:
            self._cublas.gemm("T", "N", g, xc, out=dw, beta=1.0)  # dw = g.T @ xc + 1 * dw, in place
        else:
            dw += g.T @ xc
        if db is not None:
            db += g.sum(axis=0)
        return dw, db

    def _operand(self, x, dtype):
        """``x`` as the kernel reads it (C-contiguous, ``dtype``), or a 1-element placeholder for None."""
        cupy = self.cupy
        if x is None:
            key = np.dtype(dtype).str
            if key not in self._placeholders:
                self._placeholders[key] = cupy.zeros(1, dtype=dtype)
            return self._placeholders[key]
        return cupy.ascontiguousarray(x.astype(dtype, copy=False))

    def head(self, plan: Plan, z, target, row_scale):
        cupy = self.cupy
        dtype = z.dtype
        double = dtype == cupy.float64
        if plan.kind != "index" or not (double or dtype == cupy.float32):
            return super().head(plan, z, target, row_scale)
        real = dtype.type
        softcap = 0.0 if plan.softcap is None else plan.softcap
        if plan.softcap is not None and not 0.0 < float(real(softcap)) < math.inf:
            return super().head(plan, z, target, row_scale)  # a cap that float32 rounds to 0 or inf
        z = cupy.ascontiguousarray(z)
        rows, classes = (int(s) for s in z.shape)
        labels = self._operand(target, cupy.int64)
        ce, lse, row_max = (cupy.empty(rows, dtype=dtype) for _ in range(3))
        eps = plan.eps
        self.be._kernel("linear_ce_head_f64" if double else "linear_ce_head_f32")(
            *linear_ce_head_launch(rows, classes),
            (z, labels, self._operand(plan.weight, dtype), self._operand(row_scale, dtype), ce, lse, row_max,
             np.int64(rows), np.int64(classes), real(1.0 - eps), real(eps / classes),
             real((eps / classes) * plan.weight_sum), real(plan.ce_scale),
             real(plan.z_scale * (2.0 * plan.z_loss)), real(softcap), np.int32(plan.weight is not None),
             np.int32(row_scale is not None), np.int32(eps != 0.0)))
        return ce, lse, row_max, z


def _cublas(be: Any):
    """CuPy's cuBLAS wrappers (a submodule, imported here), or None where ``be.cupy`` has none (the emulator)."""
    if be.on_gpu:
        import cupy.cublas

        return cupy.cublas
    return getattr(be.cupy, "cublas", None)


def _on_cuda(x: Any) -> bool:
    """Whether a DLPack producer lives on a CUDA device (kDLCUDA = 2, kDLCUDAManaged = 13)."""
    try:
        return x.__dlpack_device__()[0] in (2, 13)
    except Exception:
        return False
