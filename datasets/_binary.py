"""A classification set as a two-class task, one class (or several) against the rest (:func:`binary`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._record import json_value


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


def binary(data: Dataset, positive: str | int | Sequence[str | int]) -> Dataset:
    """``data`` (a classification set) as a two-class task: label 1 for the ``positive`` classes, 0 for the rest.

    ``positive``: ``"even"`` or ``"odd"`` (by class index, so for MNIST the digits), a class index
    (``0``, ``"0"``), a class name (``"Sandal"``; a name is tried before an index), or several of them,
    comma-separated (``"0,6"``) or as a sequence (``[0, 6]``). Labels are int64 0/1; ``classes`` becomes
    ``("not 0", "0")`` (``("odd", "even")`` for ``"even"``); ``name`` and ``source`` say which classes
    are positive. Images, their shape and normalisation are kept, so pictures still work. An unknown
    name, an index out of range, no class or every class raises ``ValueError`` listing the choices.
    """
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
            recipe = {**data.recipe, "binary": json_value(positive)}
        except (TypeError, ValueError):
            recipe = None
    return dataclasses.replace(
        data, name=name, classes=classes, source=source, recipe=recipe,
        y_train=np.isin(data.y_train, chosen).astype(np.int64), y_test=np.isin(data.y_test, chosen).astype(np.int64))
