"""``linear_cross_entropy``'s chunk operations in place, for the backends whose arrays are mutable.

The shared definition (:mod:`softgrad.numerics.losses.linear_cross_entropy`) allocates
each intermediate anew: ``exp``, ``softmax``, the one-hot, ``G``: five
``(rows, V)`` arrays a chunk. Here a chunk owns one buffer, reused from chunk
to chunk: the logits are multiplied into it, turned into ``exp(z - max)``
and then into the gradient ``G`` in place, so a chunk's working set is one
``(rows, V)`` array (two with ``softcap``, which keeps ``tanh``), and the
chunk can be that much larger for the same memory budget. The weight
gradient is accumulated without a ``(V, d)`` temporary per chunk.

NumPy and torch share the code (both take ``out=`` and in-place operators);
they differ in the accumulating matmul: NumPy's through a small buffer, a
block of the vocabulary at a time, torch's with ``Tensor.addmm_``. The suite checks both against the shared
definition.
"""

from __future__ import annotations

from typing import Any

from softgrad.numerics.losses.linear_cross_entropy import ChunkOps, Plan


class InPlaceChunkOps(ChunkOps):
    """``ChunkOps`` (its reference: the shared, functional chunk operations) with the logits, their softmax
    and their gradient in one reused buffer, written with ``out=``; the cases it does not fuse go to
    ``ChunkOps.head``. The suite checks it against the shared definition (tests/test_linear_cross_entropy.py)."""

    buffers = 1

    def __init__(self, be: Any, lib: Any) -> None:
        super().__init__(be)
        self.lib = lib  # numpy or torch: exp(out=), tanh(out=), matmul(out=)
        self._buffer = None
        self._tanh = None
        self._transposed = None
        self._block = None  # NumPy's accumulation buffer

    def buffers_for(self, kind, eps, has_weight, softcap):
        if kind != "index" or (eps != 0.0 and has_weight):
            return ChunkOps.buffers  # the shared head's
        return 1 if softcap is None else 2

    def _rows(self, which: str, rows: int, columns: int, like: Any) -> Any:
        """A ``(rows, columns)`` view of this call's buffer ``which``, grown as needed (C-contiguous)."""
        buffer = getattr(self, which)
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != columns or buffer.dtype != like.dtype:
            buffer = self.xp.empty((rows, columns), dtype=like.dtype, device=self.be._device_of(like))
            setattr(self, which, buffer)
        return buffer[:rows]

    def logits(self, xc: Any, w: Any, b: Any) -> Any:
        z = self._rows("_buffer", xc.shape[0], w.shape[0], w)
        self.lib.matmul(xc, w.T, out=z)
        if b is not None:
            z += b
        return z

    def input_grad_store(self, n_rows, d, dtype, device):
        return self.xp.empty((n_rows, d), dtype=dtype, device=device)

    def input_grad(self, store, g, w, start, stop):
        self.lib.matmul(g, w, out=store[start:stop])

    def input_grad_result(self, store, n_rows, d, dtype, device):
        return store

    def head(self, plan: Plan, z: Any, target: Any, row_scale: Any):
        if plan.kind != "index" or (plan.eps != 0.0 and plan.weight is not None):
            # probability targets, and smoothing with class weights (rare; 0 * -inf needs care): shared code
            return super().head(plan, z, target, row_scale)
        xp, lib = self.xp, self.lib
        rows = z.shape[0]
        tanh = None
        if plan.softcap is not None:
            tanh = self._rows("_tanh", rows, z.shape[1], z)
            lib.divide(z, plan.softcap, out=tanh)
            lib.tanh(tanh, out=tanh)
            lib.multiply(tanh, plan.softcap, out=z)
        m = xp.max(z, axis=1)
        finite = xp.isfinite(m)
        m_safe = xp.where(finite, m, xp.zeros_like(m))  # a row with no softmax: the caller names it
        index = xp.arange(rows, device=self.be._device_of(z))
        z_t = z[index, target]
        z_sum = xp.sum(z, axis=1) if plan.eps != 0.0 else None
        z -= m_safe[:, None]
        lib.exp(z, out=z)
        s = xp.sum(z, axis=1)
        lse = m_safe + xp.log(s)
        nll = lse - z_t
        if plan.weight is None:
            w_t = None
            ce = nll
        else:
            w_t = xp.take(plan.weight, target)
            ce = xp.where(w_t != 0, w_t * nll, xp.zeros_like(nll))  # weight 0 on a -inf logit: 0
        mass = (1.0 - plan.eps) * (1.0 if w_t is None else w_t) + (plan.eps / plan.num_classes) * plan.weight_sum
        if plan.eps != 0.0:
            # sum_c (lse - z_c) = V lse - sum_c z_c (no class weight on this path)
            ce = (1.0 - plan.eps) * ce + (plan.eps / plan.num_classes) * (plan.num_classes * lse - z_sum)
        p_factor, q_factor = plan.gradient_factors(mass, lse, row_scale)
        z *= (p_factor / s)[:, None]  # now p_factor * softmax
        onehot = (1.0 - plan.eps) * q_factor
        if w_t is not None:
            onehot = onehot * w_t
        z[index, target] -= onehot
        if plan.eps != 0.0:
            uniform = (plan.eps / plan.num_classes) * q_factor
            z -= uniform[:, None] if not isinstance(uniform, float) else uniform
        if tanh is not None:  # through the cap: G (1 - tanh^2)
            tanh *= tanh
            tanh *= -1.0
            tanh += 1.0
            z *= tanh
        return ce, lse, m, z


class NumPyChunkOps(InPlaceChunkOps):
    #: bytes of the (block, d) product the weight gradient is accumulated through
    BLOCK_BYTES = 8 << 20

    def __init__(self, be: Any) -> None:
        import numpy

        super().__init__(be, numpy)

    def input_grad(self, store, g, w, start, stop):
        # OpenBLAS runs g @ w (inner dimension V) 2-3x slower than the same product transposed,
        # w.T @ g.T, on this project's CPU machine (256 x 32768 x 512: 0.38 s against 0.15 s)
        rows = self._rows("_transposed", w.shape[1], g.shape[0], w)  # (d, rows)
        self.lib.matmul(w.T, g.T, out=rows)
        store[start:stop] = rows.T

    def accumulate(self, dw, db, g, xc):
        # NumPy's matmul cannot add into its output (BLAS beta = 1), and g.T @ xc whole would be a (V, d)
        # temporary per chunk: a block of the vocabulary at a time instead, multiplied into one small
        # buffer and added. (SciPy's gemm has beta, but runs on its own OpenBLAS, whose threads spin
        # against NumPy's: measured here, 4.97 s a call against 3.44 s at N 4096, d 512, V 32768.)
        rows = max(64, self.BLOCK_BYTES // max(1, dw.shape[1] * dw.itemsize))  # d = 0 features: rows of nothing
        block = self._rows("_block", min(dw.shape[0], rows), dw.shape[1], dw)
        for start in range(0, dw.shape[0], block.shape[0]):
            stop = min(dw.shape[0], start + block.shape[0])
            product = block[:stop - start]
            self.lib.matmul(g[:, start:stop].T, xc, out=product)
            dw[start:stop] += product
        if db is not None:
            db += g.sum(axis=0)
        return dw, db


class TorchChunkOps(InPlaceChunkOps):
    def __init__(self, be: Any) -> None:
        super().__init__(be, be.torch)

    def accumulate(self, dw, db, g, xc):
        dw.addmm_(g.T, xc)
        if db is not None:
            db += g.sum(dim=0)
        return dw, db
