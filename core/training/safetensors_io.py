"""Networks as safetensors files: a writer, and a reader that trusts nothing in the file.

The format (https://huggingface.co/docs/safetensors): 8 bytes, the header's length ``n`` as a little-endian
unsigned 64-bit integer; ``n`` bytes of JSON mapping each tensor's name to its ``dtype``, ``shape`` and
``data_offsets`` ``[begin, end)`` into the data that follows, plus an optional ``__metadata__`` mapping of
strings to strings; then the tensors' bytes, little-endian, row-major, back to back.

The file a network is written to holds the tensors of ``torch.nn.Sequential(Linear, act, ..., Linear)``
under its own keys (``0.weight``, ``0.bias``, ``2.weight``, ...), ``(out, in)`` weights, so
``load_state_dict(..., strict=True)`` takes them as they are; the metadata says ``format: pt``, the
architecture and the input it expects (:func:`softgrad.training.exporting.network_metadata`).

Reading (:func:`read_header`, :func:`read_tensors`) bounds the header (:data:`HEADER_LIMIT`), checks every
tensor's dtype, shape and offsets against the file's size, and lets the caller check the shapes against
the architecture, all before any tensor's data is read; then every value must be finite.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from softgrad.numerics.files import atomic_write

#: the most header bytes a file may declare: an MLP's header (a few tensors and their metadata, the data
#: record with its per-feature scaling) takes kilobytes; a larger one is crafted or damaged
HEADER_LIMIT = 4 << 20

#: safetensors' dtype names for the floats a network may hold, and NumPy's little-endian dtypes for them
DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class SafetensorsError(ValueError):
    """A file that is no safetensors file, or a damaged or crafted one; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it: checked against the file, its data not yet read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # offset into the data, after the header
    end: int


@dataclass(frozen=True)
class Header:
    """A file's header: its tensors by name, its metadata, and where the data begins in the file."""

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """``tensors`` (float16/32/64 arrays) and ``metadata`` (strings) as a safetensors file, written atomically."""
    header: dict = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name, value in tensors.items():
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<")
        if dtype not in _NAMES:
            raise TypeError(f"tensor {name!r} is {array.dtype}; a network file holds float16, float32 or float64")
        blob = array.astype(dtype, copy=False).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the safetensors package writes it

    def write(handle) -> None:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for blob in blobs:
            handle.write(blob)

    atomic_write(path, write)


def read_header(path: str | os.PathLike) -> Header:
    """The file's header, checked: its size bounded, every entry a known float dtype whose shape fills its
    offsets exactly, the offsets covering the data back to back within the file. No tensor data is read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path} is not a safetensors file: it holds {len(prefix)} bytes, fewer than "
                                   "the 8 of the header's length")
        (length,) = struct.unpack("<Q", prefix)
        if length > HEADER_LIMIT:
            raise SafetensorsError(f"{path} is not a usable safetensors file: its header declares {length:,} bytes, "
                                   f"more than the {HEADER_LIMIT:,} any network's header needs (damaged or crafted)")
        if 8 + length > size:
            raise SafetensorsError(f"{path} is truncated or not a safetensors file: its header declares {length:,} "
                                   f"bytes, the file holds {size - 8:,} after the length")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise SafetensorsError(f"{path} is not a safetensors file: its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path} is not a safetensors file: its header is not a mapping")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: its __metadata__ is not a mapping of strings to strings")
    entries = {name: _entry(path, name, value) for name, value in header.items()}
    _check_coverage(path, entries, size - 8 - length)
    return Header(path, entries, metadata, 8 + length)


def _entry(path: Path, name: str, value) -> TensorEntry:
    if not isinstance(value, dict):
        raise SafetensorsError(f"{path}: tensor {name!r} is described by a {type(value).__name__}, not a mapping")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in DTYPES:
        raise SafetensorsError(f"{path}: tensor {name!r} is {dtype!r}; a network's weights are "
                               f"{', '.join(DTYPES)} (float16, float32, float64)")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise SafetensorsError(f"{path}: tensor {name!r} has shape {shape!r}, not a list of sizes >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets) \
            or offsets[0] > offsets[1]:
        raise SafetensorsError(f"{path}: tensor {name!r} has data offsets {offsets!r}, not [begin, end]")
    declared = math.prod(shape) * DTYPES[dtype].itemsize  # Python ints: no overflow for any declared shape
    if declared != offsets[1] - offsets[0]:
        raise SafetensorsError(f"{path}: tensor {name!r} declares shape {tuple(shape)} of {dtype} ({declared:,} "
                               f"bytes) but its offsets hold {offsets[1] - offsets[0]:,} bytes")
    return TensorEntry(name, DTYPES[dtype], tuple(shape), offsets[0], offsets[1])


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_coverage(path: Path, entries: dict[str, TensorEntry], data_size: int) -> None:
    """The tensors lie back to back from the data's start and end within the file (no overlap, no hole)."""
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise SafetensorsError(f"{path}: tensor {entry.name!r} begins at byte {entry.begin:,} of the data, "
                                   f"where {position:,} was expected (overlapping or scattered tensors)")
        position = entry.end
    if position > data_size:
        raise SafetensorsError(f"{path} is truncated: its tensors need {position:,} bytes of data, the file holds "
                               f"{data_size:,}")


def read_tensors(header: Header, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors ``names`` (their shapes already checked by the caller against the architecture), each
    read from its own bytes, native-endian, and checked finite."""
    tensors = {}
    with open(header.path, "rb") as handle:
        for name in names:
            entry = header.tensors[name]
            handle.seek(header.data_start + entry.begin)
            data = handle.read(entry.end - entry.begin)
            if len(data) != entry.end - entry.begin:
                raise SafetensorsError(f"{header.path} is truncated: tensor {name!r} is cut short")
            array = np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape).astype(entry.dtype.newbyteorder("="))
            if not np.isfinite(array).all():
                count = int(array.size - np.count_nonzero(np.isfinite(array)))
                raise SafetensorsError(f"{header.path}: tensor {name!r} holds {count:,} NaN or infinite value"
                                       f"{'s' if count > 1 else ''}; a network that diverged, or a damaged file")
            tensors[name] = array
    return tensors


__all__ = ["DTYPES", "HEADER_LIMIT", "Header", "SafetensorsError", "TensorEntry", "read_header", "read_tensors",
           "write_safetensors"]
