"""What NumPy's errors on reading ``.npy`` and ``.npz`` files mean, for every reader of them (the CIFAR-10
arrays here; checkpoints and ``softgrad evaluate``'s inputs above), and the image sets' own ``.npz`` reads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import DatasetError


def npz_problem(error: Exception) -> str:
    """What NumPy's error on reading a ``.npy`` or ``.npz`` means for its user. NumPy's own advice for
    object arrays (load them with ``allow_pickle``) would run code from the file: it is never taken."""
    if "allow_pickle" in str(error) or "pickled" in str(error):
        return "it holds Python objects (pickled data), not plain arrays; softgrad never loads those"
    return f"{type(error).__name__}: {error}"


def read_npz(name: str, path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` file ``path`` (None: its one array, under its own key), each read
    whole; a DatasetError naming ``path`` for a damaged file, a missing key, or another number of arrays."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if keys is None and len(archive.files) != 1:
                raise DatasetError(f"{name}: {path} holds {len(archive.files)} arrays; expected one")
            absent = [k for k in keys or () if k not in archive.files]
            if absent:
                raise DatasetError(f"{name}: {path} has no array {', '.join(map(repr, absent))} (it holds "
                                   f"{', '.join(map(repr, archive.files)) or 'none'})")
            return {k: archive[k] for k in keys or archive.files}
    except DatasetError:
        raise
    except Exception as error:  # zipfile, zlib, NumPy: a truncated or damaged file
        raise DatasetError(f"{name}: cannot read {path}: {npz_problem(error)}") from None


def npz_length(name: str, path: Path) -> int:
    """The first dimension of the one array in the ``.npz`` file ``path``, read from its header alone (so
    several candidate files are told apart without reading their pixels)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".npy")]
            if len(members) != 1:
                raise DatasetError(f"{name}: {path} holds {len(members)} arrays; expected one")
            with archive.open(members[0]) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, _ = read_header(handle)
    except DatasetError:
        raise
    except Exception as error:  # not a zip, a damaged header
        raise DatasetError(f"{name}: cannot read {path}: {npz_problem(error)}") from None
    if not shape:
        raise DatasetError(f"{name}: {path} holds a single number, not an array of samples")
    return int(shape[0])
