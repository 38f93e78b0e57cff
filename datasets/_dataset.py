"""The :class:`Dataset`: train and test arrays with what is needed to read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from softgrad.datasets._catalogue import TASKS
from softgrad.datasets._record import DataRecord
from softgrad.datasets._scaling import InputScaling


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays with what is needed to read them.

    Classification (the default ``task``): ``y_*`` are ``(N,)`` int64 class indices into ``classes``.
    Regression: ``y_*`` are ``(N, k)`` float32 (always 2-D), ``classes`` is ``()``, ``target_names``
    names the k targets, and the stored targets are ``(raw - target_mean) / target_std`` per target
    (``(0.0,)`` / ``(1.0,)`` for raw targets), so ``raw = y * target_std + target_mean``.
    """

    name: str
    x_train: np.ndarray  # (N, D) float32, normalised
    y_train: np.ndarray  # (N,) int64; regression: (N, k) float32
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]  # () for regression
    source: str  # which files were read, for the run's log
    image_shape: tuple[int, ...] | None = None  # (28, 28) or (32, 32, 3); None for vectors
    mean: tuple[float, ...] = field(default=(0.0,))  # to undo the normalisation for pictures
    std: tuple[float, ...] = field(default=(1.0,))
    # New fields come last, with defaults, so positional construction written before them still works
    task: str = "classification"
    target_names: tuple[str, ...] = ()  # regression: one name per target column
    target_mean: tuple[float, ...] = field(default=(0.0,))  # regression: y_raw = y * target_std + target_mean
    target_std: tuple[float, ...] = field(default=(1.0,))
    # How raw samples become rows (see InputScaling): mean and std above, and these
    raw_scale: float = 1.0  # raw / raw_scale first: 255.0 for the image sets' 0..255 pixels
    feature_mean: tuple[float, ...] | None = None  # then (x - feature_mean) / feature_std (diabetes)
    feature_std: tuple[float, ...] | None = None
    # the arguments of load() that made it, so a checkpoint can load it again; None for arrays given by hand
    recipe: Mapping | None = None

    def __post_init__(self) -> None:
        # Only the label of the task is checked here: tests build Datasets with deliberately broken arrays
        # to check that the training loop names them, so the arrays are left to the loaders and the loop.
        if self.task not in TASKS:
            raise ValueError(f"Dataset {self.name!r}: task must be one of {', '.join(TASKS)}, got {self.task!r}")

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_outputs(self) -> int:
        """What a model predicts per sample: the class count, or the number of regression targets."""
        if self.task == "classification":
            return self.num_classes
        return int(self.y_train.shape[1]) if np.ndim(self.y_train) == 2 else 1

    @property
    def input_scaling(self) -> InputScaling:
        """How raw samples become this data set's rows: :meth:`scale_inputs` applies it."""
        return InputScaling(float(self.raw_scale), tuple(float(m) for m in self.mean),
                            tuple(float(s) for s in self.std),
                            None if self.feature_mean is None else tuple(float(m) for m in self.feature_mean),
                            None if self.feature_std is None else tuple(float(s) for s in self.feature_std))

    def scale_inputs(self, raw) -> np.ndarray:
        """Raw samples ``(N, features)`` (0..255 pixels for the image sets, the files' units for diabetes)
        scaled exactly as the training rows were: float32 rows a model trained on this data set takes."""
        return self.input_scaling.apply(raw)

    def record(self) -> DataRecord:
        """What a checkpoint records of the data a model was trained on (see :class:`DataRecord`)."""
        return DataRecord(self.name, self.task, self.num_features, tuple(str(c) for c in self.classes),
                          tuple(str(t) for t in self.target_names),
                          None if self.image_shape is None else tuple(int(d) for d in self.image_shape),
                          self.input_scaling, None if self.recipe is None else dict(self.recipe))

    def __repr__(self) -> str:
        what = (f"classes={self.num_classes}" if self.task == "classification"
                else f"task='regression', targets={self.num_outputs}")
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"{what}, source={self.source!r})")
