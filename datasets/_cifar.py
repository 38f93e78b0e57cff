"""CIFAR-10 from arrays saved with ``np.savez`` (such as the exact first 4,000 training images in
``shared/data/cifar10``), and whether torchvision's Python version of it is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import IMAGE_SETS, DatasetError
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import image_dataset, pixel_rows, raw_folder
from softgrad.datasets._npz import npz_length, read_npz

_CIFAR = "cifar10"
#: the official splits' sizes: a label file of exactly this length is the whole official label sequence
OFFICIAL_COUNT = {"train": 50_000, "test": 10_000}


def load_cifar_npz(folder: Path) -> Dataset:
    """CIFAR-10 from ``train-images*.npz`` / ``train-labels*.npz`` (uint8 ``(N, 32, 32, 3)``, labels ``(N,)`` or
    ``(N, 1)``) and the same for ``test-``; without test images the last fifth of the training images is held
    out as the test set. Of several image files the largest is taken (the smaller ones must be its first
    images); its labels are the label file of the same suffix, else one of the same length, else the first N
    of the official full label sequence."""
    splits, notes = {}, []
    for split in ("train", "test"):
        found = _images(folder, split)
        if found is None:
            continue
        path, images = found
        labels, label_note = _labels(folder, split, path, len(images))
        splits[split] = (images, labels)
        notes.append(f"{path.name} with {label_note}")
    if "train" not in splits:
        raise DatasetError(f"{_CIFAR}: {folder} has test-images*.npz but no train-images*.npz")
    if "test" not in splits:
        images, labels = splits["train"]
        if len(images) < 2:
            raise DatasetError(f"{_CIFAR}: {folder} has no test images and {len(images)} training image(s): "
                               "too few to hold some out as the test set")
        cut = len(images) - max(1, len(images) // 5)
        splits = {"train": (images[:cut], labels[:cut]), "test": (images[cut:], labels[cut:])}
        labels_only = sorted(p.name for p in folder.glob("test-labels*.npz"))
        notes.append(f"no test images{f' ({labels_only[0]} holds labels only)' if labels_only else ''}: the last "
                     f"{len(images) - cut:,} of the {len(images):,} training images are held out as the test set")
    parts = [pixel_rows(_CIFAR, images, labels, train=split == "train", root=folder)
             for split, (images, labels) in splits.items()]
    return image_dataset(_CIFAR, parts, f"CIFAR-10 arrays in {folder} ({'; '.join(notes)})")


def _images(folder: Path, split: str) -> tuple[Path, np.ndarray] | None:
    """The largest ``<split>-images*.npz`` in ``folder`` and its images; any smaller one must hold its first
    images (a DatasetError naming both otherwise, as for two files of one size)."""
    paths = sorted(folder.glob(f"{split}-images*.npz"))
    if not paths:
        return None
    counts = {path: npz_length(_CIFAR, path) for path in paths}
    largest = max(paths, key=counts.__getitem__)
    twins = [p.name for p in paths if p != largest and counts[p] == counts[largest]]
    if twins:
        raise DatasetError(f"{_CIFAR}: {folder} holds {largest.name} and {', '.join(twins)}, each of "
                           f"{counts[largest]:,} images: which is meant is ambiguous; keep one")
    images = _one_array(largest)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SETS[_CIFAR].image_shape:
        raise DatasetError(f"{_CIFAR}: {largest} holds {images.dtype} {images.shape}; expected uint8 "
                           "(N, 32, 32, 3) HWC images")
    for path in paths:
        if path != largest and not np.array_equal(_one_array(path), images[:counts[path]]):
            raise DatasetError(f"{_CIFAR}: {folder} holds {largest.name} ({counts[largest]:,} images) and "
                               f"{path.name} ({counts[path]:,}), which are not its first images; keep one")
    return largest, images


def _labels(folder: Path, split: str, images: Path, count: int) -> tuple[np.ndarray, str]:
    """The labels of the ``count`` images in ``images``, and which file they came from: every label file of the
    split must agree with them where both hold a label (a DatasetError naming the two files otherwise)."""
    suffix = images.name[len(f"{split}-images"):]
    paths = sorted(folder.glob(f"{split}-labels*.npz"))
    if not paths:
        raise DatasetError(f"{_CIFAR}: {folder} has {images.name} but no {split}-labels*.npz")
    every = {path: _label_array(path) for path in paths}
    paired = folder / f"{split}-labels{suffix}"
    same = [paired] if paired in every else [p for p in paths if len(every[p]) == count]
    full = [p for p in paths if len(every[p]) == OFFICIAL_COUNT[split] > count]
    if same:
        chosen, note = same[0], same[0].name
    elif full:
        chosen, note = full[0], f"the first {count:,} of {full[0].name} (the official {split} label sequence)"
    else:
        held = ", ".join(f"{p.name} ({len(every[p]):,})" for p in paths)
        raise DatasetError(f"{_CIFAR}: {images} holds {count:,} images, but no label file matches: {held}")
    labels = checked_labels(chosen, every[chosen][:count], count, images)
    for path, other in every.items():
        common = min(len(other), count)
        if not np.array_equal(other[:common], labels[:common]):
            raise DatasetError(f"{_CIFAR}: {chosen.name} and {path.name} in {folder} disagree on the first "
                               f"{common:,} {split} labels; one of them belongs to other images")
    return labels, note


def _one_array(path: Path) -> np.ndarray:
    return next(iter(read_npz(_CIFAR, path).values()))


def _label_array(path: Path) -> np.ndarray:
    labels = _one_array(path)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2) or labels.size != len(labels):
        raise DatasetError(f"{_CIFAR}: {path} holds {labels.dtype} {labels.shape}; expected integer labels (N,)")
    return labels.reshape(-1).astype(np.int64)


def checked_labels(path: Path, labels: np.ndarray, count: int, images: Path) -> np.ndarray:
    """``labels`` (``(N,)`` or ``(N, 1)`` integers, one per image of ``images``) as int64, in range."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2) or labels.size != len(labels):
        raise DatasetError(f"{_CIFAR}: {path} holds {labels.dtype} {labels.shape}; expected integer labels (N,)")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != count:
        raise DatasetError(f"{_CIFAR}: {path} holds {len(labels):,} labels but {images} holds {count:,} images")
    bad = np.flatnonzero((labels < 0) | (labels >= len(IMAGE_SETS[_CIFAR].classes)))
    if len(bad):
        raise DatasetError(f"{_CIFAR}: {path}: label {int(labels[bad[0]])} (sample {int(bad[0])}) is not one of "
                           "the 10 classes 0..9; the file is corrupt")
    return labels


def has_cifar_batches(root: Path) -> bool:
    """Every file of CIFAR-10's Python version in ``root`` (torchvision checks their MD5 sums as it loads)."""
    folder = raw_folder("cifar10", root)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    return all((folder / n).is_file() for n in names)
