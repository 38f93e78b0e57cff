"""The classic worked examples, with their published values."""

from __future__ import annotations

import numpy as np
import pytest

TARGETS = np.array([2, 0, 1])
# The "good" batch of the classic PyTorch CrossEntropyLoss tutorial: each row
# scores its target class highest.
GOOD_BATCH = np.array([[0.1, 0.2, 0.9], [1.1, 0.1, 0.2], [0.2, 2.1, 0.1]])
# Its second batch: every row scores the wrong class highest (or ties), so the loss is high.
BAD_BATCH = np.array([[0.8, 0.2, 0.3], [0.2, 0.3, 0.5], [0.2, 0.2, 0.5]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_sample(be, dtype):
    loss = be.cross_entropy(be.asarray(np.array([[0.2, 0.1, -0.1]], dtype)), be.asarray(np.array([0])))
    assert float(be.to_numpy(loss)) == pytest.approx(0.9729, abs=5e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_good_batch(be, dtype):
    loss = be.cross_entropy(be.asarray(GOOD_BATCH.astype(dtype)), be.asarray(TARGETS))
    assert float(be.to_numpy(loss)) == pytest.approx(0.4966, abs=5e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_batch(be, dtype):
    loss = be.cross_entropy(be.asarray(BAD_BATCH.astype(dtype)), be.asarray(TARGETS))
    assert float(be.to_numpy(loss)) == pytest.approx(1.2389, abs=5e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_and_binary_by_hand(be, dtype):
    """Values worked out on paper: MSE of residuals (0, 1, 2) is 5/3, L1 is 1; a logit of 0 costs log 2
    whatever the target, and ln 3 against target 1 costs log(4/3) with gradient 3/4 - 1."""
    x, y = be.asarray(np.array([1.0, 2.0, 3.0], dtype)), be.asarray(np.array([1.0, 1.0, 1.0], dtype))
    assert float(be.to_numpy(be.mse_loss(x, y))) == pytest.approx(5 / 3, rel=1e-6)
    assert float(be.to_numpy(be.l1_loss(x, y))) == pytest.approx(1.0, rel=1e-6)
    # huber with delta 1: 0, 0.5 (at the boundary: the linear piece, 1 * (1 - 0.5)), 1.5; mean 2/3
    assert float(be.to_numpy(be.huber_loss(x, y))) == pytest.approx(2 / 3, rel=1e-6)
    z = be.asarray(np.array([0.0, 0.0, np.log(3.0)], dtype))
    t = be.asarray(np.array([0.0, 1.0, 1.0], dtype))
    losses = be.to_numpy(be.binary_cross_entropy_with_logits(z, t, reduction="none"))
    np.testing.assert_allclose(losses, [np.log(2), np.log(2), np.log(4 / 3)], rtol=1e-6)
    grad = be.to_numpy(be.binary_cross_entropy_with_logits_grad(z, t, reduction="sum"))
    np.testing.assert_allclose(grad, [0.5, -0.5, -0.25], rtol=1e-6)


def test_hand_computed_gradient(be):
    # softmax([0, ln 3]) = [1/4, 3/4]; target 1: grad = [1/4, 3/4 - 1] / N with N = 1
    z = be.asarray(np.array([[0.0, np.log(3.0)]]))
    grad = be.to_numpy(be.cross_entropy_grad(z, be.asarray(np.array([1]))))
    np.testing.assert_allclose(grad, [[0.25, -0.25]], atol=1e-15)
    loss = float(be.to_numpy(be.cross_entropy(z, be.asarray(np.array([1])))))
    assert loss == pytest.approx(-np.log(0.75), abs=1e-15)
