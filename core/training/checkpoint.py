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

The metadata's optional ``data`` entry (a :class:`datasets.DataRecord`) says
what the model was trained on: the data set and how to load it again, its
input scaling, classes or target names. Checkpoints without it (written
before it, or from data that is no Dataset) load as before; a reader that
does not know the entry ignores it, so the format's name is unchanged.

Loading trusts nothing in the file: every array's ``.npy`` header (shape and
dtype) is checked against the member's size and the model's shapes before
any of its data is read, and parameters and optimizer state must be finite.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from softgrad import datasets
from softgrad.numerics.files import atomic_write
from softgrad.numerics.optim import get_optimizer
from softgrad.numerics.optim.sgd import SGDState
from softgrad.numerics.protocol import Backend
from softgrad.training.convnet import ConvNet, model_from_config, param_shapes, plan_layers
from softgrad.training.models import MLP

Model = MLP | ConvNet

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


def save(path: str | os.PathLike, model: Model, state: Any, history: list[dict], settings: dict, *,
         optimizer: str = "sgd", data: Any = None) -> None:
    """Write ``model``, the optimizer ``state`` (a NamedTuple of ``optimizer``), history and settings.

    ``data``: the :class:`datasets.Dataset` the model is trained on (or its :class:`datasets.DataRecord`),
    recorded so that the checkpoint alone says how to evaluate the model and scale new samples; without
    it, what a loaded model recorded (``model.trained_on``) is kept.
    """
    be = model.be
    arrays: dict[str, np.ndarray] = {f"param_{i}": be.to_numpy(p) for i, p in enumerate(model.params)}
    record = data.record() if isinstance(data, datasets.Dataset) else data
    if record is None:
        record = getattr(model, "trained_on", None)
    meta = {"format": FORMAT, "model": model.config(), "history": history, "settings": settings,
            "backend": be.name,
            "task": {"loss": model.loss, "target_mean": model.target_mean, "target_std": model.target_std},
            "optimizer": {"name": optimizer, "state": _encode_state(be, state, arrays)}}
    if isinstance(record, datasets.DataRecord):
        meta["data"] = record.to_json()
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


class CheckpointError(ValueError):
    """A checkpoint that is damaged, crafted or malformed; the message names the file and the problem."""


_META_LIMIT = 64 << 20  # bytes of metadata (history and settings) a real checkpoint never approaches


def _header(archive, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape and dtype a ``.npy`` member declares and its header's length, read from the header alone."""
    with archive.zip.open(key) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 only names fields in UTF-8, which no checkpoint array has
            raise CheckpointError(f"array {key[:-4]!r} is in .npy version {version[0]}.{version[1]}, which no "
                                  "checkpoint uses")
        return tuple(shape), dtype, stream.tell()


def _member(archive, name: str, limit: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array ``name``, after checking from its member's size and its ``.npy`` header alone, before any
    data is read (NumPy allocates what the header declares first), that it holds what it declares, at
    most ``limit`` bytes, of ``shape`` where one is given, and no Python objects."""
    key = f"{name}.npy"
    if key not in archive.zip.namelist():
        raise CheckpointError(f"it has no array {name!r}")
    size = archive.zip.getinfo(key).file_size  # what reading the member can yield at most
    if size > limit + 4096:  # the .npy header is at most a few hundred bytes
        raise CheckpointError(f"array {name!r} would take {size:,} bytes where at most {limit:,} fit the model")
    declared_shape, dtype, header = _header(archive, key)
    if dtype.hasobject:
        raise CheckpointError(f"array {name!r} holds Python objects (pickled data), which no checkpoint holds and "
                              "softgrad never loads")
    declared = math.prod(declared_shape) * dtype.itemsize  # Python ints: no overflow for any declared shape
    if declared != size - header:
        raise CheckpointError(f"array {name!r} declares shape {declared_shape} of {dtype} ({declared:,} bytes) but "
                              f"its file holds {max(size - header, 0):,} bytes of data")
    if shape is not None and declared_shape != shape:
        raise CheckpointError(f"array {name!r} has shape {declared_shape}, the model needs {shape}")
    return archive[name]


def _float_array(value: np.ndarray, name: str, shape: tuple | None = None) -> np.ndarray:
    if value.dtype.kind != "f" or value.dtype.itemsize not in (4, 8):
        raise CheckpointError(f"array {name!r} is {value.dtype}, not float32 or float64")
    if shape is not None and value.shape != shape:
        raise CheckpointError(f"array {name!r} has shape {value.shape}, the model needs {shape}")
    if not np.isfinite(value).all():  # a diverged run's weights answer every input with class 0, silently
        count = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise CheckpointError(f"array {name!r} holds {count:,} NaN or infinite value{'s' if count > 1 else ''} "
                              f"(of {value.size:,}): the model it saved had diverged, or the file is damaged")
    return value


def _check_config(config: Any) -> list[tuple[int, ...]]:
    """The parameter shapes the model config describes, after checking its every field."""
    from softgrad.training.layers import ACTIVATIONS

    if not isinstance(config, dict):
        raise CheckpointError(f"its model description is a {type(config).__name__}, not a mapping")
    if "kind" in config:
        return _check_convnet_config(config)
    widths = config.get("widths")
    if (not isinstance(widths, list) or len(widths) < 2
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
        raise CheckpointError(f"its layer widths {widths!r} are not a list of at least two positive ints")
    if config.get("activation") not in ACTIVATIONS or config.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"its activation {config.get('activation')!r} or dtype {config.get('dtype')!r} "
                              "is unknown")
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:  # what np.random.default_rng takes
        raise CheckpointError(f"its model seed {seed!r} is not an int >= 0")
    return [shape for a, b in zip(widths, widths[1:]) for shape in ((a, b), (b,))]


def _check_convnet_config(config: dict) -> list[tuple[int, ...]]:
    """The parameter shapes a ConvNet's config describes (``"kind": "convnet"``), after checking its fields."""
    if config.get("kind") != "convnet":
        raise CheckpointError(f"its model kind {config.get('kind')!r} is unknown (this softgrad reads 'convnet' "
                              "and MLPs)")
    fields = {"layers", "input_shape", "num_classes", "seed", "dtype"}
    if set(config) != fields | {"kind"}:
        raise CheckpointError(f"its ConvNet description has fields {sorted(config)}, not {sorted(fields | {'kind'})}")
    shape, classes, seed = config["input_shape"], config["num_classes"], config["seed"]
    if (not isinstance(config["layers"], str) or not isinstance(shape, list) or len(shape) not in (2, 3)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
            or not isinstance(classes, int) or isinstance(classes, bool) or classes < 1
            or not isinstance(seed, int) or isinstance(seed, bool) or seed < 0
            or config["dtype"] not in ("float32", "float64")):
        raise CheckpointError(f"its ConvNet description {config!r} has a field of the wrong type or range")
    try:
        return param_shapes(plan_layers(config["layers"], shape, classes))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"its ConvNet layers do not describe a network: {error}") from None


def _read(path: Path) -> tuple[dict, list[np.ndarray], Any, str]:
    with np.load(path, allow_pickle=False) as archive:
        meta_array = _member(archive, "meta", _META_LIMIT, ())
        if meta_array.dtype.kind != "U":
            raise CheckpointError(f"its metadata is {meta_array.dtype}, not text")
        meta = json.loads(str(meta_array))
        if not isinstance(meta, dict):
            raise CheckpointError("its metadata is not a mapping")
        shapes = _check_config(meta.get("model"))
        limits = [math.prod(shape) * 8 for shape in shapes]  # float64 at most
        params = [_float_array(_member(archive, f"param_{i}", limit, shape), f"param_{i}", shape)
                  for i, (shape, limit) in enumerate(zip(shapes, limits))]
        if not isinstance(meta.get("history"), list) or not isinstance(meta.get("settings"), dict):
            raise CheckpointError("its history or settings are missing or of the wrong type")
        if meta.get("format") == FORMAT_V1:
            step = meta.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise CheckpointError(f"its step {step!r} is not an int >= 0")
            buffers = (tuple(_float_array(_member(archive, f"momentum_{i}", limit, shape), f"momentum_{i}", shape)
                             for i, (shape, limit) in enumerate(zip(shapes, limits)))
                       if "momentum_0.npy" in archive.zip.namelist() else None)
            return meta, params, SGDState(step=step, momentum_buffers=buffers), "sgd"
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"its format is {meta.get('format')!r}, not {FORMAT!r} or {FORMAT_V1!r}")
        optimizer = meta.get("optimizer")
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict):
            raise CheckpointError("its optimizer state is missing or of the wrong type")
        name = optimizer.get("name")
        try:
            state_type = get_optimizer(name).state_type
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        total = sum(limits)

        class Bounded:  # state arrays: real floats, none larger than all the parameters together
            def __getitem__(self, key):
                return _float_array(_member(archive, key, total), key)

        fields = optimizer["state"]
        if not isinstance(fields, dict) or set(fields) != set(state_type._fields) or not all(
                isinstance(f, dict) for f in fields.values()):
            raise CheckpointError(f"its {name} state has fields {sorted(fields)}, not {list(state_type._fields)}")
        state = _decode_state(state_type, fields, Bounded())
        _check_state(name, state, shapes)
        return meta, params, state, name


def _check_state(name: str, state: Any, shapes: list[tuple[int, ...]]) -> None:
    """A state of softgrad's optimizers (and of any other that keeps one array per parameter): a step count
    ``>= 0``, and per-parameter arrays of their parameters' shapes, one for each."""
    step = getattr(state, "step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"its step {step!r} is not an int >= 0")
    for field_name, value in zip(type(state)._fields, state):
        if not isinstance(value, tuple):
            continue
        if len(value) != len(shapes) or (name == "sgd" and any(b is None for b in value)):
            raise CheckpointError(f"its {name} state holds {len(value)} {field_name} for {len(shapes)} parameters")
        for i, (b, shape) in enumerate(zip(value, shapes)):
            if b is not None and b.shape != shape:
                raise CheckpointError(f"{field_name} {i} of its {name} state has shape {b.shape}, its parameter "
                                      f"{shape}")


def load(path: str | os.PathLike, backend: Backend | str = "numpy") -> tuple[Model, Any, list[dict], dict]:
    """``(model, optimizer_state, history, settings)`` with the arrays on ``backend``.

    ``settings`` holds ``"optimizer"``, the name of the optimizer whose state this is. The model's
    ``trained_on`` is the :class:`datasets.DataRecord` of the data it was trained on, None where the
    checkpoint does not record it. Raises :class:`CheckpointError` (a ``ValueError``) naming the file
    and the problem for a damaged, truncated, malformed or non-finite checkpoint, before allocating
    anything its metadata or its arrays' headers ask for.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # NumPy would try it as a pickle and advise allow_pickle
        raise CheckpointError(f"{path} is not a softgrad checkpoint or is damaged: it is not a NumPy .npz archive "
                              "(or it is truncated)")
    try:
        meta, params, state, optimizer = _read(path)
        config, history, settings = meta["model"], list(meta["history"]), dict(meta["settings"])
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not a usable softgrad checkpoint: {error}") from None
    except Exception as error:  # whatever zipfile, zlib, NumPy or JSON raise on a damaged file: it is damaged
        raise CheckpointError(f"{path} is not a softgrad checkpoint or is damaged: "
                              f"{datasets.npz_problem(error)}") from None
    settings.setdefault("optimizer", optimizer)
    model = model_from_config(config, params, backend)
    _restore_task(model, meta.get("task"), settings, path)
    model.trained_on = _data_record(meta.get("data"), model, path)
    return model, _state_to(model.be, state), history, settings


def _data_record(value: Any, model: Model, path: Path) -> datasets.DataRecord | None:
    """The checkpoint's record of its training data, checked against the model it trained."""
    if value is None:
        return None
    try:
        record = datasets.DataRecord.from_json(value)
    except ValueError as error:
        raise CheckpointError(f"{path} is not a usable softgrad checkpoint: {error}") from None
    inputs, outputs = model.num_features, model.num_outputs
    fits = record.num_features == inputs and (
        len(record.target_names) == outputs if record.task == "regression"
        else len(record.classes) <= outputs or (outputs == 1 and len(record.classes) == 2))
    if not fits:
        raise CheckpointError(f"{path} is not a usable softgrad checkpoint: it records training on "
                              f"{record.describe()}, which a model of {inputs} inputs and {outputs} outputs "
                              "cannot have been")
    shape = getattr(model, "input_shape", None)
    if shape is not None and record.image_shape is not None and tuple(record.image_shape) != tuple(shape):
        raise CheckpointError(f"{path} is not a usable softgrad checkpoint: it records training on images of shape "
                              f"{tuple(record.image_shape)}, its ConvNet takes {tuple(shape)}")
    return record


def _restore_task(model: Model, task: Any, settings: dict, path: Path) -> None:
    """The loss and target scale the model was trained with (checkpoints before them: the settings' loss)."""
    task = task if isinstance(task, dict) else {}
    loss = task.get("loss", settings.get("loss"))
    model.loss = loss if isinstance(loss, str) else None
    for name in ("target_mean", "target_std"):
        value = task.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  and math.isfinite(x) for x in value):
            raise CheckpointError(f"{path} is not a usable softgrad checkpoint: its {name} {value!r} is not a list "
                                  "of finite numbers")
        setattr(model, name, tuple(float(x) for x in value))


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
