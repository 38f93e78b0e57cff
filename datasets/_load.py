"""``load(name)``: any data set softgrad knows, by name, with the recipe that loads it again."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from softgrad.datasets._altered import altered_note
from softgrad.datasets._binary import binary as binary_task
from softgrad.datasets._catalogue import (
    FILE_RECIPE,
    IMAGE_SETS,
    NAMES,
    REGRESSION_NAMES,
    DatasetError,
    default_root,
)
from softgrad.datasets._cifar import load_cifar_npz
from softgrad.datasets._cifar_jpeg import TRAIN_JPEG, is_jpeg_folder, load_cifar_jpeg
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import has_files, missing
from softgrad.datasets._mnist import has_all_idx, load_idx, load_shipped_mnist
from softgrad.datasets._record import recipe
from softgrad.datasets._regression import diabetes, toy_regression
from softgrad.datasets._synthetic import synthetic
from softgrad.datasets._torchvision import load_vision
from softgrad.datasets._user_files import load_file


def load(name: str, root: str | os.PathLike | None = None, download: bool = False, *,
         binary: str | int | Sequence[str | int] | None = None, **options) -> Dataset:
    """The train and test arrays of ``name`` and its class names.

    ``name``: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
    ``"synthetic"`` (``options`` go to :func:`synthetic`), or one of the
    regression sets ``"toy-regression"`` and ``"diabetes"`` (see
    :func:`toy_regression` and :func:`diabetes`; both ship with softgrad, so
    ``root`` and ``download`` are not used for them). ``root`` is the
    folder torchvision reads (``<root>/MNIST/raw/...``), or for MNIST and
    Fashion-MNIST a folder that holds the four IDX files itself (such as a
    copy of the small real samples), for CIFAR-10 a folder of ``.npz`` arrays
    (``train-images*.npz``, or the JPEG layout ``train-jpeg-bytes.npz`` with
    ``test-images.npz``); ``download=True`` fetches missing files
    into the torchvision layout. For MNIST with neither the full files in
    ``root`` nor ``download``, the shipped subset is used.

    ``binary``: turn a classification set into a two-class task, as
    :func:`binary` does (``"even"``, ``"odd"``, ``"0"``, ``"0,6"``,
    ``[0, 6]``, ``"Sandal"``); a ``ValueError`` for regression sets.

    ``name="file"`` is the recipe of a user's file: ``options`` are :func:`load_file`'s (a checkpoint's record
    loads the file again this way, refusing it if it changed).
    """
    if name == FILE_RECIPE:
        if binary is not None or root is not None or download:
            raise ValueError("load('file', ...): binary, root and download are for the named data sets; a file is "
                             "read as it is (see load_file)")
        return load_file(**options)
    if binary is not None and name in REGRESSION_NAMES:
        raise ValueError(f"load({name!r}, binary={binary!r}): {name} is a regression data set; a binary task "
                         f"needs a classification one ({', '.join(n for n in NAMES if n not in REGRESSION_NAMES)})")
    data = _by_name(name, root, download, options)
    data = dataclasses.replace(data, recipe=recipe(name, root, options))
    return data if binary is None else binary_task(data, binary)


def _by_name(name: str, root: str | os.PathLike | None, download: bool, options: dict) -> Dataset:
    if name == "synthetic":
        return synthetic(**options)
    if options:
        raise TypeError(f"load({name!r}): unexpected options {sorted(options)}")
    if name not in IMAGE_SETS:
        if name == "toy-regression":
            return toy_regression()
        if name == "diabetes":
            return diabetes()
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    folder = Path(root) if root is not None else default_root()
    if name != "cifar10" and has_all_idx(folder):  # the four IDX files right there, in no layout
        source = f"{name} IDX files in {folder}{altered_note(folder)}"
        return _named_by_folder(load_idx(name, folder, source=source), folder)
    if name == "cifar10" and is_jpeg_folder(folder):  # every image as a JPEG file (shared/data/cifar10-jpeg)
        return load_cifar_jpeg(folder)
    if name == "cifar10" and list(folder.glob("train-images*.npz")):  # arrays saved with np.savez
        return _named_by_folder(load_cifar_npz(folder), folder)
    if name == "cifar10" and root is not None and not download and not has_files(name, folder):
        raise DatasetError(f"cifar10: the data files are missing in {folder}: it holds none of CIFAR-10's layouts "
                           f"({TRAIN_JPEG} with test-images.npz; train-images*.npz with train-labels*.npz; "
                           "torchvision's cifar-10-batches-py/); pass download=True (--download) to fetch the last")
    if name == "mnist" and not download and not has_files(name, folder):
        if root is not None:
            raise missing(name, folder)
        return load_shipped_mnist()
    return load_vision(name, folder, download, source=f"torchvision {IMAGE_SETS[name].torchvision_class} in {folder}")


def _named_by_folder(data: Dataset, folder: Path) -> Dataset:
    """``data`` named after its folder where the folder's name extends the data set's (``fashion-mnist-approx``,
    ``cifar10-jpeg``): an altered copy's name then shows wherever results are reported (plots, checkpoints)."""
    altered = folder.name.startswith(f"{data.name}-")
    return dataclasses.replace(data, name=folder.name) if altered else data
