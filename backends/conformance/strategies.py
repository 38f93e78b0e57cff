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


LEARNING_RATES = st.sampled_from([1e-3, 1e-2, 0.1]) | st.floats(1e-4, 1.0)
# eps = 0 is allowed by torch and changes nothing as long as no second moment is exactly 0 (the gradients
# drawn are never exactly 0); eps = 1 makes its placement (after the bias correction, outside the root) visible
EPSILONS = st.sampled_from([0.0, 1e-10, 1e-8, 1e-6, 1e-3, 1.0])
WEIGHT_DECAYS = st.sampled_from([0.0, 1e-4, 0.01]) | st.floats(0.0, 0.1)


@st.composite
def adam_settings(draw, decoupled_weight_decay=None):
    """torch.optim.Adam's hyperparameters (AdamW's with ``decoupled_weight_decay=True``): lr, betas (from 0 to
    near 1), eps, weight_decay, amsgrad, maximize, decoupled_weight_decay (drawn unless given)."""
    if decoupled_weight_decay is None:
        decoupled_weight_decay = draw(st.booleans())
    return dict(
        lr=draw(LEARNING_RATES),
        betas=(draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]) | st.floats(0.0, 0.999)),
               draw(st.sampled_from([0.0, 0.9, 0.99, 0.999]) | st.floats(0.0, 0.9999))),
        eps=draw(EPSILONS),
        weight_decay=draw(WEIGHT_DECAYS),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
        decoupled_weight_decay=decoupled_weight_decay,
    )


@st.composite
def rmsprop_settings(draw):
    """torch.optim.RMSprop's hyperparameters: lr, alpha, eps, weight_decay, momentum, centered, maximize.

    Centered, alpha stays >= 0.5: ``sqrt(v - a^2)`` then loses about ``log10(1 / alpha)``
    digits to cancellation (at step 1, ``v - a^2 = alpha (1 - alpha) g^2`` against
    ``v = (1 - alpha) g^2``), which turns torch's fused multiply-adds (one rounding
    where NumPy has two) into differences far above the float64 tolerance for a
    small alpha, a setting no one trains with.
    """
    centered = draw(st.booleans())
    alphas = st.sampled_from([0.5, 0.9, 0.99]) | st.floats(0.5, 0.999) if centered else (
        st.sampled_from([0.0, 0.5, 0.9, 0.99]) | st.floats(0.0, 0.999))
    return dict(
        lr=draw(LEARNING_RATES),
        alpha=draw(alphas),
        eps=draw(EPSILONS),
        weight_decay=draw(WEIGHT_DECAYS),
        momentum=draw(st.sampled_from([0.0, 0.9]) | st.floats(0.0, 0.99)),
        centered=centered,
        maximize=draw(st.booleans()),
    )


@st.composite
def adagrad_settings(draw):
    """torch.optim.Adagrad's hyperparameters: lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize."""
    return dict(
        lr=draw(LEARNING_RATES),
        lr_decay=draw(st.sampled_from([0.0, 0.01]) | st.floats(0.0, 1.0)),
        weight_decay=draw(WEIGHT_DECAYS),
        initial_accumulator_value=draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 10.0)),
        eps=draw(EPSILONS),
        maximize=draw(st.booleans()),
    )


GRADIENT_SCALES = (1e-3, 1.0, 1e3)


@st.composite
def with_gradient_scale(draw, settings_strategy):
    """``(settings, grad_scale)``: optimizer settings and a scale for standard normal gradients.

    Weight decay added to the gradient feeds a parameter's error back through
    an adaptive (normalised) update with a gain of about
    ``lr * weight_decay / |g|``; above 2 the trajectory is chaotic, so that
    rounding differences grow geometrically in any precision (torch's float32
    and float64 runs part too). The scales drawn keep that gain below 0.1:
    ``lr * weight_decay <= 0.1 * grad_scale`` unless the decay is decoupled.
    """
    settings = draw(settings_strategy)
    coupled = 0.0 if settings.get("decoupled_weight_decay") else settings["lr"] * settings.get("weight_decay", 0.0)
    return settings, draw(st.sampled_from([s for s in GRADIENT_SCALES if coupled <= 0.1 * s]))
