"""The three tutorials' data, decoded once into the arrays both softgrad and the torch reference train on.

Each set is returned as flat float32 rows (N, prod(image_shape)) in the layout softgrad's models take
(MNIST-shaped rows (28, 28); CIFAR-10 rows HWC-flattened) and int64 labels. The torch reference reshapes
the same arrays to NCHW itself, so both sides see bit-identical pixels.

The preprocessing is each tutorial's own, applied here to both sides:
- LeNet on MNIST: the shipped subset as ``softgrad.datasets.load("mnist")`` gives it (mean/std normalised);
- the CIFAR-10 tutorial: ``ToTensor`` then ``Normalize((0.5,) * 3, (0.5,) * 3)``, i.e. ``x / 255 * 2 - 1``;
- d2l's softmax regression: ``ToTensor`` alone, i.e. ``x / 255`` with no mean/std normalisation.

``cifar10-jpeg`` and ``fashion-mnist-approx`` hold altered pixels (see the data's README); the figures
measured on them carry the folder's name, never "the official test set".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class TutorialData:
    """Arrays of one tutorial, as both sides train on them; ``label`` names the data as reports must."""

    label: str  # e.g. "cifar10-jpeg": the folder the pixels came from
    x_train: np.ndarray  # (N, F) float32
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...]  # as softgrad.datasets gives it: (28, 28) or (32, 32, 3)
    classes: tuple[str, ...]

    @property
    def chw(self) -> tuple[int, int, int]:
        """The image's (C, H, W), as torch's NCHW layers take it."""
        if len(self.image_shape) == 2:
            return (1, *self.image_shape)
        h, w, c = self.image_shape
        return (c, h, w)

    def nchw(self, x: np.ndarray) -> np.ndarray:
        """Rows ``x`` as the NCHW batch torch's layers take (a copy, C-contiguous)."""
        if len(self.image_shape) == 2:
            return np.ascontiguousarray(x.reshape(-1, 1, *self.image_shape))
        return np.ascontiguousarray(x.reshape(-1, *self.image_shape).transpose(0, 3, 1, 2))


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path} is missing: the tutorial runs read ../shared/data (pass --root FOLDER)")


def mnist_subset() -> TutorialData:
    """The shipped MNIST subset (20,000 training images, the official 10,000 test images), normalised as
    ``softgrad.datasets.load("mnist")`` gives it."""
    from softgrad import datasets

    data = datasets.load("mnist")
    return TutorialData("mnist (shipped subset; official test set)", data.x_train.astype(np.float32),
                        data.y_train.astype(np.int64), data.x_test.astype(np.float32),
                        data.y_test.astype(np.int64), (28, 28), MNIST_CLASSES)


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The JPEG files concatenated in ``blob`` (file i is ``blob[offsets[i]:offsets[i + 1]]``) as uint8 RGB
    images (N, H, W, 3), decoded with Pillow as the data's README does."""
    from PIL import Image

    raw = blob.tobytes()
    return np.stack([np.asarray(Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])).convert("RGB"))
                     for i in range(len(offsets) - 1)])


def cifar10_jpeg(root: Path) -> TutorialData:
    """All 50,000 training and 10,000 test images of ``<root>/cifar10-jpeg``, as the tutorial's transform
    leaves them: ``x / 255 * 2 - 1``, HWC-flattened rows."""
    folder = root / "cifar10-jpeg"
    for name in ("train-jpeg-bytes.npz", "test-images.npz", "test-labels.npz"):
        if not (folder / name).is_file():
            raise _missing(folder / name)
    with np.load(folder / "train-jpeg-bytes.npz") as z:
        x_train, y_train = decode_jpegs(z["jpeg"], z["offsets"]), z["labels"]
    with np.load(folder / "test-images.npz") as zx, np.load(folder / "test-labels.npz") as zy:
        x_test, y_test = zx["arr_0"], zy["arr_0"]

    def scaled(x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)

    return TutorialData("cifar10-jpeg", scaled(x_train), y_train.astype(np.int64), scaled(x_test),
                        y_test.astype(np.int64), (32, 32, 3), CIFAR_CLASSES)


def fashion_mnist_approx(root: Path) -> TutorialData:
    """All 60,000 training and 10,000 test images of ``<root>/fashion-mnist-approx`` as d2l feeds them:
    ``x / 255``, no mean/std normalisation."""
    from softgrad.datasets.idx import find_idx, read_idx

    folder = root / "fashion-mnist-approx"
    arrays = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        path = find_idx(folder, stem)
        if path is None:
            raise _missing(folder / f"{stem}.gz")
        arrays.append(read_idx(path))
    x_train, y_train, x_test, y_test = arrays
    return TutorialData("fashion-mnist-approx", x_train.reshape(len(x_train), -1).astype(np.float32) / 255,
                        y_train.astype(np.int64), x_test.reshape(len(x_test), -1).astype(np.float32) / 255,
                        y_test.astype(np.int64), (28, 28), FASHION_CLASSES)
