"""How a data set turns raw samples into the rows a model takes (:class:`InputScaling`), recorded and read back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


def _floats(value, what: str, length: int | None = None, positive: bool = False) -> tuple[float, ...]:
    """``value`` (a recorded list) as a tuple of finite floats, or a ValueError naming ``what``."""
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{what} {value!r} is not a list of numbers")
    floats = tuple(float(v) for v in value)
    if length is not None and len(floats) != length:
        raise ValueError(f"{what} has {len(floats)} values for {length}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in floats):
        raise ValueError(f"{what} {list(floats)} must be finite{' and > 0' if positive else ''}")
    return floats


@dataclass(frozen=True)
class InputScaling:
    """How a data set turns raw samples into the rows a model trains on, so that new samples are scaled alike.

    A raw row is divided by ``raw_scale`` (``255.0`` for the image sets, whose raw pixels are 0..255;
    ``1.0`` for features), then normalised per channel, ``(x - mean) / std`` (the channel is the
    fastest-varying index of a flattened HWC image; one channel for grey images and features), then
    per feature, ``(x - feature_mean) / feature_std``, where a data set standardises its features
    (diabetes). The arithmetic is the loaders': float32 for pixels, float64 for standardised features,
    so a data set's own raw test rows become exactly its ``x_test``.
    """

    raw_scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None

    @property
    def pixels(self) -> bool:
        """Whether raw values are pixels in ``0..raw_scale`` (the image sets), not features of any range."""
        return self.raw_scale != 1.0

    def apply(self, raw, *, intensities: bool = False) -> np.ndarray:
        """Raw rows ``(N, features)`` as the normalised float32 rows a model takes.

        ``intensities=True``: the rows are already divided by ``raw_scale`` (an image file decoded to 0..1).
        """
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"InputScaling.apply: expected rows (N, features), got shape {raw.shape}")
        precise = self.feature_mean is not None  # diabetes(): float64 statistics applied in float64
        x = raw.astype(np.float64 if precise else np.float32)
        if self.raw_scale != 1.0 and not intensities:
            x = x / x.dtype.type(self.raw_scale)
        channels = len(self.mean)
        if self.mean != (0.0,) * channels or self.std != (1.0,) * channels:
            x = ((x.reshape(len(x), -1, channels) - np.asarray(self.mean, x.dtype))
                 / np.asarray(self.std, x.dtype)).reshape(len(x), -1)
        if precise:
            x = (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_json(self) -> dict:
        return {"raw_scale": self.raw_scale, "mean": list(self.mean), "std": list(self.std),
                "feature_mean": None if self.feature_mean is None else list(self.feature_mean),
                "feature_std": None if self.feature_std is None else list(self.feature_std)}

    @classmethod
    def from_json(cls, value, num_features: int) -> InputScaling:
        """The scaling a checkpoint recorded, checked against the model's ``num_features``; ValueError if malformed."""
        if not isinstance(value, Mapping):
            raise ValueError(f"the input scaling {value!r} is not a mapping")
        raw_scale = _floats([value.get("raw_scale")], "the raw scale", 1, positive=True)[0]
        mean = _floats(value.get("mean"), "the channel means")
        std = _floats(value.get("std"), "the channel stds", len(mean), positive=True)
        if num_features % len(mean):
            raise ValueError(f"{len(mean)} channels do not divide {num_features} features")
        feature_mean = feature_std = None
        if value.get("feature_mean") is not None or value.get("feature_std") is not None:
            feature_mean = _floats(value.get("feature_mean"), "the feature means", num_features)
            feature_std = _floats(value.get("feature_std"), "the feature stds", num_features, positive=True)
        return cls(raw_scale, mean, std, feature_mean, feature_std)
