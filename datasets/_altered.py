"""Copies of the image sets whose pixels are known to differ from the official ones, recognised by the SHA-256
of their training-image file, so that their source line says so whatever their folder is called."""

from __future__ import annotations

import hashlib
from pathlib import Path

from softgrad.datasets.idx import find_idx

#: the training-image file's SHA-256 -> what was done to its pixels (shared/data/README.md)
ALTERED_IDX = {
    "d376337aa2f48422e658144e3fdbc2c9cfca1774df3d9a3ed3d7c9485aeb9411":
        "Fashion-MNIST reconstructed to within 2 grey levels (fashion-mnist-approx: not the official pixels)",
}


def altered_note(folder: Path) -> str:
    """``"; <what was done>"`` for a known altered copy of MNIST or Fashion-MNIST in ``folder``, else ``""``.
    Hashing the 25 MB file takes a few hundredths of a second, next to seconds of reading it."""
    path = find_idx(folder, "train-images-idx3-ubyte")
    if path is None or path.stat().st_size > 64 << 20:  # the known copies are smaller: no need to read more
        return ""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"; {ALTERED_IDX[digest]}" if digest in ALTERED_IDX else ""
