"""The CNN row's matmul ceiling: the GEMMs one im2col LeNet training step needs, timed alone.

A convolution written as im2col turns each layer into three GEMMs, here in the orientation the NumPy
backend multiplies them (``backends/numpy_conv.py``): forward ``W (O, C*k*k) @ cols (C*k*k, N*Ho*Wo)``,
weight gradient ``dy (O, N*Ho*Wo) @ cols^T`` and input gradient ``W^T @ dy`` (then col2im; none for the
first layer, whose input needs no gradient). The dense layers add
the MLP's three products each (:mod:`bench.ceiling`). Timing exactly these products with the backend's
``be.matmul``, on its own arrays, says what the step would cost if the im2col copies, pooling, activations,
loss and optimizer cost nothing: the step's samples/s over this ceiling's is the GEMMs' share of its time,
and the GEMMs' GFLOP/s over the 2048x2048 matmul rate (:mod:`bench.roofline`) says how well BLAS runs
these skinny shapes.
"""

from __future__ import annotations

import numpy as np
from softgrad.bench.timing import ready, time_call

#: LeNet (conv(6,5,padding=2) relu maxpool(2) conv(16,5) relu maxpool(2) dense(120) relu dense(84) relu
#: dense(10)) on 1x28x28: (in channels, out channels, kernel, output side) per conv, then the dense widths
LENET_CONVS = ((1, 6, 5, 28), (6, 16, 5, 10))
LENET_DENSE = (400, 120, 84, 10)


def step_products(batch_size: int, convs=LENET_CONVS, dense=LENET_DENSE) -> list[tuple[str, tuple, tuple, str]]:
    """``(what, a shape, b shape, transpose)`` of every GEMM of one step, ``transpose`` naming the operand
    passed as a transposed view (``"a^T"``, ``"b^T"`` or ``""``), as :func:`bench.ceiling.step_products`."""
    products = []
    for i, (c, o, k, side) in enumerate(convs):
        # the NumPy backend's orientation (backends/numpy_conv.py): columns (C*k*k, N*Ho*Wo), dy (O, N*Ho*Wo)
        rows, depth = batch_size * side * side, c * k * k
        products.append((f"conv {i + 1} forward: W cols", (o, depth), (depth, rows), ""))
        products.append((f"conv {i + 1} weight grad: dy cols^T", (o, rows), (depth, rows), "b^T"))
        if i > 0:
            products.append((f"conv {i + 1} input grad: W^T dy", (o, depth), (o, rows), "a^T"))
    for i, (fan_in, fan_out) in enumerate(zip(dense, dense[1:])):
        products.append((f"dense {i + 1} forward: x W", (batch_size, fan_in), (fan_in, fan_out), ""))
        products.append((f"dense {i + 1} weight grad: x^T dy", (batch_size, fan_in), (batch_size, fan_out), "a^T"))
        products.append((f"dense {i + 1} input grad: dy W^T", (batch_size, fan_out), (fan_in, fan_out), "b^T"))
    return products


def product_flops(products) -> float:
    """2 * m * k * n of each product, with the operands as the transposes leave them."""
    total = 0.0
    for _, a, b, transpose in products:
        (m, k) = a[::-1] if transpose == "a^T" else a
        n = b[0] if transpose == "b^T" else b[1]
        total += 2.0 * m * k * n
    return total


def measure(backend_name: str, batch_size: int, *, repeats: int = 3, min_block_s: float = 0.1) -> dict:
    """The step's GEMMs on ``backend_name``: median seconds per step, samples/s and GFLOP/s."""
    from softgrad.numerics.registry import get_backend

    be = get_backend(backend_name)
    rng = np.random.default_rng(0)
    products = step_products(batch_size)
    arrays = [(be.asarray(rng.standard_normal(a, dtype=np.float32)),
               be.asarray(rng.standard_normal(b, dtype=np.float32)), t) for _, a, b, t in products]

    def step() -> None:
        out = None
        for a, b, transpose in arrays:
            out = be.matmul(a.T, b) if transpose == "a^T" else be.matmul(a, b.T) if transpose == "b^T" else \
                be.matmul(a, b)
        ready(out)

    timing = time_call(step, be.synchronize, repeats=repeats, min_block_s=min_block_s)
    flops = product_flops(products)
    return {"backend": backend_name, "batch_size": batch_size, "seconds_per_step": timing.median_s,
            "samples_per_s": batch_size / timing.median_s, "gflops": flops / timing.median_s / 1e9,
            "flops_per_sample": flops / batch_size, "products": len(products)}
