"""Hypothesis strategies: logits and targets of generated shapes and scales.

Shapes and scales are drawn by Hypothesis (so failures shrink to small
cases); the values come from a seeded NumPy generator, which is far faster
than drawing 256,000 floats one by one.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

SCALES = st.sampled_from([1e-3, 1.0, 10.0, 1e2, 1e3, 1e4]) | st.floats(1e-3, 1e4)


@st.composite
def logits(draw, dtype, max_n=256, max_c=1000, masked=False):
    """An (N, C) float array of the given dtype, standard normal times a scale.

    With ``masked``, some entries are -inf (never a whole row). Integer-valued
    logits (many ties) are drawn too.
    """
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(2, max_c))
    scale = draw(SCALES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()) and scale >= 1.0:
        z = rng.integers(-3, 4, size=(n, c)).astype(np.float64) * scale  # ties
    else:
        z = rng.standard_normal((n, c)) * scale
    z = z.astype(dtype)
    if masked:
        mask = rng.random((n, c)) < draw(st.floats(0.05, 0.6))
        mask[np.arange(n), rng.integers(0, c, n)] = False  # keep one finite entry per row
        z[mask] = -np.inf
    return z, scale


@st.composite
def loss_case(draw, dtype, max_n=256, max_c=1000):
    """Logits, a target (indices or probabilities) and every keyword of cross_entropy."""
    z, scale = draw(logits(dtype, max_n, max_c))
    n, c = z.shape
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kwargs = {
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 1.0)),
    }
    if draw(st.booleans()):
        kwargs["weight"] = rng.uniform(0.1, 2.0, size=c).astype(dtype)
    if draw(st.booleans()):
        target = rng.integers(0, c, size=n)
        if draw(st.booleans()):
            ignore_index = draw(st.sampled_from([-100, -1, 0, c - 1]))
            kwargs["ignore_index"] = ignore_index
            target[rng.random(n) < 0.3] = ignore_index
            if ignore_index in (0, c - 1) and np.all(target == ignore_index):
                target[0] = 1 if ignore_index == 0 else 0
            elif np.all(target == ignore_index):
                target[0] = 0
        label_dtypes = [np.int64, np.int32] + ([np.uint8] if c < 256 and target.min() >= 0 else [])
        target = target.astype(draw(st.sampled_from(label_dtypes)))
    else:
        target = rng.dirichlet(np.ones(c) * draw(st.sampled_from([0.1, 1.0, 10.0])), size=n).astype(dtype)
    return z, target, kwargs, scale


def masked_logits_and_labels(dtype, n: int, c: int, seed: int):
    """(N, C) logits, standard normal times 5, with about 10% of the classes -inf, and labels
    that never point at a masked class: the fused kernels' common case with masking."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 5
    y = rng.integers(0, c, n)
    masked = rng.random((n, c)) < 0.1
    masked[np.arange(n), y] = False
    z[masked] = -np.inf
    return z.astype(dtype), y


@st.composite
def sgd_settings(draw):
    """torch.optim.SGD's hyperparameters: lr, momentum, dampening, nesterov (only where allowed), weight_decay."""
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]) | st.floats(0.0, 0.99))
    nesterov = momentum > 0 and draw(st.booleans())
    return dict(
        lr=draw(st.sampled_from([0.1, 0.01]) | st.floats(1e-4, 1.0)),
        momentum=momentum,
        dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 1.0)),
        nesterov=nesterov,
        weight_decay=draw(st.sampled_from([0.0, 1e-4]) | st.floats(0.0, 0.1)),
    )
