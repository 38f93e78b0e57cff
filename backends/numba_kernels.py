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

#: the loops' fast-math flags: "reassoc" lets row sums and maxima run in vector lanes; none of them
#: assumes away NaN or inf, which the loops test for
FASTMATH = frozenset({"reassoc", "nsz", "contract"})
#: the dtypes the loops are compiled for; anything else takes the NumPy code
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def enabled() -> bool:
    return os.environ.get("SOFTGRAD_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _compiled() -> SimpleNamespace | None:
    try:
        import numba

        return _build(numba)
    except Exception:  # numba missing, or a release this code cannot build on: the NumPy code runs instead
        return None


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
        # cache=True: compiled once per install and dtype (about a second each), not in every process;
        # "reassoc" lets the row sums and maxima run in vector lanes (NaN and inf keep their meaning)
        return numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH))(function)

    softmax_rows, cross_entropy_rows = _row_loops(compile, _exp_shifted(numba))
    return SimpleNamespace(sgd=compile(_sgd), softmax_rows=softmax_rows, cross_entropy_rows=cross_entropy_rows,
                           relu_backward=compile(_relu_backward), relu_bias_backward=compile(_relu_bias_backward),
                           bias_relu=compile(_bias_relu), numba=numba)


def _row_helpers(compile: Any, exp_shifted: Any) -> tuple[Any, Any]:
    """``(finite_row_max, exp_row)`` compiled: the steps the row sweeps share (a compiled loop calls only
    compiled functions, so these are built at run time, where numba is there, not at the module's top)."""

    @compile
    def finite_row_max(z, i):
        """The maximum of row i of z, or NaN where the row holds NaN or its maximum is not finite (a row
        the shared definition must diagnose)."""
        row_max = z[i, 0]
        nan = row_max != row_max
        for j in range(1, z.shape[1]):
            value = z[i, j]
            nan |= value != value
            if value > row_max:
                row_max = value
        if nan or not (row_max > -math.inf and row_max < math.inf):
            return z.dtype.type(math.nan)
        return row_max

    @compile
    def exp_row(z, i, row_max, out):
        """out[i, :] = exp(z[i, :] - row_max); returns their sum (softmax's and cross-entropy's sweep)."""
        total = z.dtype.type(0.0)
        for j in range(z.shape[1]):
            e = exp_shifted(z[i, j] - row_max)
            out[i, j] = e
            total += e
        return total

    return finite_row_max, exp_row


def _row_loops(compile: Any, exp_shifted: Any) -> tuple[Any, Any]:
    """``(softmax_rows, cross_entropy_rows)`` compiled: the two row sweeps, on :func:`_row_helpers`."""
    finite_row_max, exp_row = _row_helpers(compile, exp_shifted)

    @compile
    def softmax_rows(z, out):
        """out = softmax(z) along rows; returns the first row whose maximum is not finite (or NaN), else -1.
        Reference: ArrayAPIBackend.softmax."""
        n, c = z.shape
        for i in range(n):
            row_max = finite_row_max(z, i)
            if row_max != row_max:
                return i
            total = exp_row(z, i, row_max, out)
            scale = out.dtype.type(1.0) / total
            for j in range(c):
                out[i, j] *= scale
        return -1

    @compile
    def cross_entropy_rows(z, labels, grad, loss, scale):
        """Per-row loss lse - (z_t - max) and grad = (softmax - onehot) * scale, in one sweep per row.
        Returns the first row that needs the shared definition's diagnosis (non-finite maximum, NaN, an
        infinite loss), else -1. Reference: softgrad.numerics.losses.softmax_cross_entropy.index_rows."""
        n, c = z.shape
        for i in range(n):
            row_max = finite_row_max(z, i)
            if row_max != row_max:
                return i
            total = exp_row(z, i, row_max, grad)
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

    return softmax_rows, cross_entropy_rows


# The loops below call nothing compiled, so they are plain functions here and :func:`_build` compiles them.


def _sgd(p, g, m, rates, flags):
    """torch.optim.SGD on flat arrays, in place: g' = g + wd p; m = mu m + (1 - damp) g' (m = g' on the
    first step); step = g' + mu m (Nesterov) or m; p -= lr step. ``rates`` is ``(lr, momentum, dampening,
    weight_decay)`` as floats, ``flags`` ``(nesterov, use_momentum, first)`` as bools: tuples, so that one
    compiled signature takes every setting. Reference: softgrad.numerics.optim.sgd.update_one
    (tests/test_shared_definitions_and_overrides.py, test_sgd_step_agrees_with_the_shared_definition)."""
    cast = p.dtype.type
    lr, momentum, dampening, weight_decay = cast(rates[0]), cast(rates[1]), cast(rates[2]), cast(rates[3])
    nesterov, use_momentum, first = flags
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


def _relu_backward(h, dh):
    """dh = dh where h > 0, else 0 (in place; flat arrays). Reference: ArrayAPIBackend.relu_backward."""
    zero = dh.dtype.type(0)
    for i in range(h.size):
        # a select, not a conditional store: LLVM vectorises it (the store was 2-3x slower)
        dh[i] = dh[i] if h[i] > 0 else zero


def _relu_bias_backward(h, dh, dbias):
    """dh = dh where h > 0, else 0 (in place), and dbias = its column sums: the ReLU's backward and
    the bias gradient of the layer before it in one pass; rows added in order, as NumPy's sum(axis=0)
    adds them when there is more than one column (a single column it sums pairwise). Reference:
    BackendDefaults.relu_bias_backward (relu_backward, then sum)."""
    n, c = dh.shape
    zero = dh.dtype.type(0)
    for j in range(c):
        dbias[j] = zero
    for i in range(n):
        for j in range(c):
            value = dh[i, j] if h[i, j] > 0 else zero
            dh[i, j] = value
            dbias[j] += value


def _bias_relu(y, bias):
    """y = max(y + bias, 0) in place, rows of y against bias; NaN stays NaN as in np.maximum. Reference:
    BackendDefaults.affine_relu."""
    n, c = y.shape
    for i in range(n):
        for j in range(c):
            value = y[i, j] + bias[j]
            y[i, j] = value if (value > 0 or value != value) else 0


def _exp_shifted(numba: Any) -> Any:
    """``exp(x)`` for ``x <= 0`` (a logit minus its row's maximum), inlined into the loops.

    float64 calls the C library's ``exp``. float32 evaluates Cephes' ``expf``
    (Cody-Waite reduction by ln 2, a degree-6 polynomial, then the power of two
    as a product of constants picked by the exponent's bits): arithmetic and
    selects only, which the compiler runs 8 lanes at a time, where a call to
    ``expf`` per element was the loops' bottleneck (61 ms against 9.5 ms for the
    cross-entropy of 8192 x 1000 logits here). Its largest relative error on
    [-87, 0], inside a loop compiled with the loops' flags, is 8.0e-8, below NumPy's
    own float32 ``exp`` (2.0e-7; the suite checks it); below -87.3,
    where the result would be a float32 subnormal (< 1.3e-38), it returns 0.
    """
    from numba.core import types
    from numba.extending import overload

    def exp_shifted(x):  # the Python stand-in; numba compiles the overload below
        return math.exp(x)

    f32 = np.float32

    def expf(x):
        k = np.floor(x * f32(1.44269504088896341) + f32(0.5))
        # Cody-Waite's two steps, kept apart: this function is compiled without fast-math (jit_options
        # below), so the loops' "reassoc" cannot merge them (that lost up to 4e-6); LLVM still inlines it
        r = x - k * f32(0.693359375) - k * f32(-2.12194440e-4)
        p = ((((f32(1.9875691500e-4) * r + f32(1.3981999507e-3)) * r + f32(8.3334519073e-3)) * r
              + f32(4.1665795894e-2)) * r + f32(1.6666665459e-1)) * r + f32(5.0000001201e-1)
        p = p * (r * r) + r + f32(1.0)
        n = np.int32(-k)
        s = f32(1.0)
        s *= f32(0.5) if n & 1 else f32(1.0)
        s *= f32(0.25) if n & 2 else f32(1.0)
        s *= f32(0.0625) if n & 4 else f32(1.0)
        s *= f32(0.00390625) if n & 8 else f32(1.0)
        s *= f32(1.52587890625e-05) if n & 16 else f32(1.0)
        s *= f32(2.3283064365386963e-10) if n & 32 else f32(1.0)
        s *= f32(5.421010862427522e-20) if n & 64 else f32(1.0)
        return p * s if x > f32(-87.3) else f32(0.0)

    def exp64(x):
        return math.exp(x)

    @overload(exp_shifted, jit_options={"fastmath": False})
    def _typed(x):
        return expf if isinstance(x, types.Float) and x.bitwidth == 32 else exp64

    return exp_shifted
