"""The image sets in torchvision's folder layout: its downloads, and CIFAR-10 read through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import IMAGE_SETS, PIP_VISION, DatasetError
from softgrad.datasets._cifar import has_cifar_batches
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import has_files, image_dataset, missing, pixel_rows, raw_folder
from softgrad.datasets._mnist import has_all_idx, load_idx


def torchvision_datasets():
    """``torchvision.datasets``, or a DatasetError that says how to install it."""
    try:
        import torchvision.datasets
        import torchvision.datasets.utils
    except ImportError:
        raise DatasetError(f"reading image data sets needs torchvision, which is not installed: {PIP_VISION}") from None
    return torchvision.datasets


def load_vision(name: str, root: Path, download: bool, source: str) -> Dataset:
    """An image set from torchvision's layout under ``root``, its missing files downloaded where asked: MNIST
    and Fashion-MNIST then read from their IDX files, CIFAR-10 through torchvision."""
    if name != "cifar10":
        raw = raw_folder(name, root)
        if download and not has_all_idx(raw):
            _download(name, root)
        return load_idx(name, raw, source)
    if download and not has_cifar_batches(root):
        _download(name, root)  # fails fast and in one line offline (datasets/download.py)
    cls = getattr(torchvision_datasets(), IMAGE_SETS[name].torchvision_class)
    splits = []
    for train in (True, False):
        try:
            data = cls(root=str(root), train=train, download=download)
            images = np.asarray(data.data)
            labels = np.asarray(data.targets, dtype=np.int64)
        except DatasetError:
            raise
        except Exception as error:  # torchvision: RuntimeError if missing, others if truncated
            raise _unreadable(name, root, download=download, train=train, error=error) from None
        splits.append(pixel_rows(name, images, labels, train=train, root=root))
    return image_dataset(name, splits, source)


def _unreadable(name: str, root: Path, *, download: bool, train: bool, error: Exception) -> DatasetError:
    """What torchvision's ``error`` on reading ``name`` means: the download failed, the files are missing, or
    they are damaged."""
    if download:  # the network's error, not the advice to download
        return DatasetError(f"{name}: downloading into {root} failed: {type(error).__name__}: {error}")
    if not has_files(name, root) or "not found" in str(error).lower():
        return missing(name, root)
    return DatasetError(
        f"{name}: cannot read the {'training' if train else 'test'} files in "
        f"{raw_folder(name, root)}: {type(error).__name__}: {error}. The files are truncated or "
        "corrupt; delete them and pass download=True (--download) to fetch them again"
    )


def _download(name: str, root: Path) -> None:
    """Fetch the missing files of ``name`` into ``root`` with torchvision (datasets/download.py): without a
    network, one line that says so and how to use a local copy, after seconds, and no empty folder left."""
    from softgrad.datasets.download import download, source_urls

    cls = getattr(torchvision_datasets(), IMAGE_SETS[name].torchvision_class)

    def fetch() -> None:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)

    deepest = root if name == "cifar10" else raw_folder(name, root)  # where torchvision puts the files
    download(name, fetch, source_urls(cls), root, deepest, DatasetError)
