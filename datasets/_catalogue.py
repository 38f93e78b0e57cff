"""The data sets softgrad knows by name, where their shipped files lie, and the error their files raise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHIPPED_MNIST = Path(__file__).resolve().parent / "data" / "mnist"
SHIPPED_DIABETES = Path(__file__).resolve().parent / "data" / "diabetes"
TASKS = ("classification", "regression")
PIP_VISION = "pip install 'softgrad[vision]'  (or: pip install torchvision)"


class DatasetError(RuntimeError):
    """Data files missing, corrupt or inconsistent; the message names the folder and the fix."""


@dataclass(frozen=True)
class ImageSet:
    """One of the image sets: how torchvision names it and what normalises its pixels."""

    torchvision_class: str  # the class in torchvision.datasets
    folder: str  # its folder under root, as torchvision lays it out
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of pixels scaled to 0..1
    std: tuple[float, ...]
    image_shape: tuple[int, ...]


IMAGE_SETS = {
    "mnist": ImageSet("MNIST", "MNIST", tuple(str(d) for d in range(10)), (0.1307,), (0.3081,), (28, 28)),
    "fashion-mnist": ImageSet(
        "FashionMNIST", "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"),
        (0.2860,), (0.3530,), (28, 28),
    ),
    "cifar10": ImageSet(
        "CIFAR10", "cifar-10-batches-py",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (32, 32, 3),
    ),
}
REGRESSION_NAMES = ("toy-regression", "diabetes")
NAMES = (*IMAGE_SETS, "synthetic", *REGRESSION_NAMES)
#: the recipe name of data read from a user's file (load_file); not in NAMES, so --dataset never offers it
FILE_RECIPE = "file"


def default_root() -> Path:
    """``$SOFTGRAD_DATA``, else ``~/.cache/softgrad/data``: where downloads go."""
    return Path(os.environ.get("SOFTGRAD_DATA", Path.home() / ".cache" / "softgrad" / "data"))
