"""A trained ConvNet as a network any framework can run: raw pixels in, logits out.

The convolutional counterpart of :mod:`softgrad.training.portable`. A :class:`PortableConvNet` is the one
description the exporters (safetensors for ``torch.nn.Sequential``, ONNX) write and the importer reads back:
a tuple of layers in torch's layouts (``Conv2d`` weights ``(out, in / groups, kH, kW)``, ``Linear`` weights
``(out, in)``), NCHW throughout, flattened in ``(C, H, W)`` order as ``torch.flatten(x, 1)`` does.

What softgrad does around the model is accounted for as the MLP's export accounts for it:

- the data set's input scaling (``raw / raw_scale``, then ``(x - mean) / std`` per channel: an affine map
  ``x = raw * scale[c] + shift[c]``) is folded into the first convolution where that is exact, which is when
  it pads nothing (every tap then sees a real pixel). A padded first convolution sees zeros at the border
  *after* the scaling, which no fold reproduces; there the scaling stays a layer of its own, an
  :class:`Affine`, which torch runs as ``Conv2d(C, C, 1, groups=C)`` and ONNX as ``Mul`` and ``Add``;
- the HWC images of the data sets (``(32, 32, 3)``, flattened channels fastest) become NCHW: the ONNX graph
  takes softgrad's flat rows and reshapes and transposes them itself; the torch module takes ``(N, C, H, W)``
  (a row reshaped to ``(H, W, C)`` and permuted ``(2, 0, 1)``), as torch's own image code does.

The folding is done in float64; the exported network's dtype is the model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from softgrad.datasets import DataRecord, InputScaling
from softgrad.training.convnet import ConvNet, image_chw, plan_layers
from softgrad.training.portable import head_of

#: the hidden activations a ConvNet layer spec names, and torch's modules for them
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _pair(value) -> tuple[int, int]:
    """An int or an (int, int) as a pair, as torch's ``_pair`` reads a size."""
    if isinstance(value, (tuple, list)):
        first, second = value
        return int(first), int(second)
    return int(value), int(value)


def _code(value: tuple[int, int]) -> str:
    """A pair as torch code writes it: ``2`` where both are equal, else ``(2, 3)``."""
    return str(value[0]) if value[0] == value[1] else str(tuple(value))


@dataclass(frozen=True)
class Affine:
    """The input scaling as a layer: ``x * scale[c] + shift[c]`` per channel (float64 ``(C,)`` each)."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Conv:
    """A ``Conv2d``: ``weight`` ``(out, in / groups, kH, kW)``, ``bias`` ``(out,)``, float64."""

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True)
class Pool:
    """A ``MaxPool2d`` (``kind == "max"``) or an ``AvgPool2d`` (``"avg"``, zero padding counted, as torch's)."""

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Activation:
    name: str  # a key of ACTIVATIONS


@dataclass(frozen=True)
class Flatten:
    """``torch.flatten(x, 1)``: NCHW maps to rows in ``(C, H, W)`` order."""


@dataclass(frozen=True)
class Dense:
    """A ``Linear``: ``weight`` ``(out, in)``, ``bias`` ``(out,)``, float64."""

    weight: np.ndarray
    bias: np.ndarray


Layer = Affine | Conv | Pool | Activation | Flatten | Dense


@dataclass(frozen=True)
class PortableConvNet:
    """A ConvNet with its preprocessing accounted for (see the module's doc).

    ``input_shape`` is the raw sample's shape as softgrad's data sets give it, ``(H, W)`` or ``(H, W, C)``;
    ``scaling`` says where the input scaling went: ``"folded"`` (into the first Conv), ``"layer"`` (the
    leading :class:`Affine`) or ``"none"`` (no data record: the network takes the rows the model takes).
    ``head`` and ``labels`` as :class:`~softgrad.training.portable.PortableNetwork`'s.
    """

    layers: tuple[Layer, ...]
    head: str
    labels: tuple[str, ...]
    input_shape: tuple[int, ...]
    dtype: str
    scaling: str

    @property
    def chw(self) -> tuple[int, int, int]:
        """The NCHW input's ``(C, H, W)``."""
        height, width, *channels = self.input_shape
        return (channels[0] if channels else 1), height, width

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_outputs(self) -> int:
        return int(next(layer for layer in reversed(self.layers) if isinstance(layer, Dense)).weight.shape[0])

    @property
    def weights(self) -> tuple[np.ndarray, ...]:
        """Every weight and bias, in order (what must be finite to export)."""
        return tuple(a for layer in self.layers if isinstance(layer, (Affine, Conv, Dense)) for a in
                     ((layer.scale, layer.shift) if isinstance(layer, Affine) else (layer.weight, layer.bias)))


def channel_affine(scaling: InputScaling, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)``, float64 ``(channels,)``: ``scaling.apply(raw) == raw * scale[c] + shift[c]``."""
    if scaling.feature_mean is not None:
        raise ValueError("export: the data's per-feature standardisation has no per-channel form for a "
                         "convolutional network's input; export the model with data=None and scale the input yourself")
    mean = np.asarray(scaling.mean, dtype=np.float64)
    std = np.asarray(scaling.std, dtype=np.float64)
    if len(mean) not in (1, channels):
        raise ValueError(f"export: the data's scaling has {len(mean)} channel means; the network takes {channels} "
                         "channels")
    scale = np.broadcast_to(1.0 / (scaling.raw_scale * std), (channels,)).copy()
    shift = np.broadcast_to(-mean / std, (channels,)).copy()
    return scale, shift


def _in_channel(conv: Conv) -> np.ndarray:
    """For each weight's ``(out, in / groups)`` index, the input channel it reads: ``(out, in / groups)`` ints."""
    out, per_group = conv.weight.shape[:2]
    group = np.arange(out) // (out // conv.groups)
    return group[:, None] * per_group + np.arange(per_group)[None, :]


def fold_affine(conv: Conv, scale: np.ndarray, shift: np.ndarray) -> Conv:
    """``conv(x * scale + shift)`` as one Conv of ``x`` (exact only where ``conv`` pads nothing)."""
    channel = _in_channel(conv)
    weight = conv.weight * scale[channel][:, :, None, None]
    bias = conv.bias + (conv.weight * shift[channel][:, :, None, None]).sum(axis=(1, 2, 3))
    return Conv(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def unfold_affine(conv: Conv, scale: np.ndarray, shift: np.ndarray) -> Conv:
    """The inverse of :func:`fold_affine`: the Conv that the scaled input went into."""
    channel = _in_channel(conv)
    weight = conv.weight / scale[channel][:, :, None, None]
    bias = conv.bias - (weight * shift[channel][:, :, None, None]).sum(axis=(1, 2, 3))
    return Conv(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def with_scaling(layers: list[Layer], record: DataRecord | None, channels: int) -> tuple[list[Layer], str]:
    """``layers`` taking raw input: the record's scaling folded into the first Conv or put before it."""
    if record is None:
        return layers, "none"
    scale, shift = channel_affine(record.scaling, channels)
    if np.array_equal(scale, np.ones(channels)) and not shift.any():
        return layers, "none"
    first = layers[0]
    if isinstance(first, Conv) and first.padding == (0, 0):
        return [fold_affine(first, scale, shift), *layers[1:]], "folded"
    return [Affine(scale, shift), *layers], "layer"


def torch_modules(network: PortableConvNet) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The ``nn.Sequential``'s modules in order: each as torch code (``Conv2d(1, 6, 5, padding=2)``) with its
    parameters (``{"weight": ..., "bias": ...}``, empty for a module that has none)."""
    modules = []
    for layer in network.layers:
        if isinstance(layer, Affine):
            c = len(layer.scale)
            modules.append((f"Conv2d({c}, {c}, 1, groups={c})",
                            {"weight": layer.scale.reshape(c, 1, 1, 1), "bias": layer.shift}))
        elif isinstance(layer, Conv):
            out, per_group, kh, kw = layer.weight.shape
            options = [f"{name}={_code(value)}" for name, value, default in
                       (("stride", layer.stride, (1, 1)), ("padding", layer.padding, (0, 0)),
                        ("dilation", layer.dilation, (1, 1))) if value != default]
            options += [f"groups={layer.groups}"] if layer.groups != 1 else []
            args = ", ".join([str(per_group * layer.groups), str(out), _code((kh, kw)), *options])
            modules.append((f"Conv2d({args})", {"weight": layer.weight, "bias": layer.bias}))
        elif isinstance(layer, Pool):
            name = "MaxPool2d" if layer.kind == "max" else "AvgPool2d"
            options = [f"stride={_code(layer.stride)}"] if layer.stride != layer.kernel else []
            options += [f"padding={_code(layer.padding)}"] if layer.padding != (0, 0) else []
            modules.append((f"{name}({', '.join([_code(layer.kernel), *options])})", {}))
        elif isinstance(layer, Activation):
            modules.append((f"{ACTIVATIONS[layer.name]}()", {}))
        elif isinstance(layer, Flatten):
            modules.append(("Flatten()", {}))
        else:
            modules.append((f"Linear({layer.weight.shape[1]}, {layer.weight.shape[0]})",
                            {"weight": layer.weight, "bias": layer.bias}))
    return modules


def _model_layers(model: ConvNet) -> list[Layer]:
    """The model's layers in torch's layouts, float64, from its plan (a dense layer with a ReLU fused into it
    is the two layers it stands for)."""
    host = [np.asarray(model.be.to_numpy(p), dtype=np.float64) for p in model.params]
    layers: list[Layer] = []
    for planned in plan_layers(model.layers, model.input_shape, model.num_classes):
        kind, args, i = planned.spec.kind, planned.spec.args, planned.param_index
        if kind == "conv":
            layers.append(Conv(host[i], host[i + 1], _pair(args.get("stride", 1)), _pair(args.get("padding", 0)),
                               _pair(args.get("dilation", 1)), int(args.get("groups", 1))))
        elif kind == "dense":
            layers.append(Dense(host[i].T.copy(), host[i + 1]))  # softgrad holds (in, out); torch (out, in)
            if planned.fused_relu:
                layers.append(Activation("relu"))
        elif kind in ("maxpool", "avgpool"):
            kernel = _pair(args["k"])
            layers.append(Pool(kind[:3], kernel, _pair(args["stride"]) if "stride" in args else kernel))
        elif kind == "flatten":
            layers.append(Flatten())
        else:
            layers.append(Activation(kind))
    return layers


def portable_convnet(model: ConvNet, record: DataRecord | None = None) -> PortableConvNet:
    """``model`` taking raw pixels: its data's input scaling folded in or put before it (see the module).

    ``record`` defaults to what the model was trained on (``model.trained_on``, which a checkpoint restores);
    without one the network takes the rows the model takes, and names its outputs by index.
    """
    record = record if record is not None else getattr(model, "trained_on", None)
    if record is not None and record.num_features != model.num_features:
        raise ValueError(f"export: the data ({record.describe()}) does not fit the model's input "
                         f"{tuple(model.input_shape)} ({model.num_features} values)")
    channels = image_chw(model.input_shape)[0]
    layers, scaling = with_scaling(_model_layers(model), record, channels)
    head = head_of(model)
    if head == "identity" and model.target_std is not None:
        raise ValueError("export: a convolutional regressor's target scale cannot be exported")
    if record is None:
        labels = {"softmax": tuple(str(i) for i in range(model.num_classes)), "sigmoid": ("0", "1")}.get(head, ())
    else:
        labels = record.classes if head != "identity" else record.target_names
        if head == "softmax" and len(labels) != model.num_classes:
            raise ValueError(f"export: the data names {len(labels)} classes; the model gives {model.num_classes}")
    return PortableConvNet(tuple(layers), head, tuple(labels), tuple(model.input_shape), model.dtype.name, scaling)


__all__ = ["ACTIVATIONS", "Activation", "Affine", "Conv", "Dense", "Flatten", "Layer", "Pool", "PortableConvNet",
           "channel_affine", "fold_affine", "portable_convnet", "torch_modules", "unfold_affine", "with_scaling"]
