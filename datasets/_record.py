"""What a checkpoint records of a model's data (:class:`DataRecord`), and the recipe that loads it again."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import softgrad.datasets  # the package, not ._dataset (which imports this module): Dataset, and load
from softgrad.datasets._catalogue import FILE_RECIPE, IMAGE_SETS, NAMES, TASKS
from softgrad.datasets._scaling import InputScaling


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
        """The data set's name as :func:`load` and ``--dataset`` know it (``"mnist"``), else the given name (a
        user's file: its stem)."""
        named = self.recipe is not None and self.recipe["name"] != FILE_RECIPE
        return str(self.recipe["name"]) if named else self.name

    def describe(self) -> str:
        """One phrase: the data set and its task, for messages."""
        what = (f"{len(self.classes)} classes" if self.task == "classification"
                else f"{len(self.target_names)} target(s)")
        binary = self.recipe.get("binary") if self.recipe is not None else None
        return (f"{self.dataset}{f' (--binary {binary})' if binary is not None else ''}: "
                f"{self.num_features} features, {what}")

    def load(self, root: str | os.PathLike | None = None, download: bool = False) -> softgrad.datasets.Dataset:
        """The data set again (``root`` instead of the recorded one where given); a ValueError for arrays
        given by hand, which no loader can make."""
        if self.recipe is None:
            raise ValueError(f"{self.name!r} was made from arrays given by hand (datasets.from_arrays), which "
                             "cannot be loaded again")
        recipe = self.recipe  # softgrad.datasets.load, so that a caller who patched it is heard
        return softgrad.datasets.load(recipe["name"], root=root if root is not None else recipe.get("root"),
                            download=download, binary=recipe.get("binary"), **dict(recipe.get("options") or {}))

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
        if recipe is not None and (not isinstance(recipe, Mapping) or recipe.get("name") not in (*NAMES, FILE_RECIPE)
                                   or not isinstance(recipe.get("options") or {}, Mapping)
                                   or not isinstance(recipe.get("root"), (str, type(None)))):
            raise ValueError(f"its data record's recipe {recipe!r} names no data set softgrad can load")
        try:
            scaling = InputScaling.from_json(value.get("scaling"), features)
        except ValueError as error:
            raise ValueError(f"its data record: {error}") from None
        return cls(name, task, features, names["classes"], names["target_names"], shape, scaling,
                   None if recipe is None else dict(recipe))


def json_value(value):
    """``value`` as JSON holds it (NumPy scalars as Python numbers, sequences as lists), or TypeError."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v) for v in value]
    json.dumps(value)
    return value


def recipe(name: str, root, options: dict) -> dict | None:
    """The arguments that load ``name`` again (root made absolute, so another folder finds it); None where
    an option cannot be recorded."""
    try:
        options = {str(k): json_value(v) for k, v in options.items()}
    except (TypeError, ValueError):
        return None
    uses_root = name in IMAGE_SETS and root is not None
    return {"name": name, "binary": None, "options": options,
            "root": str(Path(root).resolve()) if uses_root else None}
