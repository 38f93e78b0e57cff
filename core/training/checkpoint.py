"""Checkpoints: model, optimizer state and history in one ``.npz``, no pickle.

Written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash never leaves a half-written checkpoint. Arrays are stored as NumPy
arrays, so a checkpoint written on one backend loads on any other.

Format ``softgrad-checkpoint-2`` stores any optimizer's state by name and
field: the metadata names the optimizer and describes each field of its state
(a number, ``None``, one array or a tuple of arrays), and the arrays are
stored as ``state.<field>`` or ``state.<field>.<i>``. Checkpoints in the
first format (``softgrad-checkpoint-1``: SGD only, ``momentum_<i>`` arrays)
still load and resume exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.base.files import atomic_write
from core.base.optim import get_optimizer
from core.base.optim.sgd import SGDState
from core.base.protocol import Backend
from core.training.models import MLP

FORMAT = "softgrad-checkpoint-2"
FORMAT_V1 = "softgrad-checkpoint-1"


def _encode_state(be: Backend, state: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The state's fields as JSON, its arrays added to ``arrays`` under ``state.<field>[.<i>]``."""
    fields: dict[str, Any] = {}
    for name, value in zip(type(state)._fields, state):
        if value is None or isinstance(value, (bool, int, float)):
            fields[name] = {"kind": "value", "value": value}
        elif isinstance(value, (tuple, list)):
            present = []
            for i, item in enumerate(value):
                if item is not None:
                    arrays[f"state.{name}.{i}"] = be.to_numpy(item)
                present.append(item is not None)
            fields[name] = {"kind": "arrays", "present": present}
        else:
            arrays[f"state.{name}"] = be.to_numpy(value)
            fields[name] = {"kind": "array"}
    return fields


def _decode_state(state_type: type, fields: dict[str, Any], archive) -> Any:
    values = {}
    for name in state_type._fields:
        field = fields[name]
        if field["kind"] == "value":
            values[name] = field["value"]
        elif field["kind"] == "arrays":
            values[name] = tuple(archive[f"state.{name}.{i}"] if present else None
                                 for i, present in enumerate(field["present"]))
        elif field["kind"] == "array":
            values[name] = archive[f"state.{name}"]
        else:
            raise ValueError(f"state field {name!r} has an unknown kind {field['kind']!r}")
    return state_type(**values)


def _state_to(be: Backend, state: Any) -> Any:
    """The state's host arrays moved to ``be``."""
    def move(value):
        if isinstance(value, np.ndarray):
            return be.asarray(value)
        if isinstance(value, tuple):
            return tuple(move(item) for item in value)
        return value

    return type(state)(*(move(value) for value in state))


def save(path: str | os.PathLike, model: MLP, state: Any, history: list[dict], settings: dict,
         optimizer: str = "sgd") -> None:
    """Write ``model``, the optimizer ``state`` (a NamedTuple of ``optimizer``), history and settings."""
    be = model.be
    arrays: dict[str, np.ndarray] = {f"param_{i}": be.to_numpy(p) for i, p in enumerate(model.params)}
    meta = {"format": FORMAT, "model": model.config(), "history": history, "settings": settings,
            "backend": be.name,
            "optimizer": {"name": optimizer, "state": _encode_state(be, state, arrays)}}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _read(path: Path) -> tuple[dict, list[np.ndarray], Any, str]:
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        count = len([k for k in archive.files if k.startswith("param_")])
        params = [archive[f"param_{i}"] for i in range(count)]
        if meta.get("format") == FORMAT_V1:
            buffers = (tuple(archive[f"momentum_{i}"] for i in range(count)) if "momentum_0" in archive.files
                       else None)
            return meta, params, SGDState(step=int(meta["step"]), momentum_buffers=buffers), "sgd"
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        name = meta["optimizer"]["name"]
        state_type = get_optimizer(name).state_type
        return meta, params, _decode_state(state_type, meta["optimizer"]["state"], archive), name


def load(path: str | os.PathLike, backend: Backend | str = "numpy") -> tuple[MLP, Any, list[dict], dict]:
    """``(model, optimizer_state, history, settings)`` with the arrays on ``backend``.

    ``settings`` holds ``"optimizer"``, the name of the optimizer whose state this is.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        meta, params, state, optimizer = _read(path)
        config, history, settings = meta["model"], list(meta["history"]), dict(meta["settings"])
    except (ValueError, KeyError, TypeError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a softgrad checkpoint or is damaged: {error!r}") from None
    settings.setdefault("optimizer", optimizer)
    model = MLP.from_config(config, params, backend)
    return model, _state_to(model.be, state), history, settings


def move_state(state: Any, source: Backend, target: Backend) -> Any:
    """An optimizer state with its arrays copied from backend ``source`` to ``target``."""
    if source is target:
        return state

    def host(value):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, tuple):
            return tuple(host(item) for item in value)
        return np.array(source.to_numpy(value))

    return _state_to(target, type(state)(*(host(value) for value in state)))
