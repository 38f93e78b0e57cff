"""The PyTorch backend, CPU or CUDA: the shared implementation plus torch's fused ops.

No autograd anywhere: every method runs under ``torch.no_grad()`` semantics
because the arrays it makes never require grad.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from softgrad.backends import torch_conv
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.numpy_backend import as_host_array
from softgrad.numerics import validation as v
from softgrad.numerics.convolution import conv_options
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.losses.support import plain_class_targets
from softgrad.numerics.optim import sgd
from softgrad.numerics.optim.sgd import SGDState

PIP_TORCH = "pip install 'softgrad[torch]'  (or: pip install torch)"


class TorchBackend(ArrayAPIBackend):
    def __init__(self, device: str = "cpu") -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError(f"backend 'torch' needs PyTorch, which is not installed: {PIP_TORCH}") from None
        import array_api_compat.torch

        self.torch = torch
        self.xp = array_api_compat.torch
        self.array_type = torch.Tensor
        name = "torch" if device == "cpu" else f"torch:{device}"
        try:
            torch_device = torch.device(device)
        except RuntimeError as error:
            raise BackendUnavailableError(f"backend {name!r}: unknown torch device {device!r} ({error})") from None
        if torch_device.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"backend {name!r}: no CUDA device (torch {torch.__version__}, built for CUDA "
                    f"{torch.version.cuda or 'none'}, finds no GPU or driver here); use 'torch' for the CPU"
                )
            index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"backend {name!r}: no CUDA device {index}; this machine has {torch.cuda.device_count()}"
                )
            torch_device = torch.device("cuda", index)
        elif torch_device.type != "cpu":
            raise BackendUnavailableError(f"backend {name!r}: only 'cpu' and 'cuda' devices are supported")
        self.name = name
        self._torch_device = torch_device
        self.device = str(torch_device)
        self.on_gpu = torch_device.type == "cuda"

    def peak_memory(self, run):
        """Peak bytes of torch's CUDA allocator during ``run()``; None on the CPU, where torch keeps no count."""
        if not self.on_gpu:
            run()
            return None
        self.torch.cuda.synchronize(self._torch_device)
        self.torch.cuda.reset_peak_memory_stats(self._torch_device)
        run()
        self.torch.cuda.synchronize(self._torch_device)
        return int(self.torch.cuda.max_memory_allocated(self._torch_device))

    # ---- convolution and pooling: torch's own kernels (backends.torch_conv) ---------------------------------

    def conv2d(self, x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
        return torch_conv.conv2d(self, x, weight, bias, conv_options(stride, padding, dilation, groups))

    def conv2d_backward(self, x, weight, dy, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                        need_bias=True):
        return torch_conv.conv2d_backward(self, (x, weight, dy), conv_options(stride, padding, dilation, groups),
                                          (bool(need_dx), bool(need_bias)))

    def max_pool2d(self, x, kernel_size, stride=None, padding=0):
        return torch_conv.pool(self, "max_pool2d", x, (kernel_size, stride, padding))

    def max_pool2d_backward(self, x, dy, kernel_size, stride=None, padding=0):
        return torch_conv.max_pool_backward(self, x, dy, (kernel_size, stride, padding))

    def avg_pool2d(self, x, kernel_size, stride=None, padding=0):
        return torch_conv.pool(self, "avg_pool2d", x, (kernel_size, stride, padding))

    def avg_pool2d_backward(self, x_shape, dy, kernel_size, stride=None, padding=0):
        return torch_conv.avg_pool_backward(self, x_shape, dy, (kernel_size, stride, padding))

    # ---- plumbing ---------------------------------------------------------------

    def check_array(self, op: str, what: str, x: Any) -> None:
        super().check_array(op, what, x)
        if x.is_meta:
            raise TypeError(_meta_message(op, what))

    def asarray(self, x: Any, dtype: Any = None):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            if x.is_meta:
                raise TypeError(_meta_message(f"{self.name}.asarray", "the tensor"))
            if x.is_complex():
                raise TypeError(f"{self.name}.asarray: complex tensors are not supported")
            torch_dtype = None if dtype is None else self._torch_dtype(dtype)
            return x.detach().to(device=self._torch_device, dtype=torch_dtype)
        if not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") and hasattr(x, "__cuda_array_interface__"):
            # a CuPy array: on a CUDA device, shared without a copy; for the CPU, copied to the host
            tensor = torch.from_dlpack(x)
            return self.asarray(tensor, dtype)
        # Through NumPy, so a Python list of floats is float64 on every backend.
        host = as_host_array(x, dtype, self.name)
        if host.ndim and (not host.flags.writeable or any(step < 0 for step in host.strides)):
            # torch cannot share a reversed view, and must not share read-only memory (a memory-mapped file):
            # an in-place update of it would crash the process
            host = np.array(host)
        return torch.as_tensor(host, device=self._torch_device)

    def _torch_dtype(self, dtype: Any):
        if isinstance(dtype, self.torch.dtype):
            return dtype
        name = np.dtype(dtype).name
        if name == "bool":
            return self.torch.bool
        torch_dtype = getattr(self.torch, name, None)
        if not isinstance(torch_dtype, self.torch.dtype) or np.dtype(dtype).kind not in "biuf":
            raise TypeError(f"{self.name}.asarray: dtype {name} is not supported")
        return torch_dtype

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            if x.is_meta:
                raise TypeError(_meta_message(f"{self.name}.to_numpy", "the tensor"))
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def synchronize(self) -> None:
        if self._torch_device.type == "cuda":
            self.torch.cuda.synchronize(self._torch_device)

    def _device_of(self, x: Any):
        return x.device

    # On the CPU, torch's BLAS multiplies by a matrix of few columns (the 10 logits of a
    # classifier) 2-2.5x faster when that matrix is transposed in memory, as nn.Linear stores it:
    # measured on this project's CPU machine, 784x10 at batch 1024, forward 424 -> 228 us and the
    # weight gradient 530 -> 209 us; for wide layers the (in, out) layout is the faster one.
    # The copies of the small matrix cost a few microseconds.
    _FEW_COLUMNS, _MANY_ROWS = 16, 256

    def _skinny(self, rows: int, columns: int) -> bool:
        return self._torch_device.type == "cpu" and columns <= self._FEW_COLUMNS and rows >= self._MANY_ROWS

    def affine(self, x, weight, bias):
        if self._skinny(x.shape[0], weight.shape[1]):
            return self.torch.addmm(bias, x, weight.T.contiguous().T)
        return self.torch.addmm(bias, x, weight)

    def affine_relu(self, x, weight, bias):
        return self.torch.relu_(self.affine(x, weight, bias))  # in place on the fresh product

    def matmul(self, a, b):
        # the weight gradient x^T dy of a layer with few outputs: computed as (dy^T x)^T
        if a.ndim == 2 and b.ndim == 2 and self._skinny(a.shape[1], b.shape[1]) and a.T.is_contiguous():
            return (b.T @ a.T).T.contiguous()
        return a @ b

    def relu_backward(self, h, dh):
        return self.torch.ops.aten.threshold_backward(dh, h, 0.0)  # one pass, as autograd's ReLU

    def maximum(self, a, b):
        if isinstance(b, (int, float)):
            return self.torch.clamp_min(a, b)
        return self.torch.maximum(a, b)

    # ---- fused softmax: one kernel each, after the shared checks ----------------------

    def softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("softmax", z, axis)
        self._checked_max("softmax", z, axis)
        return self.torch.softmax(z, dim=axis)

    def log_softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("log_softmax", z, axis)
        self._checked_max("log_softmax", z, axis)
        return self.torch.log_softmax(z, dim=axis)

    # ---- cross-entropy: torch's log_softmax, then the gradient in place on it ----------------

    def fused_cross_entropy(self, op, logits, target, options):
        """Four kernels for the plain case (:func:`plain_class_targets`): log_softmax, the picked
        log-probabilities, their sum, and exp / scatter / scale in place for the gradient. None where the
        shared definition must run: other options, tensors that require grad (the in-place gradient would
        break autograd), or a loss that is not finite, which it diagnoses and names (one read-back decides).
        Reference: ``softgrad.numerics.losses.cross_entropy.cross_entropy``."""
        if getattr(logits, "requires_grad", False):
            return None
        plain = plain_class_targets(self, op, logits, target, options)
        if plain is None:
            return None
        labels, reduction = plain
        torch, n = self.torch, logits.shape[0]
        grad = torch.log_softmax(logits, dim=1)
        per_sample = -grad.gather(1, labels[:, None])[:, 0]
        loss = per_sample if reduction == "none" else per_sample.sum()
        finite = bool(torch.isfinite(loss).all()) if reduction == "none" else math.isfinite(loss.item())
        if not finite:
            return None
        if reduction == "mean":
            loss = loss / n
        grad.exp_()
        grad.scatter_add_(1, labels[:, None], self._minus_one(grad).expand(n, 1))
        if reduction == "mean":
            grad.mul_(1.0 / n)
        return loss, grad

    def _minus_one(self, like):
        """A (1, 1) tensor of -1 in ``like``'s dtype and device, made once."""
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_minus_ones", {})
        if key not in cache:
            cache[key] = self.torch.full((1, 1), -1.0, dtype=like.dtype, device=like.device)
        return cache[key]

    def chunk_ops(self):
        from softgrad.backends.inplace_linear_ce import TorchChunkOps

        return TorchChunkOps(self)

    def linear_cross_entropy(self, input, linear_weight, target, *positional, **options):
        return self._linear_cross_entropy("linear_cross_entropy", input, linear_weight, target, positional, options)

    def linear_cross_entropy_and_grad(self, input, linear_weight, target, *positional, **options):
        return self._linear_cross_entropy("linear_cross_entropy_and_grad", input, linear_weight, target, positional,
                                          options)

    def _linear_cross_entropy(self, op, input, linear_weight, target, positional, options):
        """The in-place chunks (:mod:`backends.inplace_linear_ce`), or, where a tensor requires grad, the shared
        functional ones: autograd refuses the in-place ones' ``out=`` (as the fused cross-entropy leaves such
        logits to the shared definition, so the loss stays differentiable)."""
        if any(getattr(a, "requires_grad", False) for a in (input, linear_weight, *options.values())):
            from softgrad.numerics.losses import linear_cross_entropy as chunked
            from softgrad.numerics.methods import _known_options, _linear_keywords_only

            _linear_keywords_only(op, positional)
            _known_options(op, options, exclude=() if op.endswith("_and_grad") else ("grad_output",))
            loss, grads = chunked.linear_cross_entropy(self, input, linear_weight, target, op=op,
                                                       want_grad=op.endswith("_and_grad"),
                                                       ops=chunked.ChunkOps(self), **options)
            return (loss, grads) if op.endswith("_and_grad") else loss
        return getattr(super(), op)(input, linear_weight, target, *positional, **options)  # chunk_ops(): in place

    def label_range(self, labels) -> tuple[int, int]:
        low, high = self.torch.aminmax(labels)
        return int(low), int(high)

    # ---- SGD: torch's fused kernel (one pass per tensor), else multi-tensor _foreach ops ----

    @staticmethod
    def _fused_sgd_takes(params, grads, buffers) -> bool:
        """One dtype and device, every tensor contiguous (the kernel walks memory as one flat run: a strided
        view would have it write between the view's elements) and every buffer there."""
        return (len({(p.dtype, p.device) for p in params}) <= 1
                and all(p.is_contiguous() and g.is_contiguous() for p, g in zip(params, grads))
                and (buffers is None or all(b is not None and b.is_contiguous() for b in buffers)))

    def sgd_step(self, params, grads, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        params, grads, hyper = sgd.checked_call(self, params, grads, state, lr=lr, momentum=momentum,
                                                dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        lr, momentum, dampening, weight_decay = hyper.lr, hyper.momentum, hyper.dampening, hyper.weight_decay
        torch = self.torch
        params = list(params)
        if not params:  # torch's multi-tensor ops refuse empty lists
            return params, SGDState(step=state.step + 1,
                                    momentum_buffers=() if momentum != 0.0 else state.momentum_buffers)
        buffers = None if momentum == 0.0 else state.momentum_buffers
        _check_in_place(params, buffers)
        # a gradient that is another view of what this step writes is copied first (torch refuses the update)
        grads = [_unaliased(g, p, None if buffers is None else buffers[i])
                 for i, (p, g) in enumerate(zip(params, grads))]
        fused = getattr(torch, "_fused_sgd_", None)
        if fused is not None and self._fused_sgd_takes(params, grads, buffers):
            first = momentum != 0.0 and buffers is None
            if first:
                buffers = tuple(torch.empty_like(p) for p in params)  # the kernel sets buf = g
            with torch.no_grad():
                fused(params, grads, [] if momentum == 0.0 else list(buffers), weight_decay=weight_decay,
                      momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov, maximize=False,
                      is_first_step=first)
            return params, SGDState(step=state.step + 1,
                                    momentum_buffers=state.momentum_buffers if momentum == 0.0 else buffers)
        with torch.no_grad():
            if weight_decay != 0.0:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            if momentum != 0.0:
                # a buffer that is None starts with this step (buf = g), as torch.optim.SGD's does
                old = list(buffers) if buffers is not None else [None] * len(params)
                kept = [i for i, b in enumerate(old) if b is not None]
                if kept:
                    torch._foreach_mul_([old[i] for i in kept], momentum)
                    torch._foreach_add_([old[i] for i in kept], [grads[i] for i in kept], alpha=1.0 - dampening)
                buffers = tuple(torch.clone(g).detach() if b is None else b for g, b in zip(grads, old))
                if nesterov:
                    grads = torch._foreach_add(grads, list(buffers), alpha=momentum)
                else:
                    grads = list(buffers)
            torch._foreach_add_(params, grads, alpha=-lr)
        return params, SGDState(step=state.step + 1,
                                momentum_buffers=state.momentum_buffers if momentum == 0.0 else buffers)


def _meta_message(op: str, what: str) -> str:
    return (f"{op}: {what} is a meta tensor (a shape and dtype with no data): there are no values to compute "
            "with; make it on 'cpu' or 'cuda'")


def _span(t) -> tuple[int, int]:
    """The bytes ``t``'s elements lie within (its strides are never negative)."""
    start = t.data_ptr()
    if t.numel() == 0:
        return start, start
    extent = sum((n - 1) * s for n, s in zip(t.shape, t.stride())) + 1
    return start, start + extent * t.element_size()


def _may_overlap(a, b) -> bool:
    if a.device != b.device:
        return False
    a_start, a_stop = _span(a)
    b_start, b_stop = _span(b)
    return a_start < b_stop and b_start < a_stop


def _check_in_place(params, buffers) -> None:
    """What the update writes: no two elements of a tensor in one place (torch refuses to write such a tensor),
    and each momentum buffer apart from its parameter."""
    for what, tensors in (("parameter", params), ("momentum buffer", buffers or ())):
        for i, t in enumerate(tensors):
            if t is not None and not t.is_contiguous():
                strides = [s * t.element_size() for s in t.stride()]
                if v.has_internal_overlap(tuple(t.shape), strides, t.element_size()):
                    raise v.internal_overlap_error("sgd_step", f"{what} {i}", tuple(t.shape), tuple(t.stride()))
    for i, (p, b) in enumerate(zip(params, buffers or ())):
        if b is not None and _may_overlap(p, b):
            raise ValueError(f"sgd_step: momentum buffer {i} shares memory with parameter {i}; the state's "
                             "buffers must be tensors of their own (from sgd_step, or clones)")


def _unaliased(g, p, buffer):
    """``g``, or a clone where it shares memory with the momentum buffer (scaled before it is read) or with the
    parameter other than as the very same view (each element read before it is written)."""
    if buffer is not None and _may_overlap(g, buffer):
        return g.clone()
    if (p is not g and _may_overlap(g, p)
            and not (p.data_ptr() == g.data_ptr() and p.stride() == g.stride() and p.shape == g.shape)):
        return g.clone()
    return g


def cuda_backend(device: str = "cuda") -> TorchBackend:
    """The ``torch:cuda`` entry point: torch on the current CUDA device (``torch:cuda:N`` picks device N)."""
    return TorchBackend(device if device.startswith("cuda") else f"cuda:{device}")
