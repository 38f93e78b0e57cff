"""A trained MLP as a network any framework can run: raw input in, the task's output out.

:func:`portable_network` folds what softgrad does around the model into its weights, so an exported
network needs no softgrad code beside it:

- the data set's input scaling (``raw / raw_scale``, per-channel ``(x - mean) / std``, per-feature
  ``(x - feature_mean) / feature_std``: an affine map ``x = raw * scale + shift`` per feature) into the
  first layer: ``W1' = diag(scale) W1``, ``b1' = shift W1 + b1``;
- a regressor's target scale (``y = out * target_std + target_mean``) into the last layer.

The folding is done in float64; the exported network's dtype is the model's. The exporters
(safetensors, ONNX) and the importer (:func:`softgrad.from_torch`) read and write this one description.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from softgrad.datasets import DataRecord, InputScaling
from softgrad.numerics.losses import get_loss
from softgrad.training.models import MLP

#: the head each kind of loss puts on the logits: a softmax over classes, a sigmoid for one binary logit,
#: nothing for a regressor's values
HEADS = ("softmax", "sigmoid", "identity")


@dataclass(frozen=True)
class PortableNetwork:
    """An MLP with its preprocessing folded in, in torch's ``nn.Linear`` layout.

    ``weights[i]`` is ``(out, in)`` and ``biases[i]`` ``(out,)``, float64; between layers the hidden
    ``activation`` (``relu``, ``leaky_relu`` with ``negative_slope``, ``sigmoid``, ``tanh``); after the
    last layer the ``head`` (:data:`HEADS`). ``labels`` names the outputs: the classes for a softmax
    head, ``(negative, positive)`` for a sigmoid head, the target names for a regressor (may be empty).
    ``input_shape`` is the raw sample's shape where it is an image (``(28, 28)``, ``(32, 32, 3)``), else
    ``None``; the network takes it flattened, ``(N, num_features)``. ``dtype`` is the model's
    (``float32`` or ``float64``).
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str
    head: str
    labels: tuple[str, ...]
    input_shape: tuple[int, ...] | None
    dtype: str
    negative_slope: float = 0.01

    @property
    def num_features(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def widths(self) -> list[int]:
        return [self.num_features, *(int(w.shape[0]) for w in self.weights)]

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """The head's output for raw rows ``(N, num_features)``, in float64: a NumPy reference of what the
        exported files compute (probabilities for a classifier, values in the data's units for a regressor)."""
        h = np.asarray(raw, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = _activate(self.activation, h, self.negative_slope)
        if self.head == "softmax":
            e = np.exp(h - h.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if self.head == "sigmoid":
            return 1.0 / (1.0 + np.exp(-h))
        return h


def _activate(name: str, h: np.ndarray, slope: float) -> np.ndarray:
    if name == "relu":
        return np.maximum(h, 0.0)
    if name == "leaky_relu":
        return np.where(h > 0, h, slope * h)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    if name == "tanh":
        return np.tanh(h)
    raise ValueError(f"no portable form for the activation {name!r}")


def input_affine(scaling: InputScaling, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)``, float64 ``(num_features,)``: ``scaling.apply(raw) == raw * scale + shift`` (to rounding)."""
    scale = np.full(num_features, 1.0 / scaling.raw_scale)
    shift = np.zeros(num_features)
    channels = len(scaling.mean)
    mean = np.tile(np.asarray(scaling.mean, dtype=np.float64), num_features // channels)
    std = np.tile(np.asarray(scaling.std, dtype=np.float64), num_features // channels)
    scale, shift = scale / std, (shift - mean) / std
    if scaling.feature_mean is not None:
        feature_mean = np.asarray(scaling.feature_mean, dtype=np.float64)
        feature_std = np.asarray(scaling.feature_std, dtype=np.float64)
        scale, shift = scale / feature_std, (shift - feature_mean) / feature_std
    return scale, shift


def head_of(model) -> str:
    """The head the model's loss puts on its logits (:data:`HEADS`); a model not yet trained is a classifier."""
    targets = get_loss(model.loss or "cross_entropy").targets
    return {"class": "softmax", "binary": "sigmoid"}.get(targets, "identity")


def portable_network(model: MLP, record: DataRecord | None = None) -> PortableNetwork:
    """``model`` with its data's input scaling and, for a regressor, its target scale folded into its weights.

    ``record`` defaults to what the model was trained on (``model.trained_on``, which a checkpoint restores);
    without one the network takes the rows the model takes, and names its outputs by index.
    """
    record = record if record is not None else getattr(model, "trained_on", None)
    be = model.be
    host = [np.asarray(be.to_numpy(p), dtype=np.float64) for p in model.params]
    weights = [w.T.copy() for w in host[0::2]]  # softgrad holds (in, out); torch's Linear holds (out, in)
    biases = [b.copy() for b in host[1::2]]
    if record is not None:
        scale, shift = input_affine(record.scaling, model.widths[0])
        biases[0] = biases[0] + weights[0] @ shift
        weights[0] = weights[0] * scale[None, :]
    head = head_of(model)
    if head == "identity" and model.target_std is not None:
        std = np.asarray(model.target_std, dtype=np.float64).reshape(-1)
        mean = np.asarray(model.target_mean if model.target_mean is not None else 0.0, dtype=np.float64).reshape(-1)
        weights[-1] = weights[-1] * std[:, None]
        biases[-1] = biases[-1] * std + mean
    if record is None:
        labels = tuple(str(i) for i in range(model.widths[-1])) if head == "softmax" else ()
        if head == "sigmoid":
            labels = ("0", "1")
    else:
        labels = record.classes if head != "identity" else record.target_names
    negative_slope = getattr(model.activation, "negative_slope", 0.01)
    return PortableNetwork(tuple(weights), tuple(biases), model.activation_name, head, tuple(labels),
                           None if record is None else record.image_shape, model.dtype.name, negative_slope)


__all__ = ["HEADS", "PortableNetwork", "head_of", "input_affine", "portable_network"]
