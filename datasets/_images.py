"""What the image sets' loaders share: torchvision's folder layout, the missing-files error, and raw pixels
made into normalised rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import IMAGE_SETS, DatasetError
from softgrad.datasets._dataset import Dataset


def raw_folder(name: str, root: Path) -> Path:
    """Where torchvision keeps the files of ``name`` under ``root``."""
    sub = IMAGE_SETS[name].folder
    return root / sub if name == "cifar10" else root / sub / "raw"


def has_files(name: str, root: Path) -> bool:
    raw = raw_folder(name, root)
    if name == "cifar10":
        return raw.is_dir()
    return any((raw / f"{stem}-images-idx3-ubyte{ext}").is_file()
               for stem in ("train", "t10k") for ext in ("", ".gz"))


def missing(name: str, root: Path) -> DatasetError:
    hint = " or leave root unset to use the 20,000-image MNIST subset shipped with softgrad" if name == "mnist" else ""
    return DatasetError(
        f"{name}: the data files are missing or corrupt in {raw_folder(name, root)}; pass download=True "
        f"(--download on the command line) to fetch them with torchvision{hint}"
    )


def pixel_rows(name: str, images: np.ndarray, labels: np.ndarray, *, train: bool,
               root: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split's raw 0..255 ``images`` as normalised float32 rows, with its ``labels``, both checked
    against the set's shape and classes; a DatasetError naming the files in ``root`` otherwise."""
    spec = IMAGE_SETS[name]
    num_classes, mean, std = len(spec.classes), spec.mean, spec.std
    split = "training" if train else "test"
    if images.shape[1:] != spec.image_shape:
        raise DatasetError(f"{name}: {split} images in {root} have shape {images.shape[1:]}, "
                           f"expected {spec.image_shape}")
    if len(labels) != len(images):
        raise DatasetError(
            f"{name}: the {split} files in {raw_folder(name, root)} hold {len(images)} images but "
            f"{len(labels)} labels; the label file does not belong to the image file"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetError(
            f"{name}: {split} label {int(labels[bad])} (sample {bad}) in {raw_folder(name, root)} is out of "
            f"range for {num_classes} classes; the label file is corrupt"
        )
    # HWC, flattened: the channel is the fastest-varying index. In place, in one float32 array: the same
    # operations in the same order as out-of-place ones (the same bits), without three more copies of a data
    # set that is 600 MB as floats for all of CIFAR-10.
    channels = len(mean)
    pixels = int(np.prod(spec.image_shape)) // channels  # not -1: an empty split reshapes too
    x = images.reshape(len(images), pixels, channels).astype(np.float32)
    np.divide(x, np.float32(255.0), out=x)
    np.subtract(x, np.asarray(mean, np.float32), out=x)
    np.divide(x, np.asarray(std, np.float32), out=x)
    return x.reshape(len(x), pixels * channels), labels


def image_dataset(name: str, splits: list[tuple[np.ndarray, np.ndarray]], source: str) -> Dataset:
    """The Dataset of ``name`` from its (rows, labels) train and test splits (:func:`pixel_rows`)."""
    spec = IMAGE_SETS[name]
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test, spec.classes, source, spec.image_shape, spec.mean,
                   spec.std, raw_scale=255.0)
