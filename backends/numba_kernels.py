"""Fused elementwise loops for the NumPy backend, compiled by numba when it is installed.

NumPy runs one pass over memory per ufunc and each pass on one core: the
momentum SGD update takes eight passes and a temporary per parameter, the
softmax four, the cross-entropy gradient a dozen. A compiled loop reads each
input once and writes each output once. numba is the tool for that here,
not numexpr: numexpr writes one output per expression (SGD writes two) and, measured on this project's
2-core machine, ran ``a + b`` on 400k float32 2.4x slower than NumPy and lost
further with a second thread, while these loops run the SGD update 5-9x
faster than NumPy's passes (bench/results/README.md).

Everything here is optional: :func:`kernels` returns ``None`` when numba is not
installed or ``SOFTGRAD_NUMBA=0``, and the backend then runs its pure-NumPy
code. The loops compute in the arrays' own dtype (float32 or float64) in the
order the shared definitions do, and the suite checks each against them.

The loops run on the calling thread and start no threads of their own, so
they leave the user's thread settings (``OMP_NUM_THREADS``, threadpoolctl's
limits) to the BLAS they govern. Splitting them over the cores with numba's
``prange`` was measured and dropped: between two matmuls, OpenBLAS's workers
still spin on the cores for a while, and the loops' own workers (OpenMP or
numba's workqueue) fought them for the cores: on 2 cores the MLP step at batch
64 took 4.0 ms with parallel loops against 2.2 ms with serial ones, and the
SGD update alone 2.6 ms against 0.36 ms.
"""

from __future__ import annotations

import functools
import math
import os
from types import SimpleNamespace
from typing import Any

import numpy as np

#: the dtypes the loops are compiled for; anything else takes the NumPy code
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def enabled() -> bool:
    return os.environ.get("SOFTGRAD_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _compiled() -> SimpleNamespace | None:
    try:
        import numba
    except ImportError:
        return None
    return _build(numba)


def kernels() -> SimpleNamespace | None:
    """The compiled loops, or ``None`` where numba is missing or switched off (``SOFTGRAD_NUMBA=0``)."""
    return _compiled() if enabled() else None


def takes(*arrays: Any) -> bool:
    """Whether the loops take these arrays: C-contiguous NumPy arrays, float32 or float64, one dtype."""
    dtype = arrays[0].dtype
    if dtype not in DTYPES:
        return False
    for a in arrays:  # a plain loop: this runs for every parameter of every step
        if type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous:
            return False
    return True


# ---- the loops ---------------------------------------------------------------------------------------


def _build(numba: Any) -> SimpleNamespace:
    def compile(function):
        # cache=True: compiled once per install and dtype (about a second each), not in every process
        return numba.njit(cache=True, nogil=True)(function)

    def sgd(p, g, m, lr, momentum, dampening, weight_decay, nesterov, use_momentum, first):
        """torch.optim.SGD on flat arrays, in place: g' = g + wd p; m = mu m + (1 - damp) g' (m = g' on the
        first step); step = g' + mu m (Nesterov) or m; p -= lr step."""
        cast = p.dtype.type
        lr, momentum, dampening, weight_decay = cast(lr), cast(momentum), cast(dampening), cast(weight_decay)
        keep = cast(1.0) - dampening
        decay = weight_decay != 0.0
        for i in range(p.size):
            gi = g[i]
            if decay:
                gi = gi + weight_decay * p[i]
            if use_momentum:
                mi = gi if first else momentum * m[i] + keep * gi
                m[i] = mi
                gi = gi + momentum * mi if nesterov else mi
            p[i] = p[i] - lr * gi

    def softmax_rows(z, out):
        """out = softmax(z) along rows; returns the first row whose maximum is not finite (or NaN), else -1."""
        n, c = z.shape
        for i in range(n):
            row_max = z[i, 0]
            nan = row_max != row_max
            for j in range(1, c):
                value = z[i, j]
                nan |= value != value
                if value > row_max:
                    row_max = value
            if nan or not (row_max > -math.inf and row_max < math.inf):
                return i
            total = 0.0
            for j in range(c):
                e = math.exp(z[i, j] - row_max)
                out[i, j] = e
                total += e
            scale = out.dtype.type(1.0 / total)
            for j in range(c):
                out[i, j] *= scale
        return -1

    def cross_entropy_rows(z, labels, grad, loss, scale):
        """Per-row loss lse - (z_t - max) and grad = (softmax - onehot) * scale, in one sweep per row.
        Returns the first row that needs the shared definition's diagnosis (non-finite maximum, NaN, an
        infinite loss), else -1."""
        n, c = z.shape
        for i in range(n):
            row_max = z[i, 0]
            nan = row_max != row_max
            for j in range(1, c):
                value = z[i, j]
                nan |= value != value
                if value > row_max:
                    row_max = value
            if nan or not (row_max > -math.inf and row_max < math.inf):
                return i
            total = 0.0
            for j in range(c):
                e = math.exp(z[i, j] - row_max)
                grad[i, j] = e
                total += e
            t = labels[i]
            value = math.log(total) - (z[i, t] - row_max)
            if not value < math.inf:
                return i
            loss[i] = value
            factor = grad.dtype.type(scale / total)
            for j in range(c):
                grad[i, j] *= factor
            grad[i, t] -= grad.dtype.type(scale)
        return -1

    def relu_backward(h, dh):
        """dh = dh where h > 0, else 0 (in place; flat arrays)."""
        for i in range(h.size):
            if not h[i] > 0:
                dh[i] = 0

    def bias_relu(y, bias):
        """y = max(y + bias, 0) in place, rows of y against bias; NaN stays NaN as in np.maximum."""
        n, c = y.shape
        for i in range(n):
            for j in range(c):
                value = y[i, j] + bias[j]
                y[i, j] = value if (value > 0 or value != value) else 0

    return SimpleNamespace(sgd=compile(sgd), softmax_rows=compile(softmax_rows),
                           cross_entropy_rows=compile(cross_entropy_rows),
                           relu_backward=compile(relu_backward), bias_relu=compile(bias_relu),
                           numba=numba)
