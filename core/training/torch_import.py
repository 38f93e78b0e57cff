"""``softgrad.from_torch``: a torch MLP as a softgrad model that predicts what it predicts.

    model = softgrad.from_torch(torch.nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)))
    model = softgrad.from_torch(net.state_dict(), activation="tanh")
    model = softgrad.from_torch("model.safetensors")       # a file softgrad.export (or safetensors) wrote

A convolutional ``nn.Sequential`` (``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, activations, ``Flatten``,
``Linear``) becomes a :class:`~softgrad.training.convnet.ConvNet` (:mod:`.torch_import_conv`). An MLP
is ``Linear`` layers with one kind of activation between them (``ReLU``, ``Tanh``, ``Sigmoid``,
``LeakyReLU``); a leading ``Flatten`` and ``Dropout``/``Identity`` (nothing, when predicting) may come
with them, and a final ``Softmax``/``LogSoftmax`` or ``Sigmoid`` names the head. The imported model takes
the input the network takes (for a softgrad export, the raw samples). A file that :func:`softgrad.export`
wrote restores the model as trained: its data's input scaling and a regressor's target scale are taken back
out of the first and last layers, and the data record, loss and labels come back with it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from softgrad import datasets
from softgrad.training.convnet import ConvNet
from softgrad.training.exporting import EXPORT_FORMAT, TORCH_ACTIVATIONS
from softgrad.training.models import MLP
from softgrad.training.portable import input_affine
from softgrad.training.safetensors_io import SafetensorsError, read_header, read_tensors
from softgrad.training.torch_import_conv import (
    build_convnet,
    is_convolutional,
    restore_convnet,
    sequential_spec,
)

#: the loss a softgrad model is given for each head, so predict answers in the task's terms
HEAD_LOSSES = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy_with_logits", "identity": "mse_loss"}

#: the only slope softgrad's leaky_relu has (its checkpoints record the activation by name alone)
LEAKY_SLOPE = 0.01

_MODULE_ACTIVATIONS = {torch_name: name for name, torch_name in TORCH_ACTIVATIONS.items()}


@dataclass(frozen=True)
class Spec:
    """What the weights alone do not say: the hidden activation, the head, names and shape of the input."""

    activation: str | None = None
    negative_slope: float | None = None
    head: str | None = None
    labels: tuple[str, ...] | None = None
    input_shape: tuple[int, ...] | None = None
    dtype: str | None = None


def from_torch(network: Any, *, activation: str | None = None, head: str | None = None,
               labels: list[str] | None = None, input_shape: tuple[int, ...] | None = None,
               dtype: Any = None, backend: str = "numpy") -> MLP | ConvNet:
    """A softgrad :class:`MLP` from a torch MLP: an ``nn.Sequential``, a state dict, or a safetensors file's path;
    a :class:`ConvNet` from an ``nn.Sequential`` of ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``ReLU``/``Tanh``/
    ``Sigmoid``, ``Flatten`` and ``Linear`` (``input_shape`` required: ``(H, W)`` or ``(H, W, C)``, channels
    last), or from a file softgrad exported a ConvNet to.

    ``activation`` (``relu``, ``tanh``, ``sigmoid``, ``leaky_relu``): needed for a state dict, whose
    tensors do not say it (a file's metadata may). ``head``: ``softmax`` (a classifier, the default for two
    or more outputs), ``sigmoid`` (one logit of a binary task) or ``identity`` (a regressor). ``labels``
    names the classes (``(negative, positive)`` for a sigmoid head) or the regressor's targets;
    ``input_shape`` the image each input row flattens. ``dtype``: float32 or float64, default the weights'.
    """
    try:
        dtype = None if dtype is None else np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"from_torch: dtype {dtype!r} is not float32 or float64") from None
    spec = Spec(activation, None, head, None if labels is None else tuple(str(x) for x in labels),
                None if input_shape is None else tuple(int(d) for d in input_shape), dtype)
    if isinstance(network, (str, os.PathLike)):
        return _from_file(Path(network), spec, backend)
    if isinstance(network, Mapping):
        _refuse_conv_state(((key, np.shape(value)) for key, value in network.items()), "the state dict")
        weights, biases = _state_dict_layers(network)
        return build_model(weights, biases, spec, backend)
    module_type = type(network)
    if module_type.__module__.startswith("torch.nn") or hasattr(network, "named_children"):
        if is_convolutional(network):
            return _convnet(network, spec, backend)
        weights, biases, found = _sequential_layers(network)
        return build_model(weights, biases, _merge(spec, found, "the network"), backend)
    raise TypeError(f"from_torch: expected an nn.Sequential, a state dict or a .safetensors path, got "
                    f"{module_type.__name__}")


def _refuse_conv_state(shapes, where: str) -> None:
    """A state dict holding a convolution's 4-D weight does not say the strides, padding and pooling between
    its tensors: one line saying to pass the module instead."""
    for key, shape in shapes:
        if len(shape) == 4:
            raise ValueError(f"from_torch: {where} holds {key!r} of shape {tuple(shape)}, a convolution's "
                             "weight, and does not say the strides, padding and pooling between the layers: load it "
                             "into its nn.Sequential and pass the module (with input_shape=)")


def _convnet(network: Any, spec: Spec, backend: str) -> ConvNet:
    """A ConvNet of an ``nn.Sequential`` of Conv2d, pooling, activations, Flatten and Linear layers."""
    if spec.activation is not None:
        raise ValueError("from_torch: activation= names an MLP's one activation; a convolutional network's are its "
                         "modules")
    layers, params, names, found_head = sequential_spec(network, _host)
    head = spec.head or found_head or "softmax"
    outputs = int(params[-1].shape[0])
    if head != "softmax" or outputs < 2:
        raise ValueError(f"from_torch: a convolutional network imports as a classifier (head='softmax', 2 or more "
                         f"outputs); this one has head={head!r} and {outputs} output(s)")
    dtype = spec.dtype or ("float64" if params[0].dtype == np.float64 else "float32")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"from_torch: dtype {dtype!r} is not float32 or float64")
    model = build_convnet(layers, params, names, spec.input_shape, dtype, backend)
    model.loss = HEAD_LOSSES[head]
    model.trained_on = _record([model.num_features, outputs], head, spec)
    return model


def _host(value: Any, name: str) -> np.ndarray:
    """A tensor (torch, or anything NumPy reads) as a float64 host array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: it is exact in float32
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(f"from_torch: tensor {name!r} is {array.dtype}, not floating point")
    if not np.isfinite(array).all():
        raise ValueError(f"from_torch: tensor {name!r} holds NaN or infinite values")
    return array


def layer_keys(shapes: Mapping[str, tuple[int, ...]], *, in_order: bool = False) -> list[tuple[str, str | None]]:
    """``(weight key, bias key or None)`` per Linear layer, in the network's order, from a state dict's keys and
    shapes (``0.weight``, ``net.2.bias``, ...); checked: weights ``(out, in)``, biases ``(out,)``, each layer
    taking what the one before gives. The order is the keys' own where ``in_order`` (torch's ``state_dict()``
    lists the modules as registered), else the layers' names in natural order (a file's header has none)."""
    layers: dict[str, dict[str, str]] = {}
    for key in shapes:
        prefix, dot, kind = key.rpartition(".")
        if not dot or kind not in ("weight", "bias"):
            raise ValueError(f"from_torch: {key!r} is no Linear layer's weight or bias; an MLP's state dict holds "
                             "only <layer>.weight and <layer>.bias")
        layers.setdefault(prefix, {})[kind] = key
    if not layers:
        raise ValueError("from_torch: the state dict holds no layers")

    def order(prefix: str) -> tuple:  # natural order: layer 10 after layer 2
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.]", prefix))

    keys = []
    previous = None
    for prefix in (list(layers) if in_order else sorted(layers, key=order)):
        weight, bias = layers[prefix].get("weight"), layers[prefix].get("bias")
        if weight is None:
            raise ValueError(f"from_torch: layer {prefix!r} has a bias but no weight")
        shape = tuple(shapes[weight])
        if len(shape) != 2:
            raise ValueError(f"from_torch: {weight!r} has shape {shape}; a Linear layer's weight is (out, in)")
        if bias is not None and tuple(shapes[bias]) != (shape[0],):
            raise ValueError(f"from_torch: {bias!r} has shape {tuple(shapes[bias])}; {weight!r} {shape} needs "
                             f"({shape[0]},)")
        if previous is not None and shape[1] != previous[1]:
            raise ValueError(f"from_torch: {weight!r} takes {shape[1]} inputs but {previous[0]!r} gives "
                             f"{previous[1]}")
        previous = (weight, shape[0])
        keys.append((weight, bias))
    return keys


def _state_dict_layers(state: Mapping) -> tuple[list[np.ndarray], list[np.ndarray]]:
    shapes = {str(k): tuple(np.shape(v)) for k, v in state.items()}
    weights, biases = [], []
    for weight, bias in layer_keys(shapes, in_order=True):
        w = _host(state[weight], weight)
        weights.append(w)
        biases.append(_host(state[bias], bias) if bias is not None else np.zeros(w.shape[0], dtype=w.dtype))
    return weights, biases


def _sequential_layers(network: Any) -> tuple[list[np.ndarray], list[np.ndarray], Spec]:
    """The Linear layers of an ``nn.Sequential``, and the activation and head its other modules say."""
    weights, biases, kinds, slopes, head = [], [], set(), set(), None
    children = list(network.named_children())
    for position, (name, module) in enumerate(children):
        kind = type(module).__name__
        if head is not None:
            raise ValueError(f"from_torch: module {name} ({kind}) follows the head {head}; an MLP ends there")
        if kind == "Linear":
            weights.append(_host(module.weight, f"{name}.weight"))
            bias = module.bias
            biases.append(_host(bias, f"{name}.bias") if bias is not None
                          else np.zeros(module.weight.shape[0], dtype=weights[-1].dtype))
        elif kind in _MODULE_ACTIVATIONS and not _after_last_linear(children, position):
            kinds.add(_MODULE_ACTIVATIONS[kind])
            if kind == "LeakyReLU":
                slopes.add(float(module.negative_slope))
        elif kind in ("Softmax", "LogSoftmax", "Sigmoid") and _after_last_linear(children, position):
            head = "sigmoid" if kind == "Sigmoid" else "softmax"
        elif kind in ("Identity", "Dropout") or (kind == "Flatten" and not weights):
            continue
        elif kind in _MODULE_ACTIVATIONS:
            raise ValueError(f"from_torch: module {name} ({kind}) follows the last Linear; softgrad's MLP ends in "
                             "logits (a final Softmax, LogSoftmax or Sigmoid may name the head)")
        else:
            raise ValueError(f"from_torch: module {name} ({kind}) is not supported; an MLP holds Linear layers "
                             f"with one activation between them ({', '.join(_MODULE_ACTIVATIONS)})")
    if not weights:
        raise ValueError("from_torch: the network holds no Linear layer")
    if len(kinds) > 1:
        raise ValueError(f"from_torch: the network mixes activations ({', '.join(sorted(kinds))}); softgrad's MLP "
                         "uses one kind between all its layers")
    _check_alternation(children)
    shapes = {f"{i}.weight": w.shape for i, w in enumerate(weights)}
    layer_keys({**shapes, **{f"{i}.bias": b.shape for i, b in enumerate(biases)}})
    activation = next(iter(kinds)) if kinds else None
    return weights, biases, Spec(activation, next(iter(slopes)) if slopes else None, head)


def _after_last_linear(children: list, position: int) -> bool:
    return not any(type(m).__name__ == "Linear" for _, m in children[position + 1:])


def _check_alternation(children: list) -> None:
    """One activation between every two Linear layers: two in a row would be one affine map softgrad has no
    layer for, two activations in a row another network."""
    previous = None
    for name, module in children:
        kind = type(module).__name__
        if kind in ("Identity", "Dropout", "Flatten"):
            continue
        current = "linear" if kind == "Linear" else "activation"
        if previous is None and current == "activation":
            raise ValueError(f"from_torch: module {name} ({kind}) comes before the first Linear; an MLP begins "
                             "with one")
        if current == previous == "linear":
            raise ValueError(f"from_torch: Linear {name} follows a Linear with no activation between them")
        if current == previous == "activation":
            raise ValueError(f"from_torch: module {name} ({kind}) follows another activation")
        previous = current


def _merge(given: Spec, found: Spec, where: str) -> Spec:
    """``given`` (the caller's) filled in from ``found`` (the network's or the file's); a conflict is an error."""
    values = {}
    for field in Spec.__dataclass_fields__:
        mine, theirs = getattr(given, field), getattr(found, field)
        if mine is not None and theirs is not None and field in ("activation", "head") and mine != theirs:
            raise ValueError(f"from_torch: {field}={mine!r}, but {where} says {theirs!r}")
        values[field] = mine if mine is not None else theirs
    return Spec(**values)


def build_model(weights: list[np.ndarray], biases: list[np.ndarray], spec: Spec, backend: str = "numpy") -> MLP:
    """The MLP of torch-layout layers ``(out, in)`` and the ``spec``, its record naming its (raw) input."""
    widths = [int(weights[0].shape[1]), *(int(w.shape[0]) for w in weights)]
    activation = spec.activation
    if activation is None:
        if len(weights) > 1:
            raise ValueError("from_torch: the activation between the layers is not known: give activation= "
                             f"({', '.join(TORCH_ACTIVATIONS)})")
        activation = "relu"  # one layer has none; any name will do
    if activation not in TORCH_ACTIVATIONS:
        raise ValueError(f"from_torch: activation {activation!r} is not one of {', '.join(TORCH_ACTIVATIONS)}")
    if activation == "leaky_relu" and spec.negative_slope is not None and len(weights) > 1 \
            and not math.isclose(spec.negative_slope, LEAKY_SLOPE, rel_tol=1e-6):
        raise ValueError(f"from_torch: LeakyReLU's negative_slope is {spec.negative_slope:g}; softgrad's leaky_relu "
                         f"has {LEAKY_SLOPE:g}")
    head = spec.head or ("softmax" if widths[-1] > 1 else None)
    if head not in HEAD_LOSSES:
        raise ValueError(f"from_torch: give head= for a network of {widths[-1]} output: 'sigmoid' (a binary "
                         "classifier's logit) or 'identity' (a regressor)" if head is None else
                         f"from_torch: head {head!r} is not one of {', '.join(HEAD_LOSSES)}")
    if head == "sigmoid" and widths[-1] != 1:
        raise ValueError(f"from_torch: a sigmoid head takes one logit; the network gives {widths[-1]}")
    dtype = spec.dtype or ("float64" if weights[0].dtype == np.float64 else "float32")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"from_torch: dtype {dtype!r} is not float32 or float64")
    params = [p for w, b in zip(weights, biases) for p in (np.asarray(w, dtype=np.float64).T, b)]
    config = {"widths": widths, "activation": activation, "seed": 0, "dtype": dtype}
    model = MLP.from_config(config, params, backend)
    model.loss = HEAD_LOSSES[head]
    model.trained_on = _record(widths, head, spec)
    return model


def _record(widths: list[int], head: str, spec: Spec) -> datasets.DataRecord:
    """A record of raw input (no scaling) and the outputs' names, so ``softgrad predict`` can name them."""
    features, outputs = widths[0], widths[-1]
    default = {"softmax": tuple(str(i) for i in range(outputs)), "sigmoid": ("0", "1"),
               "identity": tuple(f"y{i}" for i in range(outputs))}[head]
    labels = spec.labels if spec.labels is not None else default
    expected = {"softmax": outputs, "sigmoid": 2, "identity": outputs}[head]
    if len(labels) != expected:
        raise ValueError(f"from_torch: {len(labels)} labels for a {head} head of {outputs} output(s); give {expected}")
    shape = spec.input_shape
    if shape is not None and math.prod(shape) != features:
        raise ValueError(f"from_torch: input_shape {shape} holds {math.prod(shape)} values; the network takes "
                         f"{features}")
    task = "regression" if head == "identity" else "classification"
    return datasets.DataRecord("imported network", task, features, () if task == "regression" else labels,
                               labels if task == "regression" else (), shape, datasets.InputScaling())


# ---- safetensors files ------------------------------------------------------------------------


def _from_file(path: Path, spec: Spec, backend: str) -> MLP:
    if not path.is_file():
        raise FileNotFoundError(f"from_torch: no file at {path}")
    if path.suffix.lower() in (".pt", ".pth", ".bin"):
        raise ValueError(f"from_torch: {path} is a pickle torch.save wrote; softgrad reads .safetensors files. Pass "
                         "torch.load(path, weights_only=True) (the state dict) instead")
    try:
        header = read_header(path)
        meta = header.metadata
        own = _own_metadata(path, meta)
        if own is not None and isinstance(own.get("model"), dict) and own["model"].get("kind") == "convnet":
            return restore_convnet(path, header, own, backend)
        _refuse_conv_state(((name, entry.shape) for name, entry in header.tensors.items()), str(path))
        keys = layer_keys({name: entry.shape for name, entry in header.tensors.items()})
        _check_declared_widths(path, meta, header, keys)  # before any tensor's data is read
        tensors = read_tensors(header, [k for layer in keys for k in layer if k is not None])
    except ValueError as error:
        message = str(error).removeprefix("from_torch: ")
        raise SafetensorsError(message if str(path) in message else f"{path}: {message}") from None
    weights = [tensors[w] for w, _ in keys]
    biases = [tensors[b] if b is not None else np.zeros(tensors[w].shape[0]) for w, b in keys]
    own = _own_metadata(path, meta)
    found = _file_spec(path, meta)
    if own is not None:  # softgrad's export: the spec is the export's, the record comes back with it
        return _restore(path, weights, biases, _merge(spec, found, str(path)), own, backend)
    return build_model(weights, biases, _merge(spec, found, str(path)), backend)


def _check_declared_widths(path: Path, meta: dict, header, keys: list) -> None:
    if "widths" not in meta:
        return
    try:
        widths = json.loads(meta["widths"])
    except ValueError:
        widths = None
    actual = [header.tensors[keys[0][0]].shape[1], *(header.tensors[w].shape[0] for w, _ in keys)]
    if widths != actual:
        raise SafetensorsError(f"{path}: its metadata declares layer widths {meta['widths']}, its tensors have "
                               f"{actual}")


def _file_spec(path: Path, meta: dict) -> Spec:
    """What the file's metadata says of the network (nothing, for a file written without it)."""
    def parsed(key: str):
        try:
            return json.loads(meta[key]) if key in meta else None
        except ValueError:
            raise SafetensorsError(f"{path}: its metadata {key!r} is not JSON: {meta[key][:80]!r}") from None

    labels, shape = parsed("labels"), parsed("input_shape")
    slope = parsed("negative_slope")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise SafetensorsError(f"{path}: its metadata labels {labels!r} are not a list of strings")
    if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise SafetensorsError(f"{path}: its metadata input_shape {shape!r} is not a list of sizes")
    if slope is not None and not isinstance(slope, (int, float)):
        raise SafetensorsError(f"{path}: its metadata negative_slope {slope!r} is not a number")
    return Spec(meta.get("activation"), slope, meta.get("head"), None if labels is None else tuple(labels),
                None if shape is None else tuple(shape), meta.get("dtype"))


def _own_metadata(path: Path, meta: dict) -> dict | None:
    if "softgrad" not in meta:
        return None
    try:
        own = json.loads(meta["softgrad"])
    except ValueError:
        raise SafetensorsError(f"{path}: its softgrad metadata is not JSON") from None
    if not isinstance(own, dict) or own.get("export_format") != EXPORT_FORMAT:
        raise SafetensorsError(f"{path}: its softgrad metadata is not of the format {EXPORT_FORMAT!r}")
    return own


def _restore(path: Path, weights: list[np.ndarray], biases: list[np.ndarray], spec: Spec, own: dict,
             backend: str) -> MLP:
    """softgrad's own export as the model that was exported: the folded input scaling and target scale
    taken back out of the weights (in float64), the data record, loss and target scale restored."""
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    biases = [np.asarray(b, dtype=np.float64) for b in biases]
    record = None
    if own.get("data") is not None:
        try:
            record = datasets.DataRecord.from_json(own["data"])
        except ValueError as error:
            raise SafetensorsError(f"{path}: {error}") from None
        if record.num_features != weights[0].shape[1]:
            raise SafetensorsError(f"{path}: its data record has {record.num_features} features, its first layer "
                                   f"takes {weights[0].shape[1]}")
        scale, shift = input_affine(record.scaling, weights[0].shape[1])
        weights[0] = weights[0] / scale[None, :]
        biases[0] = biases[0] - weights[0] @ shift
    mean, std = _target_scale(path, own, weights[-1].shape[0])
    if spec.head == "identity" and std is not None:
        weights[-1] = weights[-1] / std[:, None]
        biases[-1] = (biases[-1] - mean) / std
    model = build_model(weights, biases, spec, backend)
    loss = own.get("loss")
    if isinstance(loss, str):
        model.loss = loss
    if std is not None:
        model.target_mean, model.target_std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if record is not None:
        model.trained_on = record
    return model


def _target_scale(path: Path, own: dict, outputs: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    mean, std = own.get("target_mean"), own.get("target_std")
    if std is None:
        return None, None
    values = []
    for name, value in (("target_mean", mean if mean is not None else [0.0] * len(std)), ("target_std", std)):
        if (not isinstance(value, list) or len(value) not in (1, outputs)
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
            raise SafetensorsError(f"{path}: its {name} {value!r} is not {outputs} finite number(s)")
        values.append(np.broadcast_to(np.asarray(value, dtype=np.float64), (outputs,)).copy())
    if not (values[1] > 0).all():
        raise SafetensorsError(f"{path}: its target_std {std!r} must be > 0")
    return values[0], values[1]


__all__ = ["HEAD_LOSSES", "LEAKY_SLOPE", "Spec", "build_model", "from_torch", "layer_keys"]
