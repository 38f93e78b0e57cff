"""The classic worked examples, with their published values."""

from __future__ import annotations

import numpy as np
import pytest

TARGETS = np.array([2, 0, 1])
# The "good" batch of the classic PyTorch CrossEntropyLoss tutorial: each row
# scores its target class highest.
GOOD_BATCH = np.array([[0.1, 0.2, 0.9], [1.1, 0.1, 0.2], [0.2, 2.1, 0.1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_sample(be, dtype):
    loss = be.cross_entropy(be.asarray(np.array([[0.2, 0.1, -0.1]], dtype)), be.asarray(np.array([0])))
    assert float(be.to_numpy(loss)) == pytest.approx(0.9729, abs=5e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_good_batch(be, dtype):
    loss = be.cross_entropy(be.asarray(GOOD_BATCH.astype(dtype)), be.asarray(TARGETS))
    assert float(be.to_numpy(loss)) == pytest.approx(0.4966, abs=5e-5)


def test_hand_computed_gradient(be):
    # softmax([0, ln 3]) = [1/4, 3/4]; target 1: grad = [1/4, 3/4 - 1] / N with N = 1
    z = be.asarray(np.array([[0.0, np.log(3.0)]]))
    grad = be.to_numpy(be.cross_entropy_grad(z, be.asarray(np.array([1]))))
    np.testing.assert_allclose(grad, [[0.25, -0.25]], atol=1e-15)
    loss = float(be.to_numpy(be.cross_entropy(z, be.asarray(np.array([1])))))
    assert loss == pytest.approx(-np.log(0.75), abs=1e-15)
