"""The regression sets shipped with softgrad: the PyTorch tutorial's toy set and the diabetes data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import SHIPPED_DIABETES, DatasetError
from softgrad.datasets._dataset import Dataset

# The toy set of yunjey/pytorch-tutorial (tutorials/01-basics/linear_regression/main.py), kept here as
# literals: 15 numbers each are shorter than any file, and users compare against the tutorial's output.
_TOY_X = (3.3, 4.4, 5.5, 6.71, 6.93, 4.168, 9.779, 6.182, 7.59, 2.167, 7.042, 10.791, 5.313, 7.997, 3.1)
_TOY_Y = (1.7, 2.76, 2.09, 3.19, 1.694, 1.573, 3.366, 2.596, 2.53, 1.221, 2.827, 3.465, 1.65, 2.904, 1.3)


def toy_regression() -> Dataset:
    """The PyTorch tutorial's 15-point linear-regression toy set, raw float32 ``(15, 1)`` arrays.

    Nothing is scaled (``target_mean == (0.0,)``, ``target_std == (1.0,)``) so that a run reproduces
    the tutorial's numbers. The tutorial has no held-out data: the test split is the same 15 points
    (copies), which :attr:`Dataset.source` says.
    """
    x = np.asarray(_TOY_X, dtype=np.float32).reshape(-1, 1)
    y = np.asarray(_TOY_Y, dtype=np.float32).reshape(-1, 1)
    return Dataset("toy-regression", x, y, x.copy(), y.copy(), (),
                   "toy regression set of yunjey/pytorch-tutorial (linear regression, 15 points, raw); "
                   "no held-out data: the test split is the same 15 points",
                   task="regression", target_names=("y",))


DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
DIABETES_SPLIT_SEED, DIABETES_N, DIABETES_N_TRAIN = 0, 442, 353


def _read_diabetes_file(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One shipped diabetes file as float64, or a DatasetError naming it (missing, damaged, wrong shape)."""
    try:
        with gzip.open(path, "rt") as stream:
            values = np.loadtxt(stream, dtype=np.float64, ndmin=len(shape))
    except FileNotFoundError:
        raise DatasetError(f"diabetes: {path} is missing; reinstall softgrad (the file ships with it)") from None
    except Exception as error:  # gzip (BadGzipFile, EOFError), zlib, ValueError from loadtxt: a damaged file
        raise DatasetError(f"diabetes: cannot read {path}: {type(error).__name__}: {error}; the file is damaged, "
                           "reinstall softgrad") from None
    if values.shape != shape:
        raise DatasetError(f"diabetes: {path} holds an array of shape {values.shape}, expected {shape}; the file "
                           "is damaged, reinstall softgrad")
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0])
        raise DatasetError(f"diabetes: {path} row {row} is not finite; the file is damaged, reinstall softgrad")
    return values


def diabetes(folder: str | os.PathLike | None = None) -> Dataset:
    """The diabetes data set of Efron, Hastie, Johnstone & Tibshirani (2004), "Least Angle Regression".

    442 patients, 10 baseline features (``DIABETES_FEATURES``: age, sex, bmi, bp, s1..s6), one target:
    disease progression one year after baseline. Read with NumPy from the two files shipped in
    ``datasets/data/diabetes`` (or ``folder``; see its README.md for provenance and licence), so no
    network and no scikit-learn are needed.

    The split is fixed: ``np.random.default_rng(0).permutation(442)``, the first 353 indices train,
    the last 89 test. Features and target are standardised with the training split's mean and
    population standard deviation, both recorded: the target's in ``target_mean``/``target_std``
    (``raw = y * target_std + target_mean``), the features' in ``feature_mean``/``feature_std``
    (``mean``/``std`` stay ``(0.0,)``/``(1.0,)``: those fields undo picture normalisation), so
    :meth:`Dataset.scale_inputs` scales new patients' raw rows as the training rows were.
    """
    root = Path(folder) if folder is not None else SHIPPED_DIABETES
    features = _read_diabetes_file(root / "diabetes_data_raw.csv.gz", (DIABETES_N, len(DIABETES_FEATURES)))
    target = _read_diabetes_file(root / "diabetes_target.csv.gz", (DIABETES_N,))
    order = np.random.default_rng(DIABETES_SPLIT_SEED).permutation(DIABETES_N)
    train, test = order[:DIABETES_N_TRAIN], order[DIABETES_N_TRAIN:]
    # Statistics in float64 from the training rows only, so nothing about the test split leaks into them
    x_mean, x_std = features[train].mean(axis=0), features[train].std(axis=0)
    y_mean, y_std = float(target[train].mean()), float(target[train].std())

    def scaled(rows):
        x = (features[rows] - x_mean) / x_std
        y = (target[rows] - y_mean) / y_std
        return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y.reshape(-1, 1), dtype=np.float32)

    (x_train, y_train), (x_test, y_test) = scaled(train), scaled(test)
    where = "shipped with softgrad" if folder is None else f"from {root}"
    return Dataset("diabetes", x_train, y_train, x_test, y_test, (),
                   f"diabetes data of Efron et al. 2004 {where} ({DIABETES_N} patients, "
                   f"split by default_rng({DIABETES_SPLIT_SEED}).permutation: {len(train)} train, {len(test)} test; "
                   "features and target standardised with the training split's mean and std)",
                   task="regression", target_names=("disease progression",),
                   target_mean=(y_mean,), target_std=(y_std,),
                   feature_mean=tuple(float(m) for m in x_mean), feature_std=tuple(float(s) for s in x_std))
