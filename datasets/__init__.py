"""Data sets as plain NumPy arrays: MNIST, Fashion-MNIST, CIFAR-10, synthetic, regression sets, your own.

``load(name)`` returns a :class:`Dataset` whose images are flattened float32
rows, normalised with the data set's usual mean and standard deviation, and
whose labels are int64. MNIST and Fashion-MNIST are read from their raw IDX
files with NumPy (``datasets/idx.py``; gzip or not, nothing is written beside
them); CIFAR-10 through torchvision, which also downloads any of them when
asked, or from a folder of NumPy arrays (``train-images*.npz``; or the JPEG
layout ``train-jpeg-bytes.npz``, decoded with Pillow). Arrays are taken once,
never through per-sample transforms. A copy whose pixels are not the official
ones (``cifar10-jpeg``, ``fashion-mnist-approx``) is named after its folder,
and its :attr:`Dataset.source` says so.

With no ``root``, MNIST comes from the real subset shipped in this package
(the first 20,000 training images and the official 10,000-image test set);
:attr:`Dataset.source` says which data was used.

Regression (``Dataset.task == "regression"``): ``"toy-regression"`` (the
15-point toy set of the PyTorch tutorial, raw) and ``"diabetes"`` (Efron et
al. 2004, shipped in ``datasets/data/diabetes``, standardised); their targets
are float32 ``(N, k)``. :func:`binary` turns any classification set into a
one-class-against-the-rest task (``load(name, binary="0")``).

Your own data from a file: :func:`load_file` reads an ``.npz`` (``x_train``, ``y_train``, optionally
``x_test``, ``y_test``) or a ``.csv`` with a header row and a target column, infers classification or
regression, splits off a seeded test set and standardises the features; its recipe loads it again.

The package's code lies in private modules, one concern each; every public name is imported here, so
``softgrad.datasets.<name>`` is the one place to import it from.
"""

from __future__ import annotations

from softgrad.datasets._arrays import from_arrays
from softgrad.datasets._binary import binary
from softgrad.datasets._catalogue import (
    FILE_RECIPE,
    NAMES,
    PIP_VISION,
    REGRESSION_NAMES,
    SHIPPED_DIABETES,
    SHIPPED_MNIST,
    TASKS,
    DatasetError,
    default_root,
)
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._load import load
from softgrad.datasets._npz import npz_problem
from softgrad.datasets._record import DataRecord
from softgrad.datasets._regression import (
    DIABETES_FEATURES,
    DIABETES_N,
    DIABETES_N_TRAIN,
    DIABETES_SPLIT_SEED,
    diabetes,
    toy_regression,
)
from softgrad.datasets._scaling import InputScaling
from softgrad.datasets._synthetic import synthetic
from softgrad.datasets._user_files import CLASS_LIMIT, DEFAULT_TEST_FRACTION, csv_feature_rows, load_file

# The classes say where they are imported from (in reprs, pickles and help()), not which private module holds them
for _class in (DataRecord, Dataset, DatasetError, InputScaling):
    _class.__module__ = __name__
del _class

__all__ = [
    "CLASS_LIMIT", "DEFAULT_TEST_FRACTION", "DIABETES_FEATURES", "DIABETES_N", "DIABETES_N_TRAIN",
    "DIABETES_SPLIT_SEED", "FILE_RECIPE", "NAMES", "PIP_VISION", "REGRESSION_NAMES", "SHIPPED_DIABETES",
    "SHIPPED_MNIST", "TASKS", "DataRecord", "Dataset", "DatasetError", "InputScaling", "binary",
    "csv_feature_rows", "default_root", "diabetes", "from_arrays", "load", "load_file", "npz_problem",
    "synthetic", "toy_regression",
]
