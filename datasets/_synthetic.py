"""Seeded Gaussian blobs: a classification set of any size, dimension and class count."""

from __future__ import annotations

import numpy as np
from softgrad.datasets._dataset import Dataset


def synthetic(n_train: int = 10_000, n_test: int = 2_000, num_features: int = 784, num_classes: int = 10,
              seed: int = 0, separation: float = 3.0) -> Dataset:
    """A seeded Gaussian-blob data set of any size, dimension and class count.

    Each class is a unit-variance Gaussian around a random centre of norm
    ``separation``; the features are float32 and roughly standardised.
    """
    if min(n_train, n_test, num_features) < 1 or num_classes < 2:
        raise ValueError("synthetic: n_train, n_test, num_features must be >= 1 and num_classes >= 2")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, num_features))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(n):
        labels = rng.integers(0, num_classes, n)
        x = centres[labels] + rng.standard_normal((n, num_features))
        return x.astype(np.float32), labels.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test,
                   tuple(f"class {i}" for i in range(num_classes)),
                   f"synthetic blobs (seed {seed}, {n_train:,}+{n_test:,} samples, {num_features} features)")
