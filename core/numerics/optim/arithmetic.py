"""Arithmetic the optimizers share, evaluated as torch evaluates it (so a step matches ``torch.optim`` bit for bit)."""

from __future__ import annotations

import struct
from typing import Any

from softgrad.numerics import validation as v


def lerp(start: Any, end: Any, weight: float, dtype: Any) -> Any:
    """``torch.lerp(start, end, weight)`` with a scalar weight, evaluated as torch evaluates it.

    ``start + weight * (end - start)`` when ``|weight| < 0.5``, else
    ``end - (end - start) * (1 - weight)``: exact at both ends. Torch rounds
    the weight to the tensors' dtype before computing ``1 - weight``, so a
    float32 update does that too (for a weight near 1, such as ``1 - alpha``
    with a small alpha, ``1 - float32(w)`` and ``float32(1 - w)`` differ).
    """
    if v.dtype_name(dtype) == "float32":
        weight = struct.unpack("f", struct.pack("f", weight))[0]
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)
