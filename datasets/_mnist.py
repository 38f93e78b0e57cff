"""MNIST and Fashion-MNIST from their raw IDX files, read with NumPy; and the MNIST subset shipped with softgrad."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import SHIPPED_MNIST, DatasetError
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import image_dataset, missing, pixel_rows
from softgrad.datasets.idx import IDXError, find_idx, read_idx

_STEMS = ((True, "train"), (False, "t10k"))  # (training split?, file name stem)
_KINDS = ("images-idx3-ubyte", "labels-idx1-ubyte")


def has_all_idx(raw: Path) -> bool:
    """Whether ``raw`` holds the four IDX files, gzipped or not."""
    return all(find_idx(raw, f"{stem}-{kind}") is not None for _, stem in _STEMS for kind in _KINDS)


def load_idx(name: str, raw: Path, source: str) -> Dataset:
    """MNIST or Fashion-MNIST from the raw IDX files in ``raw``, read with NumPy (never torchvision's
    processed ``.pt`` files, which it would unpickle)."""
    splits = []
    for train, stem in _STEMS:
        arrays = []
        for kind in _KINDS:
            path = find_idx(raw, f"{stem}-{kind}")
            if path is None:
                raise missing(name, raw.parent.parent)
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
        splits.append(pixel_rows(name, images, labels.astype(np.int64), train=train, root=raw.parent.parent))
    return image_dataset(name, splits, source)


def load_shipped_mnist() -> Dataset:
    data = load_idx("mnist", SHIPPED_MNIST, source="")
    source = (f"MNIST subset shipped with softgrad ({len(data.y_train):,} training images, the official "
              f"{len(data.y_test):,}-image test set)")
    return dataclasses.replace(data, source=source)
