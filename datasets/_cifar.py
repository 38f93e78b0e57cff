"""CIFAR-10 from arrays saved with ``np.savez``, and whether torchvision's Python version of it is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import DatasetError
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import image_dataset, pixel_rows, raw_folder
from softgrad.datasets._npz import npz_problem


def _npz_array(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if len(archive.files) != 1:
                raise DatasetError(f"cifar10: {path} holds {len(archive.files)} arrays; expected one")
            return archive[archive.files[0]]
    except DatasetError:
        raise
    except Exception as error:  # zipfile, zlib, NumPy: a damaged file
        raise DatasetError(f"cifar10: cannot read {path}: {npz_problem(error)}") from None


def load_cifar_npz(folder: Path) -> Dataset:
    """CIFAR-10 from ``train-images*.npz`` / ``train-labels*.npz`` (uint8 ``(N, 32, 32, 3)``, labels ``(N,)`` or
    ``(N, 1)``) and the same for ``test-``; without test files the last fifth of the training images is the test set."""
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
    parts = [pixel_rows("cifar10", images, labels, train=split == "train", root=folder)
             for split, (images, labels) in splits.items()]
    return image_dataset("cifar10", parts, f"CIFAR-10 arrays in {folder} ({'; '.join(notes)})")


def has_cifar_batches(root: Path) -> bool:
    """Every file of CIFAR-10's Python version in ``root`` (torchvision checks their MD5 sums as it loads)."""
    folder = raw_folder("cifar10", root)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    return all((folder / n).is_file() for n in names)
