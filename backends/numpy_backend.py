"""The NumPy backend: the shared array-API implementation bound to NumPy.

NumPy's arrays are mutable, so this backend overrides what a training step
calls most with in-place versions of the shared code (the suite checks each
against it): the bias add and ReLU, the ReLU backward, the softmax, the
cross-entropy with its gradient and the SGD update. Where numba is installed
(``softgrad[fast]``), each of those is one compiled loop that reads each
input once and writes each output once (:mod:`backends.numba_kernels`); otherwise, or with
``SOFTGRAD_NUMBA=0``, in-place NumPy passes that reuse scratch buffers
instead of allocating every step.
"""

from __future__ import annotations

import functools
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from softgrad.backends import numba_kernels, numpy_conv
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.numerics import conv_args
from softgrad.numerics import validation as v
from softgrad.numerics.losses.support import plain_class_targets
from softgrad.numerics.optim import sgd
from softgrad.numerics.optim.sgd import SGDState

# NumPy dtype kinds an array may hold: bool, signed/unsigned integer, float.
_SUPPORTED_KINDS = "biuf"


def as_host_array(x: Any, dtype: Any, who: str) -> np.ndarray:
    """``x`` as a NumPy array with a supported dtype, or a TypeError that says why not."""
    try:
        array = np.asarray(x, dtype=None if dtype is None else np.dtype(dtype))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{who}.asarray: cannot make an array of {type(x).__name__}: {error}") from None
    if array.dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(
            f"{who}.asarray: dtype {array.dtype} is not supported; use float32 or float64 "
            "for values and an integer dtype for labels"
        )
    return array


class NumPyBackend(ArrayAPIBackend):
    name = "numpy"
    device = "cpu"

    def __init__(self, *, jit: bool | None = None) -> None:
        """``jit=False`` keeps to the pure-NumPy code even where numba is installed (``None``: use it if there)."""
        import array_api_compat.numpy

        self._jit = jit

        self.xp = array_api_compat.numpy
        # NumPy reductions return NumPy scalars (np.float32), which are arrays here too
        self.array_type = (np.ndarray, np.generic)
        # SGD's scratch buffers, one set per thread: every caller shares this backend instance
        self._local = threading.local()

    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        return as_host_array(x, dtype, self.name)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def _device_of(self, x: Any) -> str:
        return "cpu"

    def peak_memory(self, run: Callable[[], object]) -> int | None:
        """Peak bytes NumPy allocated during ``run()``, traced by tracemalloc."""
        already = tracemalloc.is_tracing()
        if not already:
            tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            start = tracemalloc.get_traced_memory()[0]
            run()
            return max(0, tracemalloc.get_traced_memory()[1] - start)
        finally:
            if not already:
                tracemalloc.stop()

    @functools.cached_property
    def kernels(self):
        """The compiled loops (:mod:`backends.numba_kernels`), or None: numba missing, switched off
        (``SOFTGRAD_NUMBA=0`` when the backend is first used), or ``jit=False``."""
        return None if self._jit is False else numba_kernels.kernels()

    # ---- in place, on the fresh arrays the shared code would allocate anew ------------------

    def affine(self, x, weight, bias):
        y = x @ weight
        y += bias  # the product is a fresh array
        return y

    def affine_relu(self, x, weight, bias):
        y = x @ weight  # a fresh array: the bias and the ReLU go into it, in one pass where compiled
        k = self.kernels
        if k is not None and y.ndim == 2 and numba_kernels.takes(y, bias) and bias.shape == (y.shape[1],):
            k.bias_relu(y, bias)
            return y
        y += bias
        return np.maximum(y, 0, out=y)

    def relu_backward(self, h, dh):
        return self.relu_backward_inplace(h, dh.copy())  # the protocol's is functional: dh is left as it is

    def relu_backward_inplace(self, h, dh):
        """The hook: :meth:`ArrayAPIBackend.relu_backward` (its reference) written into ``dh``."""
        k = self.kernels
        if k is not None and h.shape == dh.shape and numba_kernels.takes(h, dh) and dh.flags.writeable:
            k.relu_backward(h.reshape(-1), dh.reshape(-1))
            return dh
        np.copyto(dh, 0, where=~(h > 0))  # a NaN where h <= 0 is 0 too, as in the shared where
        return dh

    def relu_bias_backward(self, h, dh):
        k = self.kernels
        if (k is not None and h.ndim == 2 and h.shape == dh.shape and numba_kernels.takes(h, dh)
                and dh.flags.writeable):
            dbias = np.empty(dh.shape[1], dh.dtype)
            k.relu_bias_backward(h, dh, dbias)  # the bias gradient summed in the same pass
            return dh, dbias
        dz = self.relu_backward_inplace(h, dh)
        return dz, dz.sum(axis=0)

    def softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("softmax", z, axis)
        k = self.kernels
        if k is not None and z.ndim == 2 and axis == 1 and numba_kernels.takes(z):
            out = np.empty_like(z)
            if k.softmax_rows(z, out) < 0:
                return out
            # else a row with no softmax: the checked path below names it
        e = np.subtract(z, self._checked_max("softmax", z, axis))
        np.exp(e, out=e)
        e /= e.sum(axis=axis, keepdims=True)
        return e

    # ---- cross-entropy: one compiled sweep per row for class-index targets --------------------

    def fused_cross_entropy(self, op, logits, target, options):
        """The compiled loss and gradient of the plain case (:func:`plain_class_targets`); None where the
        shared definition must run (other options, or something to diagnose, which it names). Reference:
        ``softgrad.numerics.losses.cross_entropy.cross_entropy`` (the kernel: ``numba_kernels.cross_entropy_rows``)."""
        k = self.kernels
        plain = None if k is None else plain_class_targets(self, op, logits, target, options)
        if plain is None or not numba_kernels.takes(logits):
            return None
        labels, reduction = plain
        n = logits.shape[0]
        grad = np.empty_like(logits)
        per_sample = np.empty(n, dtype=logits.dtype)
        scale = 1.0 / n if reduction == "mean" else 1.0
        if k.cross_entropy_rows(logits, np.ascontiguousarray(labels), grad, per_sample, scale) >= 0:
            return None
        if reduction == "none":
            return per_sample, grad
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is diagnosed by the shared path
            total = per_sample.sum(dtype=logits.dtype)
        if not np.isfinite(total):
            return None  # the summed loss overflows: the shared definition says so
        return (total / logits.dtype.type(n) if reduction == "mean" else total), grad

    # ---- convolution and pooling: strided views, one BLAS GEMM, col2im in place (backends.numpy_conv); the
    # forward of average pooling is the array-API default (measured: no faster here) --------------------------

    def conv2d(self, x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
        conv_args.check_arrays(self, "conv2d", x=x, weight=weight, bias=bias)
        return numpy_conv.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups)

    def conv2d_backward(self, x, weight, dy, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                        need_bias=True):
        conv_args.check_arrays(self, "conv2d_backward", x=x, weight=weight, dy=dy)
        return numpy_conv.conv2d_backward(x, weight, dy, stride=stride, padding=padding, dilation=dilation,
                                          groups=groups, need_dx=need_dx, need_bias=need_bias)

    def max_pool2d(self, x, kernel_size, stride=None, padding=0):
        conv_args.check_arrays(self, "max_pool2d", x=x)
        return numpy_conv.max_pool2d(x, kernel_size, stride, padding)

    def max_pool2d_backward(self, x, dy, kernel_size, stride=None, padding=0):
        conv_args.check_arrays(self, "max_pool2d_backward", x=x, dy=dy)
        return numpy_conv.max_pool2d_backward(x, dy, kernel_size, stride, padding)

    def avg_pool2d_backward(self, x_shape, dy, kernel_size, stride=None, padding=0):
        conv_args.check_arrays(self, "avg_pool2d_backward", dy=dy)
        return numpy_conv.avg_pool2d_backward(x_shape, dy, kernel_size, stride, padding)

    def chunk_ops(self):
        from softgrad.backends.inplace_linear_ce import NumPyChunkOps

        return NumPyChunkOps(self)

    # ---- SGD without temporaries --------------------------------------------------------

    def _scratch(self, shape: tuple, dtype, which: int) -> np.ndarray:
        """A reusable buffer of this thread: SGD's temporaries would otherwise be fresh allocations every step."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (shape, dtype.str, which)
        buffer = buffers.get(key)
        if buffer is None:
            buffer = buffers[key] = np.empty(shape, dtype)
        return buffer

    def sgd_step(self, params, grads, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        params, grads, hyper = sgd.checked_call(self, params, grads, state, lr=lr, momentum=momentum,
                                                dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        lr, momentum, dampening, weight_decay = hyper.lr, hyper.momentum, hyper.dampening, hyper.weight_decay
        if any(isinstance(p, np.generic) for p in params):
            # a NumPy scalar cannot be updated in place: the shared step returns its new value
            return sgd.step(self, params, grads, state, lr=lr, momentum=momentum, dampening=dampening,
                            nesterov=nesterov, weight_decay=weight_decay)
        _check_writable(params, state.momentum_buffers if momentum != 0.0 else None)  # before anything is written
        params = list(params)
        buffers = None if momentum == 0.0 else list(state.momentum_buffers or [None] * len(params))
        k = self.kernels
        for i, (p, g) in enumerate(zip(params, grads)):
            # a gradient that is another view of the memory this step writes (the parameter, its buffer) is
            # copied first: the update would otherwise read values it has already written
            g = _unaliased(g, p, None if buffers is None else buffers[i])
            if k is not None and numba_kernels.takes(p, g) and (buffers is None or buffers[i] is None
                                                               or numba_kernels.takes(buffers[i])):
                # one compiled pass: reads p, g and the buffer once, writes p and the buffer once
                first = buffers is not None and buffers[i] is None
                if first:
                    buffers[i] = np.empty_like(p)
                m = p if buffers is None else buffers[i]
                k.sgd(p.reshape(-1), g.reshape(-1), m.reshape(-1), (lr, momentum, dampening, weight_decay),
                      (hyper.nesterov, buffers is not None, first))
                continue
            work = self._scratch(p.shape, p.dtype, 0)
            if weight_decay != 0.0:
                np.multiply(p, weight_decay, out=work)
                work += g
                g = work  # the caller's gradient is never modified
            step = g
            if buffers is not None:
                if buffers[i] is None:
                    buffers[i] = g.copy()
                else:
                    buffers[i] *= momentum
                    if dampening == 0.0:
                        buffers[i] += g
                    else:
                        buffers[i] += np.multiply(g, 1.0 - dampening, out=self._scratch(p.shape, p.dtype, 1))
                if nesterov:
                    step = np.multiply(buffers[i], momentum, out=self._scratch(p.shape, p.dtype, 1))
                    step += g
                else:
                    step = buffers[i]
            update = np.multiply(step, lr, out=self._scratch(p.shape, p.dtype, 1))
            p -= update
        new_buffers = state.momentum_buffers if buffers is None else tuple(buffers)
        return params, SGDState(step=state.step + 1, momentum_buffers=new_buffers)


def _check_writable(params, buffers) -> None:
    """What the in-place update writes must be writable, with no two elements in one place, and each momentum
    buffer apart from its parameter."""
    for what, arrays in (("parameter", params), ("momentum buffer", buffers or ())):
        for i, array in enumerate(arrays):
            if array is None:
                continue
            if not array.flags.writeable:
                raise ValueError(f"sgd_step: {what} {i} is read-only (a memory-mapped or frozen array?); "
                                 "the NumPy backend updates parameters in place: pass a writable copy "
                                 "(np.array(p))")
            if (not array.flags.c_contiguous and not array.flags.f_contiguous
                    and v.has_internal_overlap(array.shape, array.strides, array.itemsize)):
                raise v.internal_overlap_error("sgd_step", f"{what} {i}", array.shape, array.strides)
    for i, (p, b) in enumerate(zip(params, buffers or ())):
        if b is not None and np.may_share_memory(p, b):
            raise ValueError(f"sgd_step: momentum buffer {i} shares memory with parameter {i}; the state's "
                             "buffers must be arrays of their own (from sgd_step, or copies)")


def _unaliased(g: np.ndarray, p: np.ndarray, buffer: np.ndarray | None) -> np.ndarray:
    """``g``, or a copy of it where it shares memory with the parameter (other than as the very same view, which
    is safe: each element is read before it is written) or with the momentum buffer (scaled before it is read)."""
    if buffer is not None and np.may_share_memory(g, buffer):
        return g.copy()
    if (p is not g and np.may_share_memory(g, p)
            and not (p.shape == g.shape and p.strides == g.strides
                     and p.__array_interface__["data"][0] == g.__array_interface__["data"][0])):
        return g.copy()
    return g
