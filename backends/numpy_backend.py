"""The NumPy backend: the shared array-API implementation bound to NumPy.

NumPy's arrays are mutable, so this backend overrides what a training step
calls most with in-place versions of the shared code (the suite checks each
against it): the bias add, the ReLU backward, the softmax's division and the
SGD update, which reuses scratch buffers instead of allocating every step.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from backends.array_api import ArrayAPIBackend
from core.base.optim import sgd
from core.base.optim.sgd import SGDState

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

    def __init__(self) -> None:
        import array_api_compat.numpy

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

    # ---- in place, on the fresh arrays the shared code would allocate anew ------------------

    def affine(self, x, weight, bias):
        y = x @ weight
        y += bias  # the product is a fresh array
        return y

    def relu_backward(self, h, dh):
        dh *= h > 0  # the protocol lets this overwrite dh
        return dh

    def softmax(self, z, axis: int = -1):
        axis = self._prepare_softmax_input("softmax", z, axis)
        e = np.subtract(z, self._checked_max("softmax", z, axis))
        np.exp(e, out=e)
        e /= e.sum(axis=axis, keepdims=True)
        return e

    def _linear_ce_ops(self):
        from backends.inplace_linear_ce import NumPyChunkOps

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
        lr, momentum, dampening, weight_decay = sgd.check_step(self, params, grads, state, lr, momentum,
                                                               dampening, nesterov, weight_decay)
        if any(isinstance(p, np.generic) for p in params):
            # a NumPy scalar cannot be updated in place: the shared step returns its new value
            return sgd.step(self, params, grads, state, lr=lr, momentum=momentum, dampening=dampening,
                            nesterov=nesterov, weight_decay=weight_decay)
        _check_writable(params, state.momentum_buffers)  # before anything is written
        params = list(params)
        buffers = None if momentum == 0.0 else list(state.momentum_buffers or [None] * len(params))
        for i, (p, g) in enumerate(zip(params, grads)):
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
    for what, arrays in (("parameter", params), ("momentum buffer", buffers or ())):
        for i, array in enumerate(arrays):
            if array is not None and not array.flags.writeable:
                raise ValueError(f"sgd_step: {what} {i} is read-only (a memory-mapped or frozen array?); "
                                 "the NumPy backend updates parameters in place: pass a writable copy "
                                 "(np.array(p))")
