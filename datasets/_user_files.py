"""Your own data from a file (:func:`load_file`): an ``.npz`` of arrays or a ``.csv`` table, checked, split,
standardised, with the recipe that loads exactly the same data again (or refuses a file that changed).

Every problem with the file is one ValueError naming the file and where in it: the key, the line, the column.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import FILE_RECIPE, TASKS
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._npz import npz_problem
from softgrad.datasets._scaling import InputScaling

DEFAULT_TEST_FRACTION = 0.2
#: integer-valued targets with at most this many distinct values are classes; more, or any fraction, are values
CLASS_LIMIT = 20
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class _Table:
    """What a file holds before it is split: raw float64 features and the targets as read (``columns``: a csv's
    feature column names; ``target``: its target column)."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    columns: tuple[str, ...] | None = None
    target: str | None = None


def load_file(path: str | os.PathLike, target: str | None = None, *, task: str | None = None,
              test_fraction: float | None = None, split_seed: int = 0, sha256: str | None = None,
              columns=None) -> Dataset:
    """The data in ``path`` as a :class:`Dataset`, its features standardised per column with the training
    split's mean and std (recorded, so raw rows are scaled alike later; a constant column's std is 1).

    ``.npz``: arrays ``x_train`` ``(N, ...)`` (flattened) and ``y_train``, optionally ``x_test`` and ``y_test``.
    ``.csv``: a header row naming the columns; ``target`` names the one to predict, every other must be numeric.

    ``task``: ``"classification"`` or ``"regression"``; None infers it from the targets: strings, and integers
    with at most :data:`CLASS_LIMIT` distinct values, are classes (named by their sorted values, as strings);
    other numbers are values, standardised with the training split's mean and std (``target_mean``/``target_std``).

    Without ``x_test``/``y_test`` the test split is ``test_fraction`` of the rows (default 0.2; 0: no test
    split), drawn by ``np.random.default_rng(split_seed)``. ``sha256`` (as the recipe records it) refuses a file
    whose contents changed; ``columns`` a csv whose feature columns differ from those.
    """
    path = Path(path).resolve()
    if task is not None and task not in TASKS:
        raise ValueError(f"{path}: the task must be one of {', '.join(TASKS)}, got {task!r}")
    if test_fraction is not None and (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
                                      or not 0 <= test_fraction < 1):
        raise ValueError(f"{path}: the test fraction must be a number in [0, 1), got {test_fraction!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{path} has changed since the run was trained on it (sha256 {digest[:12]}..., the run "
                         f"recorded {sha256[:12]}...): restore the file, or train a new run on it")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if target is not None:
            raise ValueError(f"{path}: an .npz file's targets are its y_train array; a target column (--target) "
                             "is for .csv files")
        table = _read_npz(path)
    elif suffix == ".csv":
        table = _read_csv(path, target)
    else:
        raise ValueError(f"{path}: softgrad reads your data from .npz files (x_train, y_train, optionally x_test, "
                         f"y_test) and .csv files with a header row, not {suffix or 'files without a suffix'}")
    if columns is not None and tuple(columns) != table.columns:
        raise ValueError(f"{path}: its feature columns are {table.columns}, the run recorded {tuple(columns)}")
    return _dataset(path, table, task, test_fraction, split_seed, digest)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_npz(path: Path) -> _Table:
    """The arrays of an ``.npz`` (never pickled objects), each checked and named in its errors."""
    try:
        with np.load(path, allow_pickle=False) as held:
            found = list(held.files)
            arrays = {key: np.asarray(held[key]) for key in NPZ_KEYS if key in found}
    except Exception as error:  # zipfile's BadZipFile, NumPy's ValueError and OSError: not an npz it can read
        raise ValueError(f"{path}: cannot read it as a NumPy .npz file ({npz_problem(error)})") from None
    keys = ["x_train", "y_train", *(["x_test", "y_test"] if "x_test" in found or "y_test" in found else [])]
    for key in keys:
        if key not in arrays:
            raise ValueError(f"{path} has no array {key!r}; it holds {', '.join(map(repr, found)) or 'no arrays'} "
                             "(softgrad reads x_train and y_train, and x_test with y_test where given)")
    x = _npz_features(path, "x_train", arrays["x_train"])
    y = _npz_targets(path, "y_train", arrays["y_train"], len(x))
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _npz_features(path, "x_test", arrays["x_test"])
        y_test = _npz_targets(path, "y_test", arrays["y_test"], len(x_test))
        if x_test.shape[1] != x.shape[1]:
            raise ValueError(f"{path}: x_train has {x.shape[1]} features per sample, x_test {x_test.shape[1]}")
        if (y.ndim, y.shape[1:]) != (y_test.ndim, y_test.shape[1:]):
            raise ValueError(f"{path}: y_train has shape {y.shape}, y_test {y_test.shape}: the targets differ")
    return _Table(x, y, x_test, y_test)


def _npz_features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{path}: {key} has shape {x.shape}; it must hold samples, (N, ...) with N >= 1")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise ValueError(f"{path}: {key} holds {x.dtype}, not real numbers")
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] == 0:
        raise ValueError(f"{path}: {key} has shape {x.shape}: no features")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"{path}: {key} sample {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    return x


def _npz_targets(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or len(y) != n:
        raise ValueError(f"{path}: {key} has shape {y.shape}; expected ({n},) or ({n}, k), one row per sample of "
                         f"x_{key[2:]}")
    if y.dtype.kind == "S":  # bytes: read as the text they hold
        try:
            y = y.astype(str)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: {key} holds bytes that are not text") from None
    if y.dtype.kind == "U" and y.ndim == 1:
        return y
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or np.iscomplexobj(y):
        raise ValueError(f"{path}: {key} holds {y.dtype}: targets must be real numbers, or strings naming classes")
    y = y.astype(np.float64)
    finite = np.isfinite(y.reshape(n, -1)).all(axis=1)
    if not finite.all():
        raise ValueError(f"{path}: {key} sample {int(np.flatnonzero(~finite)[0])} is NaN or inf")
    return y


def _read_csv(path: Path, target: str | None) -> _Table:
    """A csv table: the target column's cells as text and every other column as float64, checked cell by cell."""
    header, rows, lines = read_csv(path)
    if target is None:
        raise ValueError(f"{path}: name the column to predict (--target COLUMN); its columns: {', '.join(header)}")
    if target not in header:
        other = [d for d in (";", "\t", "|") if len(header) == 1 and d in header[0]]
        hint = (f" (its header is one column holding {other[0]!r}: softgrad reads comma-separated values)" if other
                else _hint(target, header))
        raise ValueError(f"{path} has no column {target!r}; its columns: {', '.join(header)}{hint}")
    t = header.index(target)
    columns = tuple(name for i, name in enumerate(header) if i != t)
    if not columns:
        raise ValueError(f"{path}: no feature columns besides the target {target!r}")
    x = _numbers(path, header, rows, lines, [i for i in range(len(header)) if i != t])
    y = np.asarray([row[t].strip() for row in rows], dtype=str)
    empty = np.flatnonzero(y == "")
    if len(empty):
        raise ValueError(f"{path} line {lines[empty[0]]}, column {target!r}: empty value; every row needs a target")
    return _Table(x, y, columns=columns, target=target)


def read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """A csv file's header (column names, stripped), its rows of cells and the line each row starts on; blank
    lines are skipped, ragged rows, a missing header, an empty or unreadable file are one ValueError each."""
    header, rows, lines = None, [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream, strict=True)
            line = 1
            for row in reader:
                if row:
                    if header is None:
                        header = _header(path, row, line)
                    elif len(row) != len(header):
                        raise ValueError(f"{path} line {line}: {len(row)} values, but the header names "
                                         f"{len(header)} columns")
                    else:
                        rows.append(row)
                        lines.append(line)
                line = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except csv.Error as error:
        raise ValueError(f"{path} line {reader.line_num}: not valid csv ({error})") from None
    if header is None:
        raise ValueError(f"{path} is empty: a csv needs a header row naming its columns, then one row per sample")
    if not rows:
        raise ValueError(f"{path} has a header but no rows of data")
    return header, rows, lines


def _header(path: Path, row: list[str], line: int) -> list[str]:
    names = [cell.strip() for cell in row]
    for i, name in enumerate(names):
        if not name:
            raise ValueError(f"{path} line {line}: column {i + 1} of the header has no name")
        if name in names[:i]:
            raise ValueError(f"{path} line {line}: the header names the column {name!r} twice")
    if all(_is_number(name) for name in names):
        raise ValueError(f"{path} line {line}: the first row holds numbers ({', '.join(names[:4])}...), not column "
                         "names; a csv needs a header row naming its columns")
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _hint(name: str, names: list[str]) -> str:
    folded = [n for n in names if n.lower() == name.lower()]
    close = folded or difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _numbers(path: Path, header: list[str], rows: list[list[str]], lines: list[int],
             indices: list[int]) -> np.ndarray:
    """The ``indices`` columns of ``rows`` as float64, or one line naming the first cell that is not a number."""
    x = np.empty((len(rows), len(indices)))
    for r, row in enumerate(rows):
        for c, i in enumerate(indices):
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                what = "empty value" if not cell else f"{cell!r} is not a number"
                raise ValueError(f"{path} line {lines[r]}, column {header[i]!r}: {what} (every column but the "
                                 "target must hold a number in every row)") from None
            if not math.isfinite(value):
                raise ValueError(f"{path} line {lines[r]}, column {header[i]!r}: {cell!r}; NaN and infinite "
                                 "values cannot be trained on (fill or drop the row)")
            x[r, c] = value
    return x


def _split(table: _Table, test_fraction: float | None, split_seed: int, path: Path):
    """Train and test rows (indices into the table), and the test fraction the recipe records (None where the
    file holds its own test split)."""
    n = len(table.x)
    if table.x_test is not None:
        if test_fraction is not None:
            raise ValueError(f"{path} holds its own test split (x_test, y_test); a test fraction "
                             "(--test-fraction) is for files without one")
        return np.arange(n), None, None
    fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
    n_test = max(1, round(n * fraction)) if fraction > 0 else 0
    if n - n_test < 1:
        raise ValueError(f"{path} has {n} row(s): too few to hold out a test fraction of {fraction:g} and train on "
                         "the rest")
    order = np.random.default_rng(split_seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test]), fraction


def _infer_task(path: Path, y: np.ndarray, task: str | None, target: str | None) -> str:
    what = f"the target column {target!r}" if target is not None else "y_train"
    if y.dtype.kind == "U":
        numbers = [_float_or_none(v) for v in y]
        if all(v is not None for v in numbers):  # a csv column of numbers, read as text
            return _infer_task(path, np.asarray(numbers), task, target)
        if task == "regression":
            bad = next(str(v) for v, f in zip(y, numbers) if f is None)
            raise ValueError(f"{path}: {what} holds {bad!r}, not a number: a regression needs numeric targets")
        return "classification"
    if task is not None:
        if task == "classification" and y.ndim == 2:
            raise ValueError(f"{path}: {what} has {y.shape[1]} columns; classification takes one label per sample")
        return task
    integers = y.ndim == 1 and bool(np.all(y == np.round(y)))
    return "classification" if integers and len(np.unique(y)) <= CLASS_LIMIT else "regression"


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label_names(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sorted distinct labels (numerically for numbers) and their names as text: ``2`` for 2.0, ``"cat"``."""
    unique = np.unique(values)
    if unique.dtype.kind == "U":
        return unique, tuple(str(u) for u in unique)
    return unique, tuple(str(int(u)) if float(u).is_integer() else repr(float(u)) for u in unique)


def _as_numbers(y: np.ndarray) -> np.ndarray:
    """Text targets that are all numbers (a csv column) as float64, so classes sort and name as numbers;
    anything else as it is."""
    if y.dtype.kind != "U":
        return y
    numbers = [_float_or_none(v) for v in y]
    return np.asarray(numbers) if all(v is not None for v in numbers) else y


def _dataset(path: Path, table: _Table, task: str | None, test_fraction: float | None, split_seed: int,
             digest: str) -> Dataset:
    train, test, fraction = _split(table, test_fraction, split_seed, path)
    if table.x_test is None:
        y_all = table.y
        raw = {"train": (table.x[train], table.y[train]), "test": (table.x[test], table.y[test])}
    else:
        y_all = np.concatenate([table.y, table.y_test]) if table.y.dtype.kind == table.y_test.dtype.kind \
            else np.concatenate([table.y.astype(str), table.y_test.astype(str)])
        raw = {"train": (table.x, table.y), "test": (table.x_test, table.y_test)}
    task = _infer_task(path, y_all, task, table.target)
    x_mean, x_std = raw["train"][0].mean(axis=0), raw["train"][0].std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)  # a constant column: centred, not divided by zero
    scaling = InputScaling(feature_mean=tuple(float(m) for m in x_mean), feature_std=tuple(float(s) for s in x_std))
    x_train, x_test = (scaling.apply(raw[split][0]) for split in ("train", "test"))
    fields: dict = {}
    if task == "classification":
        labels, classes = _label_names(_as_numbers(y_all))
        y_train, y_test = (np.searchsorted(labels, _as_numbers(raw[split][1])).astype(np.int64)
                           for split in ("train", "test"))
    else:
        classes = ()
        y_train, y_test, fields = _regression(table, raw["train"][1], raw["test"][1])
    n_train, n_test = len(x_train), len(x_test)
    split = ("the file's own test split" if fraction is None else "no test split" if n_test == 0 else
             f"test split: {fraction:g} of the rows drawn by default_rng({split_seed})")
    options = {"path": str(path), "target": table.target, "task": task, "test_fraction": fraction,
               "split_seed": split_seed, "sha256": digest,
               "columns": None if table.columns is None else list(table.columns)}
    return Dataset(path.stem, x_train, y_train, x_test, y_test, classes,
                   f"{path} ({n_train} train, {n_test} test; {split}; features standardised with the training "
                   "split's mean and std)", task=task, feature_mean=scaling.feature_mean,
                   feature_std=scaling.feature_std,
                   recipe={"name": FILE_RECIPE, "binary": None, "options": options, "root": None}, **fields)


def _regression(table: _Table, y_train: np.ndarray, y_test: np.ndarray):
    """Float32 ``(N, k)`` targets standardised with the training split's mean and std, and the fields saying so."""
    y_train, y_test = (np.asarray(_as_numbers(y), np.float64) for y in (y_train, y_test))
    y_train, y_test = (y.reshape(len(y), -1) for y in (y_train, y_test))
    mean, std = y_train.mean(axis=0), y_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    k = y_train.shape[1]
    names = (table.target,) if table.target is not None else ("y",) if k == 1 else tuple(f"y{i}" for i in range(k))
    scaled = [np.ascontiguousarray((y - mean) / std, dtype=np.float32) for y in (y_train, y_test)]
    return scaled[0], scaled[1], {"target_names": names, "target_mean": tuple(float(m) for m in mean),
                                  "target_std": tuple(float(s) for s in std)}


def csv_feature_rows(path: str | os.PathLike, columns, target: str | None = None) -> np.ndarray:
    """Raw feature rows ``(N, len(columns))`` float64 from a csv whose header names ``columns`` (in any order;
    the ``target`` column, where present, is ignored): new samples for a model trained on a csv file."""
    path = Path(path)
    header, rows, lines = read_csv(path)
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns and c != target]
    if missing or extra:
        raise ValueError(f"{path}: the model was trained on the columns {', '.join(columns)}"
                         f"{f'; this file lacks {missing}' if missing else ''}"
                         f"{f'; it has columns the model does not know: {extra}' if extra else ''}")
    return _numbers(path, header, rows, lines, [header.index(c) for c in columns])
