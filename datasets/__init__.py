"""Data sets as plain NumPy arrays: MNIST, Fashion-MNIST, CIFAR-10, synthetic, your own.

``load(name)`` returns a :class:`Dataset` whose images are flattened float32
rows, normalised with the data set's usual mean and standard deviation, and
whose labels are int64. MNIST and Fashion-MNIST are read from their raw IDX
files with NumPy (``datasets/idx.py``; gzip or not, nothing is written beside
them); CIFAR-10 through torchvision, which also downloads any of them when
asked. Arrays are taken once, never through per-sample transforms.

With no ``root``, MNIST comes from the real subset shipped in this package
(the first 20,000 training images and the official 10,000-image test set);
:attr:`Dataset.source` says which data was used.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.idx import IDXError, find_idx, read_idx

SHIPPED_MNIST = Path(__file__).resolve().parent / "data" / "mnist"
PIP_VISION = "pip install 'softgrad[vision]'  (or: pip install torchvision)"


class DatasetError(RuntimeError):
    """Data files missing, corrupt or inconsistent; the message names the folder and the fix."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, D) float32, normalised
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str  # which files were read, for the run's log
    image_shape: tuple[int, ...] | None = None  # (28, 28) or (32, 32, 3); None for vectors
    mean: tuple[float, ...] = field(default=(0.0,))  # to undo the normalisation for pictures
    std: tuple[float, ...] = field(default=(1.0,))

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"classes={self.num_classes}, source={self.source!r})")


# name -> (torchvision class, its folder under root, classes, mean, std, image shape)
_VISION = {
    "mnist": ("MNIST", "MNIST", tuple(str(d) for d in range(10)), (0.1307,), (0.3081,), (28, 28)),
    "fashion-mnist": (
        "FashionMNIST", "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"),
        (0.2860,), (0.3530,), (28, 28),
    ),
    "cifar10": (
        "CIFAR10", "cifar-10-batches-py",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (32, 32, 3),
    ),
}
NAMES = (*_VISION, "synthetic")


def default_root() -> Path:
    """``$SOFTGRAD_DATA``, else ``~/.cache/softgrad/data``: where downloads go."""
    return Path(os.environ.get("SOFTGRAD_DATA", Path.home() / ".cache" / "softgrad" / "data"))


def load(name: str, root: str | os.PathLike | None = None, download: bool = False, **options) -> Dataset:
    """The train and test arrays of ``name`` and its class names.

    ``name``: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or
    ``"synthetic"`` (``options`` go to :func:`synthetic`). ``root`` is the
    folder torchvision reads (``<root>/MNIST/raw/...``), or for MNIST and
    Fashion-MNIST a folder that holds the four IDX files itself (such as a
    copy of the small real samples); ``download=True`` fetches missing files
    into the torchvision layout. For MNIST with neither the full files in
    ``root`` nor ``download``, the shipped subset is used.
    """
    if name == "synthetic":
        return synthetic(**options)
    if options:
        raise TypeError(f"load({name!r}): unexpected options {sorted(options)}")
    if name not in _VISION:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    folder = Path(root) if root is not None else default_root()
    if name != "cifar10" and _has_all_idx(folder):  # the four IDX files right there, in no layout
        return _load_idx(name, folder, source=f"{name} IDX files in {folder}")
    if name == "cifar10" and list(folder.glob("train-images*.npz")):  # arrays saved with np.savez
        return _load_cifar_npz(folder)
    if name == "mnist" and not download and not _has_files(name, folder):
        if root is not None:
            raise _missing(name, folder)
        return _load_shipped_mnist()
    return _load_vision(name, folder, download, source=f"torchvision {_VISION[name][0]} in {folder}")


def _raw_folder(name: str, root: Path) -> Path:
    sub = _VISION[name][1]
    return root / sub if name == "cifar10" else root / sub / "raw"


def _has_files(name: str, root: Path) -> bool:
    raw = _raw_folder(name, root)
    if name == "cifar10":
        return raw.is_dir()
    return any((raw / f"{stem}-images-idx3-ubyte{ext}").is_file()
               for stem in ("train", "t10k") for ext in ("", ".gz"))


def _missing(name: str, root: Path) -> DatasetError:
    hint = " or leave root unset to use the 20,000-image MNIST subset shipped with softgrad" if name == "mnist" else ""
    return DatasetError(
        f"{name}: the data files are missing or corrupt in {_raw_folder(name, root)}; pass download=True "
        f"(--download on the command line) to fetch them with torchvision{hint}"
    )


def _torchvision_datasets():
    try:
        import torchvision.datasets
        import torchvision.datasets.utils
    except ImportError:
        raise DatasetError(f"reading image data sets needs torchvision, which is not installed: {PIP_VISION}") from None
    return torchvision.datasets


def _load_idx(name: str, raw: Path, source: str) -> Dataset:
    """MNIST or Fashion-MNIST from the raw IDX files in ``raw``, read with NumPy (never torchvision's
    processed ``.pt`` files, which it would unpickle)."""
    _, _, classes, mean, std, image_shape = _VISION[name]
    splits = []
    for train, stem in ((True, "train"), (False, "t10k")):
        arrays = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            path = find_idx(raw, f"{stem}-{kind}")
            if path is None:
                raise _missing(name, raw.parent.parent)
            try:
                arrays.append(read_idx(path))
            except IDXError as error:
                raise DatasetError(f"{name}: cannot read the {'training' if train else 'test'} files in {raw}: "
                                   f"{error}. Delete the file and pass download=True (--download) to fetch it "
                                   "again") from None
        images, labels = arrays
        if images.ndim != 3 or labels.ndim != 1:
            raise DatasetError(f"{name}: {raw}: {stem} images have shape {images.shape} and labels "
                               f"{labels.shape}; expected (N, 28, 28) and (N,)")
        splits.append(_normalise(name, images, labels.astype(np.int64), len(classes), mean, std, image_shape,
                                 train, raw.parent.parent))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test, classes, source, image_shape, mean, std)


def _load_vision(name: str, root: Path, download: bool, source: str) -> Dataset:
    if name != "cifar10":
        raw = _raw_folder(name, root)
        if download and not _has_all_idx(raw):
            _torchvision_download(name, root)
        return _load_idx(name, raw, source)
    tv = _torchvision_datasets()
    cls_name, _, classes, mean, std, image_shape = _VISION[name]
    cls = getattr(tv, cls_name)
    splits = []
    for train in (True, False):
        try:
            data = cls(root=str(root), train=train, download=download)
            images = np.asarray(data.data)
            labels = np.asarray(data.targets, dtype=np.int64)
        except DatasetError:
            raise
        except Exception as error:  # torchvision: RuntimeError if missing, others if truncated
            if download:  # the network's error, not the advice to download
                raise DatasetError(f"{name}: downloading into {root} failed: {type(error).__name__}: "
                                   f"{error}") from None
            if not _has_files(name, root) or "not found" in str(error).lower():
                raise _missing(name, root) from None
            raise DatasetError(
                f"{name}: cannot read the {'training' if train else 'test'} files in "
                f"{_raw_folder(name, root)}: {type(error).__name__}: {error}. The files are truncated or "
                "corrupt; delete them and pass download=True (--download) to fetch them again"
            ) from None
        splits.append(_normalise(name, images, labels, len(classes), mean, std, image_shape, train, root))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test, classes, source, image_shape, mean, std)


def _normalise(name, images, labels, num_classes, mean, std, image_shape, train, root):
    split = "training" if train else "test"
    if images.shape[1:] != image_shape:
        raise DatasetError(f"{name}: {split} images in {root} have shape {images.shape[1:]}, expected {image_shape}")
    if len(labels) != len(images):
        raise DatasetError(
            f"{name}: the {split} files in {_raw_folder(name, root)} hold {len(images)} images but "
            f"{len(labels)} labels; the label file does not belong to the image file"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetError(
            f"{name}: {split} label {int(labels[bad])} (sample {bad}) in {_raw_folder(name, root)} is out of "
            f"range for {num_classes} classes; the label file is corrupt"
        )
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    channels = len(mean)
    if channels == 1:
        x = (x - np.float32(mean[0])) / np.float32(std[0])
    else:  # HWC, flattened: the channel is the fastest-varying index
        x = ((x.reshape(len(x), -1, channels) - np.asarray(mean, np.float32))
             / np.asarray(std, np.float32)).reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32), labels


def _npz_array(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if len(archive.files) != 1:
                raise DatasetError(f"cifar10: {path} holds {len(archive.files)} arrays; expected one")
            return archive[archive.files[0]]
    except DatasetError:
        raise
    except Exception as error:  # zipfile, zlib, NumPy: a damaged file
        raise DatasetError(f"cifar10: cannot read {path}: {type(error).__name__}: {error}") from None


def _load_cifar_npz(folder: Path) -> Dataset:
    """CIFAR-10 from ``train-images*.npz`` / ``train-labels*.npz`` (uint8 ``(N, 32, 32, 3)``, labels ``(N,)`` or
    ``(N, 1)``) and the same for ``test-``; without test files the last fifth of the training images is the test set."""
    _, _, classes, mean, std, image_shape = _VISION["cifar10"]
    splits, notes = {}, []
    for split in ("train", "test"):
        images, labels = sorted(folder.glob(f"{split}-images*.npz")), sorted(folder.glob(f"{split}-labels*.npz"))
        if images and labels:
            splits[split] = (_npz_array(images[0]), _npz_array(labels[0]).reshape(-1).astype(np.int64))
            notes.append(f"{images[0].name}, {labels[0].name}")
    if "train" not in splits:
        raise DatasetError(f"cifar10: {folder} has train-images*.npz but no train-labels*.npz")
    if "test" not in splits:
        images, labels = splits["train"]
        cut = len(images) - max(1, len(images) // 5)
        splits = {"train": (images[:cut], labels[:cut]), "test": (images[cut:], labels[cut:])}
        notes.append(f"no test files: the last {len(images) - cut} training images are the test set")
    parts = [_normalise("cifar10", images, labels, len(classes), mean, std, image_shape, split == "train", folder)
             for split, (images, labels) in splits.items()]
    (x_train, y_train), (x_test, y_test) = parts
    return Dataset("cifar10", x_train, y_train, x_test, y_test, classes,
                   f"CIFAR-10 arrays in {folder} ({'; '.join(notes)})", image_shape, mean, std)


def _has_all_idx(raw: Path) -> bool:
    return all(find_idx(raw, f"{stem}-{kind}") is not None for stem in ("train", "t10k")
               for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _torchvision_download(name: str, root: Path) -> None:
    """Fetch the missing files of ``name`` into ``root`` with torchvision; the network's error, if any, is named."""
    cls = getattr(_torchvision_datasets(), _VISION[name][0])
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as error:  # URLError, HTTPError, OSError, RuntimeError from torchvision
        raise DatasetError(f"{name}: downloading into {root} failed: {type(error).__name__}: {error}") from None


def _load_shipped_mnist() -> Dataset:
    data = _load_idx("mnist", SHIPPED_MNIST, source="")
    source = (f"MNIST subset shipped with softgrad ({len(data.y_train):,} training images, the official "
              f"{len(data.y_test):,}-image test set)")
    return dataclasses.replace(data, source=source)


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


def from_arrays(x_train, y_train, x_test, y_test, classes=None, name: str = "arrays", *,
                image_shape: tuple[int, ...] | None = None, normalise: bool = False) -> Dataset:
    """Your own arrays as a Dataset: rows are samples (flattened to 2-D), labels integers.

    Labels may be ``(N,)`` or ``(N, 1)``. ``image_shape`` (``(28, 28)``, ``(32, 32, 3)``) lets the run
    draw its test images. With ``normalise=True`` the features are scaled by the training set's
    mean and standard deviation (per channel for images), which the Dataset records.
    """
    parts = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"from_arrays: x_{split} must have shape (N, ...) with N >= 1, got {x.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # a column of labels
        if y.shape != (len(x),):
            raise ValueError(f"from_arrays: y_{split} must have shape ({len(x)},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"from_arrays: y_{split} must hold integer class indices, got {y.dtype}")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise TypeError(f"from_arrays: x_{split} must be real numbers, got {x.dtype}")
        parts.append((x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = parts
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"from_arrays: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    num_classes = int(max(y_train.max(), y_test.max())) + 1 if classes is None else len(classes)
    for split, y in (("train", y_train), ("test", y_test)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"from_arrays: y_{split} holds labels outside [0, {num_classes - 1}]")
    classes = tuple(str(c) for c in (classes if classes is not None else range(num_classes)))
    mean, std = (0.0,), (1.0,)
    if image_shape is not None:
        image_shape = tuple(int(d) for d in image_shape)
        if int(np.prod(image_shape)) != x_train.shape[1]:
            raise ValueError(f"from_arrays: image_shape {image_shape} holds {int(np.prod(image_shape))} pixels, the "
                             f"rows {x_train.shape[1]} features")
    if normalise:
        channels = image_shape[-1] if image_shape is not None and len(image_shape) == 3 else 1
        per_channel = x_train.reshape(len(x_train), -1, channels)
        mean = tuple(float(m) for m in per_channel.mean(axis=(0, 1)))
        std = tuple(max(float(s), 1e-12) for s in per_channel.std(axis=(0, 1)))
        x_train, x_test = ((x.reshape(len(x), -1, channels) - np.asarray(mean, np.float32))
                           / np.asarray(std, np.float32) for x in (x_train, x_test))
        x_train = np.ascontiguousarray(x_train.reshape(len(x_train), -1), dtype=np.float32)
        x_test = np.ascontiguousarray(x_test.reshape(len(x_test), -1), dtype=np.float32)
    return Dataset(name, x_train, y_train, x_test, y_test, classes, f"arrays given to from_arrays ({name})",
                   image_shape, mean, std)


__all__ = ["Dataset", "DatasetError", "NAMES", "from_arrays", "load", "synthetic"]
