"""The IDX files MNIST and Fashion-MNIST are distributed in, read with NumPy alone (gzip or not).

Reading them in memory leaves nothing on disk: no decompressed copy beside a
``.gz`` (so a read-only folder works, and a truncated archive can leave no
empty file behind), and no torch or torchvision is needed to read the shipped
MNIST subset.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

# magic numbers: 0x0000_08_nn, 08 = unsigned bytes, nn = number of dimensions
_UBYTE = 0x08


class IDXError(ValueError):
    """An IDX file that is truncated, corrupt or of another kind; the message names the file."""


def read_idx(path: Path, max_bytes: int = 1 << 31) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` or not), checked against its header."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                payload = handle.read(max_bytes + 1)
        else:
            payload = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise IDXError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    if len(payload) > max_bytes:
        raise IDXError(f"{path} holds more than {max_bytes:,} bytes; it is not an MNIST-style IDX file")
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != _UBYTE:
        raise IDXError(f"{path} is not an IDX file of unsigned bytes (its header is {payload[:4].hex() or 'empty'})")
    ndim = payload[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(payload) < header:
        raise IDXError(f"{path}: the header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape, dtype=np.int64))
    if len(payload) - header != size:
        raise IDXError(f"{path}: the header announces {shape} = {size:,} bytes of data, the file holds "
                       f"{len(payload) - header:,}; it is truncated or corrupt")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path | None:
    """``<folder>/<stem>``, else ``<folder>/<stem>.gz``; None when neither is there."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None
