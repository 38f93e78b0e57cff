"""Data sets as plain NumPy arrays: MNIST, Fashion-MNIST, CIFAR-10, synthetic, regression sets, your own.

``load(name)`` returns a :class:`Dataset` whose images are flattened float32
rows, normalised with the data set's usual mean and standard deviation, and
whose labels are int64. MNIST and Fashion-MNIST are read from their raw IDX
files with NumPy (``datasets/idx.py``; gzip or not, nothing is written beside
them); CIFAR-10 through torchvision, which also downloads any of them when
asked. Arrays are taken once, never through per-sample transforms.

With no ``root``, MNIST comes from the real subset shipped in this package
(the first 20,000 training images and the official 10,000-image test set);
:attr:`Dataset.source` says which data was used.

Regression (``Dataset.task == "regression"``): ``"toy-regression"`` (the
15-point toy set of the PyTorch tutorial, raw) and ``"diabetes"`` (Efron et
al. 2004, shipped in ``datasets/data/diabetes``, standardised); their targets
are float32 ``(N, k)``. :func:`binary` turns any classification set into a
one-class-against-the-rest task (``load(name, binary="0")``).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from softgrad.datasets.idx import IDXError, find_idx, read_idx

SHIPPED_MNIST = Path(__file__).resolve().parent / "data" / "mnist"
SHIPPED_DIABETES = Path(__file__).resolve().parent / "data" / "diabetes"
TASKS = ("classification", "regression")
PIP_VISION = "pip install 'softgrad[vision]'  (or: pip install torchvision)"


class DatasetError(RuntimeError):
    """Data files missing, corrupt or inconsistent; the message names the folder and the fix."""


def _floats(value, what: str, length: int | None = None, positive: bool = False) -> tuple[float, ...]:
    """``value`` (a recorded list) as a tuple of finite floats, or a ValueError naming ``what``."""
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{what} {value!r} is not a list of numbers")
    floats = tuple(float(v) for v in value)
    if length is not None and len(floats) != length:
        raise ValueError(f"{what} has {len(floats)} values for {length}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in floats):
        raise ValueError(f"{what} {list(floats)} must be finite{' and > 0' if positive else ''}")
    return floats


@dataclass(frozen=True)
class InputScaling:
    """How a data set turns raw samples into the rows a model trains on, so that new samples are scaled alike.

    A raw row is divided by ``raw_scale`` (``255.0`` for the image sets, whose raw pixels are 0..255;
    ``1.0`` for features), then normalised per channel, ``(x - mean) / std`` (the channel is the
    fastest-varying index of a flattened HWC image; one channel for grey images and features), then
    per feature, ``(x - feature_mean) / feature_std``, where a data set standardises its features
    (diabetes). The arithmetic is the loaders': float32 for pixels, float64 for standardised features,
    so a data set's own raw test rows become exactly its ``x_test``.
    """

    raw_scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None

    @property
    def pixels(self) -> bool:
        """Whether raw values are pixels in ``0..raw_scale`` (the image sets), not features of any range."""
        return self.raw_scale != 1.0

    def apply(self, raw, *, intensities: bool = False) -> np.ndarray:
        """Raw rows ``(N, features)`` as the normalised float32 rows a model takes.

        ``intensities=True``: the rows are already divided by ``raw_scale`` (an image file decoded to 0..1).
        """
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"InputScaling.apply: expected rows (N, features), got shape {raw.shape}")
        precise = self.feature_mean is not None  # diabetes(): float64 statistics applied in float64
        x = raw.astype(np.float64 if precise else np.float32)
        if self.raw_scale != 1.0 and not intensities:
            x = x / x.dtype.type(self.raw_scale)
        channels = len(self.mean)
        if self.mean != (0.0,) * channels or self.std != (1.0,) * channels:
            x = ((x.reshape(len(x), -1, channels) - np.asarray(self.mean, x.dtype))
                 / np.asarray(self.std, x.dtype)).reshape(len(x), -1)
        if precise:
            x = (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_json(self) -> dict:
        return {"raw_scale": self.raw_scale, "mean": list(self.mean), "std": list(self.std),
                "feature_mean": None if self.feature_mean is None else list(self.feature_mean),
                "feature_std": None if self.feature_std is None else list(self.feature_std)}

    @classmethod
    def from_json(cls, value, num_features: int) -> InputScaling:
        """The scaling a checkpoint recorded, checked against the model's ``num_features``; ValueError if malformed."""
        if not isinstance(value, Mapping):
            raise ValueError(f"the input scaling {value!r} is not a mapping")
        raw_scale = _floats([value.get("raw_scale")], "the raw scale", 1, positive=True)[0]
        mean = _floats(value.get("mean"), "the channel means")
        std = _floats(value.get("std"), "the channel stds", len(mean), positive=True)
        if num_features % len(mean):
            raise ValueError(f"{len(mean)} channels do not divide {num_features} features")
        feature_mean = feature_std = None
        if value.get("feature_mean") is not None or value.get("feature_std") is not None:
            feature_mean = _floats(value.get("feature_mean"), "the feature means", num_features)
            feature_std = _floats(value.get("feature_std"), "the feature stds", num_features, positive=True)
        return cls(raw_scale, mean, std, feature_mean, feature_std)


@dataclass(frozen=True)
class DataRecord:
    """What a model was trained on, as a checkpoint records it: enough to load the data set again and to
    scale and name new samples without it.

    ``recipe`` holds the arguments of :func:`load` that made the data (``name``, ``binary``, ``options``,
    ``root``); it is None for arrays given by hand (:func:`from_arrays`), which cannot be loaded again.
    """

    name: str
    task: str
    num_features: int
    classes: tuple[str, ...]
    target_names: tuple[str, ...]
    image_shape: tuple[int, ...] | None
    scaling: InputScaling
    recipe: Mapping | None = None

    @property
    def dataset(self) -> str:
        """The data set's name as :func:`load` and ``--dataset`` know it (``"mnist"``), else the given name."""
        return str(self.recipe["name"]) if self.recipe is not None else self.name

    def describe(self) -> str:
        """One phrase: the data set and its task, for messages."""
        what = (f"{len(self.classes)} classes" if self.task == "classification"
                else f"{len(self.target_names)} target(s)")
        binary = self.recipe.get("binary") if self.recipe is not None else None
        return (f"{self.dataset}{f' (--binary {binary})' if binary is not None else ''}: "
                f"{self.num_features} features, {what}")

    def load(self, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
        """The data set again (``root`` instead of the recorded one where given); a ValueError for arrays
        given by hand, which no loader can make."""
        if self.recipe is None:
            raise ValueError(f"{self.name!r} was made from arrays given by hand (datasets.from_arrays), which "
                             "cannot be loaded again")
        recipe = self.recipe
        return load(recipe["name"], root=root if root is not None else recipe.get("root"), download=download,
                    binary=recipe.get("binary"), **dict(recipe.get("options") or {}))

    def to_json(self) -> dict:
        return {"name": self.name, "task": self.task, "num_features": self.num_features,
                "classes": list(self.classes), "target_names": list(self.target_names),
                "image_shape": None if self.image_shape is None else list(self.image_shape),
                "scaling": self.scaling.to_json(), "recipe": None if self.recipe is None else dict(self.recipe)}

    @classmethod
    def from_json(cls, value) -> DataRecord:
        """The record a checkpoint holds, checked field by field; a ValueError naming the first bad one."""
        if not isinstance(value, Mapping):
            raise ValueError(f"its data record is a {type(value).__name__}, not a mapping")
        name, task, features = value.get("name"), value.get("task"), value.get("num_features")
        if not isinstance(name, str) or task not in TASKS:
            raise ValueError(f"its data record names {name!r} with task {task!r}")
        if not isinstance(features, int) or isinstance(features, bool) or features < 1:
            raise ValueError(f"its data record has {features!r} features")
        names = {}
        for key in ("classes", "target_names"):
            items = value.get(key)
            if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
                raise ValueError(f"its data record's {key} {items!r} are not a list of strings")
            names[key] = tuple(items)
        shape = value.get("image_shape")
        if shape is not None:
            if (not isinstance(shape, list) or len(shape) not in (2, 3)
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
                    or math.prod(shape) != features):
                raise ValueError(f"its data record's image shape {shape!r} does not hold {features} pixels")
            shape = tuple(shape)
        recipe = value.get("recipe")
        if recipe is not None and (not isinstance(recipe, Mapping) or recipe.get("name") not in NAMES
                                   or not isinstance(recipe.get("options") or {}, Mapping)
                                   or not isinstance(recipe.get("root"), (str, type(None)))):
            raise ValueError(f"its data record's recipe {recipe!r} names no data set softgrad can load")
        try:
            scaling = InputScaling.from_json(value.get("scaling"), features)
        except ValueError as error:
            raise ValueError(f"its data record: {error}") from None
        return cls(name, task, features, names["classes"], names["target_names"], shape, scaling,
                   None if recipe is None else dict(recipe))


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


# name -> (torchvision class, its folder under root, classes, mean, std, image shape)
_VISION = {
    "mnist": ("MNIST", "MNIST", tuple(str(d) for d in range(10)), (0.1307,), (0.3081,), (28, 28)),
    "fashion-mnist": (
        "FashionMNIST", "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"),
        (0.2860,), (0.3530,), (28, 28),
    ),
    "cifar10": (
        "CIFAR10", "cifar-10-batches-py",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (32, 32, 3),
    ),
}
REGRESSION_NAMES = ("toy-regression", "diabetes")
NAMES = (*_VISION, "synthetic", *REGRESSION_NAMES)


def default_root() -> Path:
    """``$SOFTGRAD_DATA``, else ``~/.cache/softgrad/data``: where downloads go."""
    return Path(os.environ.get("SOFTGRAD_DATA", Path.home() / ".cache" / "softgrad" / "data"))


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
    copy of the small real samples); ``download=True`` fetches missing files
    into the torchvision layout. For MNIST with neither the full files in
    ``root`` nor ``download``, the shipped subset is used.

    ``binary``: turn a classification set into a two-class task, as
    :func:`binary` does (``"even"``, ``"odd"``, ``"0"``, ``"0,6"``,
    ``[0, 6]``, ``"Sandal"``); a ``ValueError`` for regression sets.
    """
    if binary is not None and name in REGRESSION_NAMES:
        raise ValueError(f"load({name!r}, binary={binary!r}): {name} is a regression data set; a binary task "
                         f"needs a classification one ({', '.join(n for n in NAMES if n not in REGRESSION_NAMES)})")
    data = _load(name, root, download, options)
    data = dataclasses.replace(data, recipe=_recipe(name, root, options))
    return data if binary is None else _binary(data, binary)


def _json_value(value):
    """``value`` as JSON holds it (NumPy scalars as Python numbers, sequences as lists), or TypeError."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    json.dumps(value)
    return value


def _recipe(name: str, root, options: dict) -> dict | None:
    """The arguments that load ``name`` again (root made absolute, so another folder finds it); None where
    an option cannot be recorded."""
    try:
        options = {str(k): _json_value(v) for k, v in options.items()}
    except (TypeError, ValueError):
        return None
    uses_root = name in _VISION and root is not None
    return {"name": name, "binary": None, "options": options,
            "root": str(Path(root).resolve()) if uses_root else None}


def _load(name: str, root: str | os.PathLike | None, download: bool, options: dict) -> Dataset:
    if name == "synthetic":
        return synthetic(**options)
    if options:
        raise TypeError(f"load({name!r}): unexpected options {sorted(options)}")
    if name not in _VISION:
        if name == "toy-regression":
            return toy_regression()
        if name == "diabetes":
            return diabetes()
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    folder = Path(root) if root is not None else default_root()
    if name != "cifar10" and _has_all_idx(folder):  # the four IDX files right there, in no layout
        return _load_idx(name, folder, source=f"{name} IDX files in {folder}")
    if name == "cifar10" and list(folder.glob("train-images*.npz")):  # arrays saved with np.savez
        return _load_cifar_npz(folder)
    if name == "mnist" and not download and not _has_files(name, folder):
        if root is not None:
            raise _missing(name, folder)
        return _load_shipped_mnist()
    return _load_vision(name, folder, download, source=f"torchvision {_VISION[name][0]} in {folder}")


def _raw_folder(name: str, root: Path) -> Path:
    sub = _VISION[name][1]
    return root / sub if name == "cifar10" else root / sub / "raw"


def _has_files(name: str, root: Path) -> bool:
    raw = _raw_folder(name, root)
    if name == "cifar10":
        return raw.is_dir()
    return any((raw / f"{stem}-images-idx3-ubyte{ext}").is_file()
               for stem in ("train", "t10k") for ext in ("", ".gz"))


def _missing(name: str, root: Path) -> DatasetError:
    hint = " or leave root unset to use the 20,000-image MNIST subset shipped with softgrad" if name == "mnist" else ""
    return DatasetError(
        f"{name}: the data files are missing or corrupt in {_raw_folder(name, root)}; pass download=True "
        f"(--download on the command line) to fetch them with torchvision{hint}"
    )


def _torchvision_datasets():
    try:
        import torchvision.datasets
        import torchvision.datasets.utils
    except ImportError:
        raise DatasetError(f"reading image data sets needs torchvision, which is not installed: {PIP_VISION}") from None
    return torchvision.datasets


def _load_idx(name: str, raw: Path, source: str) -> Dataset:
    """MNIST or Fashion-MNIST from the raw IDX files in ``raw``, read with NumPy (never torchvision's
    processed ``.pt`` files, which it would unpickle)."""
    _, _, classes, mean, std, image_shape = _VISION[name]
    splits = []
    for train, stem in ((True, "train"), (False, "t10k")):
        arrays = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            path = find_idx(raw, f"{stem}-{kind}")
            if path is None:
                raise _missing(name, raw.parent.parent)
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
        splits.append(_normalise(name, images, labels.astype(np.int64), len(classes), mean, std, image_shape,
                                 train, raw.parent.parent))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test, classes, source, image_shape, mean, std, raw_scale=255.0)


def _load_vision(name: str, root: Path, download: bool, source: str) -> Dataset:
    if name != "cifar10":
        raw = _raw_folder(name, root)
        if download and not _has_all_idx(raw):
            _torchvision_download(name, root)
        return _load_idx(name, raw, source)
    if download and not _has_cifar_batches(root):
        _torchvision_download(name, root)  # fails fast and in one line offline (datasets/download.py)
    tv = _torchvision_datasets()
    cls_name, _, classes, mean, std, image_shape = _VISION[name]
    cls = getattr(tv, cls_name)
    splits = []
    for train in (True, False):
        try:
            data = cls(root=str(root), train=train, download=download)
            images = np.asarray(data.data)
            labels = np.asarray(data.targets, dtype=np.int64)
        except DatasetError:
            raise
        except Exception as error:  # torchvision: RuntimeError if missing, others if truncated
            if download:  # the network's error, not the advice to download
                raise DatasetError(f"{name}: downloading into {root} failed: {type(error).__name__}: "
                                   f"{error}") from None
            if not _has_files(name, root) or "not found" in str(error).lower():
                raise _missing(name, root) from None
            raise DatasetError(
                f"{name}: cannot read the {'training' if train else 'test'} files in "
                f"{_raw_folder(name, root)}: {type(error).__name__}: {error}. The files are truncated or "
                "corrupt; delete them and pass download=True (--download) to fetch them again"
            ) from None
        splits.append(_normalise(name, images, labels, len(classes), mean, std, image_shape, train, root))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test, classes, source, image_shape, mean, std, raw_scale=255.0)


def _normalise(name, images, labels, num_classes, mean, std, image_shape, train, root):
    split = "training" if train else "test"
    if images.shape[1:] != image_shape:
        raise DatasetError(f"{name}: {split} images in {root} have shape {images.shape[1:]}, expected {image_shape}")
    if len(labels) != len(images):
        raise DatasetError(
            f"{name}: the {split} files in {_raw_folder(name, root)} hold {len(images)} images but "
            f"{len(labels)} labels; the label file does not belong to the image file"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetError(
            f"{name}: {split} label {int(labels[bad])} (sample {bad}) in {_raw_folder(name, root)} is out of "
            f"range for {num_classes} classes; the label file is corrupt"
        )
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    channels = len(mean)
    if channels == 1:
        x = (x - np.float32(mean[0])) / np.float32(std[0])
    else:  # HWC, flattened: the channel is the fastest-varying index
        x = ((x.reshape(len(x), -1, channels) - np.asarray(mean, np.float32))
             / np.asarray(std, np.float32)).reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32), labels


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


def npz_problem(error: Exception) -> str:
    """What NumPy's error on reading a ``.npy`` or ``.npz`` means for its user. NumPy's own advice for
    object arrays (load them with ``allow_pickle``) would run code from the file: it is never taken."""
    if "allow_pickle" in str(error) or "pickled" in str(error):
        return "it holds Python objects (pickled data), not plain arrays; softgrad never loads those"
    return f"{type(error).__name__}: {error}"


def _load_cifar_npz(folder: Path) -> Dataset:
    """CIFAR-10 from ``train-images*.npz`` / ``train-labels*.npz`` (uint8 ``(N, 32, 32, 3)``, labels ``(N,)`` or
    ``(N, 1)``) and the same for ``test-``; without test files the last fifth of the training images is the test set."""
    _, _, classes, mean, std, image_shape = _VISION["cifar10"]
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
    parts = [_normalise("cifar10", images, labels, len(classes), mean, std, image_shape, split == "train", folder)
             for split, (images, labels) in splits.items()]
    (x_train, y_train), (x_test, y_test) = parts
    return Dataset("cifar10", x_train, y_train, x_test, y_test, classes,
                   f"CIFAR-10 arrays in {folder} ({'; '.join(notes)})", image_shape, mean, std, raw_scale=255.0)


def _has_all_idx(raw: Path) -> bool:
    return all(find_idx(raw, f"{stem}-{kind}") is not None for stem in ("train", "t10k")
               for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _torchvision_download(name: str, root: Path) -> None:
    """Fetch the missing files of ``name`` into ``root`` with torchvision (datasets/download.py): without a
    network, one line that says so and how to use a local copy, after seconds, and no empty folder left."""
    from softgrad.datasets.download import download, source_urls

    cls = getattr(_torchvision_datasets(), _VISION[name][0])

    def fetch() -> None:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)

    deepest = root if name == "cifar10" else _raw_folder(name, root)  # where torchvision puts the files
    download(name, fetch, source_urls(cls), root, deepest, DatasetError)


def _has_cifar_batches(root: Path) -> bool:
    """Every file of CIFAR-10's Python version in ``root`` (torchvision checks their MD5 sums as it loads)."""
    folder = _raw_folder("cifar10", root)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    return all((folder / n).is_file() for n in names)


def _load_shipped_mnist() -> Dataset:
    data = _load_idx("mnist", SHIPPED_MNIST, source="")
    source = (f"MNIST subset shipped with softgrad ({len(data.y_train):,} training images, the official "
              f"{len(data.y_test):,}-image test set)")
    return dataclasses.replace(data, source=source)


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


def synthetic(n_train: int = 10_000, n_test: int = 2_000, num_features: int = 784, num_classes: int = 10,
              seed: int = 0, separation: float = 3.0) -> Dataset:
    """A seeded Gaussian-blob data set of any size, dimension and class count.

    Each class is a unit-variance Gaussian around a random centre of norm
    ``separation``; the features are float32 and roughly standardised.
    """
    if min(n_train, n_test, num_features) < 1 or num_classes < 2:
        raise ValueError("synthetic: n_train, n_test, num_features must be >= 1 and num_classes >= 2")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, num_features))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(n):
        labels = rng.integers(0, num_classes, n)
        x = centres[labels] + rng.standard_normal((n, num_features))
        return x.astype(np.float32), labels.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test,
                   tuple(f"class {i}" for i in range(num_classes)),
                   f"synthetic blobs (seed {seed}, {n_train:,}+{n_test:,} samples, {num_features} features)")


def from_arrays(x_train, y_train, x_test, y_test, classes=None, name: str = "arrays", *,
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
    """
    if task not in TASKS:
        raise ValueError(f"from_arrays: task must be one of {', '.join(TASKS)}, got {task!r}")
    regression = task == "regression"
    if not regression and (target_names is not None or standardise_targets):
        raise ValueError("from_arrays: target_names and standardise_targets are for task='regression'")
    if regression and classes is not None:
        raise ValueError("from_arrays: classes is for classification; name regression targets with target_names")
    parts = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"from_arrays: x_{split} must have shape (N, ...) with N >= 1, got {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise TypeError(f"from_arrays: x_{split} must be real numbers, got {x.dtype}")
        y = _regression_targets(split, y, len(x)) if regression else _class_labels(split, y, len(x))
        parts.append((x.reshape(len(x), -1).astype(np.float32), y))
    (x_train, y_train), (x_test, y_test) = parts
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"from_arrays: train has {x_train.shape[1]} features, test {x_test.shape[1]}")
    extra: dict = {}
    if regression:
        classes = ()
        y_train, y_test, extra = _regression_fields(y_train, y_test, target_names, standardise_targets)
    else:
        num_classes = int(max(y_train.max(), y_test.max())) + 1 if classes is None else len(classes)
        for split, y in (("train", y_train), ("test", y_test)):
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(f"from_arrays: y_{split} holds labels outside [0, {num_classes - 1}]")
        classes = tuple(str(c) for c in (classes if classes is not None else range(num_classes)))
    mean, std = (0.0,), (1.0,)
    if image_shape is not None:
        image_shape = tuple(int(d) for d in image_shape)
        if int(np.prod(image_shape)) != x_train.shape[1]:
            raise ValueError(f"from_arrays: image_shape {image_shape} holds {int(np.prod(image_shape))} pixels, the "
                             f"rows {x_train.shape[1]} features")
    if normalise:
        channels = image_shape[-1] if image_shape is not None and len(image_shape) == 3 else 1
        per_channel = x_train.reshape(len(x_train), -1, channels)
        mean = tuple(float(m) for m in per_channel.mean(axis=(0, 1)))
        std = tuple(max(float(s), 1e-12) for s in per_channel.std(axis=(0, 1)))
        x_train, x_test = ((x.reshape(len(x), -1, channels) - np.asarray(mean, np.float32))
                           / np.asarray(std, np.float32) for x in (x_train, x_test))
        x_train = np.ascontiguousarray(x_train.reshape(len(x_train), -1), dtype=np.float32)
        x_test = np.ascontiguousarray(x_test.reshape(len(x_test), -1), dtype=np.float32)
    return Dataset(name, x_train, y_train, x_test, y_test, classes, f"arrays given to from_arrays ({name})",
                   image_shape, mean, std, task=task, **extra)


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


def _class_indices(data: Dataset, spec) -> list[int]:
    """The positive class indices that ``spec`` names (see :func:`binary`), checked against ``data.classes``."""
    classes = data.classes
    choices = (f"'even', 'odd', a class index 0..{len(classes) - 1}, a class name "
               f"({', '.join(repr(c) for c in classes)}), or a comma-separated list of them")

    def one(token) -> list[int]:
        if isinstance(token, (bool, np.bool_)):  # True is an int to Python, never meant as class 1
            raise ValueError(f"binary: {token!r} is not a class; choose {choices}")
        if isinstance(token, (int, np.integer)):
            if not 0 <= int(token) < len(classes):
                raise ValueError(f"binary: class index {int(token)} is out of range; choose {choices}")
            return [int(token)]
        if not isinstance(token, str):
            raise ValueError(f"binary: {token!r} is not a class; choose {choices}")
        word = token.strip()
        if word.lower() in ("even", "odd"):  # by class index, which for the digit sets is the digit itself
            return [i for i in range(len(classes)) if i % 2 == (word.lower() == "odd")]
        if word in classes:  # a name before an index: a set may name its classes "3", "5", ...
            return [classes.index(word)]
        if word.lstrip("-").isdecimal():
            return one(int(word))
        raise ValueError(f"binary: unknown class {word!r}; choose {choices}")

    if isinstance(spec, str):
        tokens = [t for t in spec.split(",") if t.strip()] if "," in spec else [spec]
    elif isinstance(spec, Sequence) or isinstance(spec, np.ndarray):
        tokens = list(spec)
    else:
        tokens = [spec]
    if not tokens or (len(tokens) == 1 and isinstance(tokens[0], str) and not tokens[0].strip()):
        raise ValueError(f"binary: no positive class given; choose {choices}")
    positive = sorted({i for token in tokens for i in one(token)})
    if not positive:
        raise ValueError(f"binary: {spec!r} names no class; choose {choices}")
    if len(positive) == len(classes):
        raise ValueError(f"binary: {spec!r} makes every class positive, which leaves no negative class; "
                         f"choose {choices}")
    return positive


def _binary(data: Dataset, positive) -> Dataset:
    if data.task != "classification":
        raise ValueError(f"binary: {data.name} is a {data.task} data set; a binary task needs a classification one")
    indices = _class_indices(data, positive)
    if isinstance(positive, str) and positive.strip().lower() in ("even", "odd"):
        label = positive.strip().lower()
        classes = ("odd" if label == "even" else "even", label)
        name = f"{data.name} ({classes[1]} vs {classes[0]})"
    else:
        label = " or ".join(data.classes[i] for i in indices)
        classes = (f"not {label}" if len(indices) == 1 else f"not ({label})", label)
        name = f"{data.name} ({label} vs rest)"
    named = ", ".join(f"{i} ({data.classes[i]!r})" for i in indices)
    source = (f"{data.source}; binary task: label 1 = class{'es' if len(indices) > 1 else ''} {named}, "
              f"label 0 = the other {data.num_classes - len(indices)} of {data.num_classes}")
    chosen = np.asarray(indices, dtype=np.int64)
    recipe = None
    if data.recipe is not None and data.recipe.get("binary") is None:  # a binary task of a binary task: no recipe
        try:
            recipe = {**data.recipe, "binary": _json_value(positive)}
        except (TypeError, ValueError):
            recipe = None
    return dataclasses.replace(
        data, name=name, classes=classes, source=source, recipe=recipe,
        y_train=np.isin(data.y_train, chosen).astype(np.int64), y_test=np.isin(data.y_test, chosen).astype(np.int64))


def binary(data: Dataset, positive: str | int | Sequence[str | int]) -> Dataset:
    """``data`` (a classification set) as a two-class task: label 1 for the ``positive`` classes, 0 for the rest.

    ``positive``: ``"even"`` or ``"odd"`` (by class index, so for MNIST the digits), a class index
    (``0``, ``"0"``), a class name (``"Sandal"``; a name is tried before an index), or several of them,
    comma-separated (``"0,6"``) or as a sequence (``[0, 6]``). Labels are int64 0/1; ``classes`` becomes
    ``("not 0", "0")`` (``("odd", "even")`` for ``"even"``); ``name`` and ``source`` say which classes
    are positive. Images, their shape and normalisation are kept, so pictures still work. An unknown
    name, an index out of range, no class or every class raises ``ValueError`` listing the choices.
    """
    return _binary(data, positive)


__all__ = ["DIABETES_FEATURES", "DataRecord", "Dataset", "DatasetError", "InputScaling", "NAMES", "REGRESSION_NAMES", "SHIPPED_DIABETES",
           "SHIPPED_MNIST", "TASKS", "binary", "diabetes", "from_arrays", "load", "synthetic", "toy_regression"]
