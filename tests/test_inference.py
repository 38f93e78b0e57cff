"""predict and evaluate (softgrad.training.inference) on images, single samples and views, and the error that
names any other shape."""

from __future__ import annotations

import numpy as np
import pytest


def test_predict_takes_images_and_single_samples_and_names_other_shapes(be):
    from softgrad.training import MLP, evaluate, predict

    model = MLP([784, 10], seed=0, backend=be)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 784)).astype(np.float32)
    expected = predict(model, rows)
    np.testing.assert_array_equal(predict(model, rows.reshape(5, 28, 28)), expected)
    np.testing.assert_array_equal(predict(model, rows[0]), expected[:1])
    np.testing.assert_array_equal(predict(model, rows[0].reshape(28, 28)), expected[:1])
    np.testing.assert_array_equal(predict(model, rows[::-1]), expected[::-1])  # a reversed view
    assert evaluate(model, rows.reshape(5, 28, 28), expected)["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"the model takes rows of 784 features, \(N, 784\); got an array of shape "
                                         r"\(5, 27, 27\)"):
        predict(model, rows[:, :729].reshape(5, 27, 27))
