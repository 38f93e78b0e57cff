"""Your own arrays as a :class:`Dataset` (:func:`from_arrays`): checked, flattened, optionally normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from softgrad.datasets._catalogue import TASKS
from softgrad.datasets._dataset import Dataset


def from_arrays(x_train, y_train, x_test=None, y_test=None, classes=None, name: str = "arrays", *,
                image_shape: tuple[int, ...] | None = None, normalise: bool = False,
                task: str = "classification", target_names: Sequence[str] | None = None,
                standardise_targets: bool = False) -> Dataset:
    """Your own arrays as a Dataset: rows are samples (flattened to 2-D), labels integers.

    Labels may be ``(N,)`` or ``(N, 1)``. ``image_shape`` (``(28, 28)``, ``(32, 32, 3)``) lets the run
    draw its test images. With ``normalise=True`` the features are scaled by the training set's
    mean and standard deviation (per channel for images), which the Dataset records.

    ``task="regression"``: targets are real numbers, ``(N,)`` or ``(N, k)`` (integers are converted),
    stored as float32 ``(N, k)``; they must be finite. ``target_names`` names the k columns (default
    ``("y",)`` for one, ``("y0", "y1", ...)`` for more). With ``standardise_targets=True`` each column
    is scaled by the training set's mean and standard deviation, recorded in ``target_mean`` /
    ``target_std``. ``classes`` is not used for regression.

    ``x_test`` and ``y_test`` left as None: no test split (empty ``x_test``/``y_test``); ``fit`` trains on it
    without test figures.
    """
    if task not in TASKS:
        raise ValueError(f"from_arrays: task must be one of {', '.join(TASKS)}, got {task!r}")
    regression = task == "regression"
    if (x_test is None) != (y_test is None):
        raise ValueError("from_arrays: give both x_test and y_test, or neither for no test split")
    no_test = x_test is None
    if no_test:  # the training split stands in for the checks and the scaling below, then is emptied
        x_test, y_test = x_train, y_train
    if not regression and (target_names is not None or standardise_targets):
        raise ValueError("from_arrays: target_names and standardise_targets are for task='regression'")
    if regression and classes is not None:
        raise ValueError("from_arrays: classes is for classification; name regression targets with target_names")
    (x_train, y_train), (x_test, y_test) = (_split(split, x, y, regression) for split, x, y in
                                            (("train", x_train, y_train), ("test", x_test, y_test)))
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"from_arrays: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    extra: dict = {}
    if regression:
        classes = ()
        y_train, y_test, extra = _regression_fields(y_train, y_test, target_names, standardise_targets)
    else:
        classes = _class_names(y_train, y_test, classes)
    mean, std = (0.0,), (1.0,)
    if image_shape is not None:
        image_shape = tuple(int(d) for d in image_shape)
        if int(np.prod(image_shape)) != x_train.shape[1]:
            raise ValueError(f"from_arrays: image_shape {image_shape} holds {int(np.prod(image_shape))} pixels, the "
                             f"rows {x_train.shape[1]} features")
    if normalise:
        x_train, x_test, mean, std = _normalised(x_train, x_test, image_shape)
    if no_test:
        x_test, y_test = x_test[:0], y_test[:0]
    return Dataset(name, x_train, y_train, x_test, y_test, classes, f"arrays given to from_arrays ({name})",
                   image_shape, mean, std, task=task, **extra)


def _split(split: str, x, y, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split's samples as float32 rows and its targets, each checked."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"from_arrays: x_{split} must have shape (N, ...) with N >= 1, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise TypeError(f"from_arrays: x_{split} must be real numbers, got {x.dtype}")
    y = _regression_targets(split, y, len(x)) if regression else _class_labels(split, y, len(x))
    return x.reshape(len(x), -1).astype(np.float32), y


def _class_names(y_train: np.ndarray, y_test: np.ndarray, classes) -> tuple[str, ...]:
    """The class names (``classes``, else the indices the labels reach), every label checked against them."""
    num_classes = int(max(y_train.max(), y_test.max())) + 1 if classes is None else len(classes)
    for split, y in (("train", y_train), ("test", y_test)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"from_arrays: y_{split} holds labels outside [0, {num_classes - 1}]")
    return tuple(str(c) for c in (classes if classes is not None else range(num_classes)))


def _normalised(x_train: np.ndarray, x_test: np.ndarray, image_shape: tuple[int, ...] | None):
    """Both splits scaled by the training split's mean and std (per channel for colour images), and those."""
    channels = image_shape[-1] if image_shape is not None and len(image_shape) == 3 else 1
    per_channel = x_train.reshape(len(x_train), -1, channels)
    mean = tuple(float(m) for m in per_channel.mean(axis=(0, 1)))
    std = tuple(max(float(s), 1e-12) for s in per_channel.std(axis=(0, 1)))
    x_train, x_test = ((x.reshape(len(x), -1, channels) - np.asarray(mean, np.float32))
                       / np.asarray(std, np.float32) for x in (x_train, x_test))
    x_train = np.ascontiguousarray(x_train.reshape(len(x_train), -1), dtype=np.float32)
    x_test = np.ascontiguousarray(x_test.reshape(len(x_test), -1), dtype=np.float32)
    return x_train, x_test, mean, std


def _class_labels(split: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of labels
    if y.shape != (n,):
        raise ValueError(f"from_arrays: y_{split} must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"from_arrays: y_{split} must hold integer class indices, got {y.dtype}")
    return y.astype(np.int64)


def _regression_targets(split: str, y: np.ndarray, n: int) -> np.ndarray:
    """``y`` as float64 ``(n, k)``: float64 so that standardising loses nothing before the cast to float32."""
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[0] != n or y.shape[1] == 0:
        raise ValueError(f"from_arrays: y_{split} must have shape ({n},) or ({n}, k) with k >= 1, got {y.shape}")
    # bool is not np.integer in NumPy, so True/False targets are refused along with strings and complex
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"from_arrays: y_{split} must hold real-valued regression targets, got {y.dtype}")
    y = y.astype(np.float64)
    _check_finite(split, y)
    return y


def _check_finite(split: str, y: np.ndarray) -> None:
    bad = ~np.isfinite(y)
    if bad.any():
        sample, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"from_arrays: y_{split} sample {sample} (target {column}) is {y[sample, column]}; "
                         "regression targets must be finite")


def _regression_fields(y_train: np.ndarray, y_test: np.ndarray, target_names: Sequence[str] | None,
                       standardise: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """The float32 targets of both splits and the Dataset fields that describe them."""
    k = y_train.shape[1]
    if y_test.shape[1] != k:
        raise ValueError(f"from_arrays: y_train has {k} target(s), y_test {y_test.shape[1]}")
    if target_names is None:
        names = ("y",) if k == 1 else tuple(f"y{i}" for i in range(k))
    else:
        names = (target_names,) if isinstance(target_names, str) else tuple(str(t) for t in target_names)
        if len(names) != k:
            raise ValueError(f"from_arrays: {len(names)} target_names {names} for {k} target column(s)")
    mean, std = np.zeros(k), np.ones(k)
    if standardise:
        # the training split's statistics for both splits: the test split must not inform its own scaling
        with np.errstate(over="ignore", invalid="ignore"):  # huge targets: the check below names them
            mean, std = y_train.mean(axis=0), np.maximum(y_train.std(axis=0), 1e-12)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError(f"from_arrays: y_train is too large to standardise in float64 (mean {mean.tolist()}, "
                             f"std {std.tolist()})")
    stored = []
    for split, y in (("train", y_train), ("test", y_test)):
        scaled = (y - mean) / std
        # checked before the cast, which would otherwise turn a too-large value into inf with only a warning
        too_large = np.abs(scaled) > np.finfo(np.float32).max
        if too_large.any():
            sample, column = (int(i) for i in np.argwhere(too_large)[0])
            raise ValueError(f"from_arrays: y_{split} sample {sample} (target {column}) is {scaled[sample, column]}"
                             f"{' after standardising' if standardise else ''}, too large for float32")
        stored.append(np.ascontiguousarray(scaled, dtype=np.float32))
    fields = {"target_names": names, "target_mean": tuple(float(m) for m in mean),
              "target_std": tuple(float(s) for s in std)}
    return stored[0], stored[1], fields
