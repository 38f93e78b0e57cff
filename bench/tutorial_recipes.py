"""The three tutorial runs: network, data, hyperparameters, initial weights, and the figure each tutorial published.

Both sides of a run start from the same weights, drawn here on the host from ``np.random.default_rng(seed)``
in each layer's order (weight, then bias): torch's default distribution for ``nn.Conv2d``/``nn.Linear``
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases) for the two CNNs, and d2l's for softmax
regression (W ~ N(0, 0.01), b = 0). Both sides also visit the batches in the same order: epoch ``e``
shuffles with ``np.random.default_rng([seed, e]).permutation(n)``, as ``softgrad.fit`` does, and keeps the
last, shorter batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from softgrad.training.convnet import NAMED

# the networks softgrad train names (--model lenet, --model tutorial-cnn): one definition, the ConvNet's
LENET_SPEC = NAMED["lenet"]
TUTORIAL_CNN_SPEC = NAMED["tutorial-cnn"]


@dataclass(frozen=True)
class Recipe:
    """One tutorial run, as both sides train it."""

    name: str  # "lenet", "cifar", "fashion"
    title: str
    dataset: str  # "mnist", "cifar10-jpeg", "fashion-mnist-approx"
    spec: str | None  # the ConvNet's layers; None: softmax regression
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    init: str  # "torch-default" or "d2l-normal"
    published: str  # what the tutorial (or the issue) reports, with its source
    seed: int = 0


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("lenet", "LeNet (ReLU, max-pool) on MNIST", "mnist", LENET_SPEC, epochs=10, batch_size=64, lr=0.01,
           momentum=0.9, init="torch-default",
           published="issue 25: torch autograd reached 98.6% here; goal >= 98.5% on numpy"),
    Recipe("cifar", "PyTorch's CIFAR-10 tutorial network", "cifar10-jpeg", TUTORIAL_CNN_SPEC, epochs=5,
           batch_size=4, lr=0.001, momentum=0.9, init="torch-default",
           published="61% on the official CIFAR-10 test set after 5 epochs (PyTorch's 'Training a classifier' "
           "tutorial, official pixels)"),
    Recipe("fashion", "d2l softmax regression on Fashion-MNIST", "fashion-mnist-approx", None, epochs=10,
           batch_size=256, lr=0.1, momentum=0.0, init="d2l-normal",
           published="d2l's curves end at about 0.83-0.85 test accuracy (official Fashion-MNIST)"),
)}


def torch_network(recipe: Recipe, chw: tuple[int, int, int], num_classes: int):
    """The idiomatic ``nn.Sequential`` of ``recipe`` (what a torch user writes); its Conv2d/Linear layers, in
    order, are the ConvNet's (weight, bias) pairs."""
    from torch import nn

    c, h, w = chw
    if recipe.spec is None:
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))
    padding = 2 if recipe.name == "lenet" else 0
    side = ((h + 2 * padding - 4) // 2 - 4) // 2  # after conv 5, pool 2, conv 5, pool 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


def initial_weights(recipe: Recipe, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Float64 host weights in torch's layout for the (weight, bias) shapes ``shapes`` (flat list: W1, b1,
    ...), drawn from ``default_rng(recipe.seed)`` in that order."""
    rng = np.random.default_rng(recipe.seed)
    out = []
    for weight_shape, bias_shape in zip(shapes[::2], shapes[1::2]):
        if recipe.init == "d2l-normal":
            out += [rng.normal(0.0, 0.01, weight_shape), np.zeros(bias_shape)]
        else:  # torch's kaiming_uniform(a=sqrt(5)) and its bias rule: both U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / np.sqrt(int(np.prod(weight_shape[1:])))
            out += [rng.uniform(-bound, bound, weight_shape), rng.uniform(-bound, bound, bias_shape)]
    return out


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order epoch ``epoch`` (from 1) visits the ``n`` training rows in, as ``softgrad.fit`` shuffles."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Accuracy within each true class, as the CIFAR-10 tutorial reports it."""
    return [float(np.mean(predicted[labels == k] == k)) if np.any(labels == k) else float("nan")
            for k in range(num_classes)]
