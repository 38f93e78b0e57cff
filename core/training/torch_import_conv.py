"""``softgrad.from_torch`` for convolutional networks: an ``nn.Sequential`` of ``Conv2d``, ``MaxPool2d``,
``AvgPool2d``, ``ReLU``/``Tanh``/``Sigmoid``, ``Flatten`` and ``Linear`` as a :class:`ConvNet`, and softgrad's own
ConvNet export (a ``.safetensors`` file) back as the model that was exported.

The module's layers become a ConvNet layer spec (``conv(6,5,padding=2) relu maxpool(2) ...``); the last
``Linear`` is the ConvNet's output layer. A torch network does not say the size of its images, so the caller
gives ``input_shape`` as softgrad's data sets do, ``(H, W)`` or ``(H, W, C)`` (channels last: the model takes
HWC-flattened rows and permutes them to the NCHW torch's module takes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from softgrad import datasets
from softgrad.training.convnet import NAMED, ConvNet, image_chw, plan_layers
from softgrad.training.portable_conv import Conv, channel_affine, unfold_affine
from softgrad.training.safetensors_io import Header, SafetensorsError, read_tensors

#: the modules a ConvNet is made of (Dropout and Identity do nothing when predicting; a final Softmax or
#: LogSoftmax names the head)
SUPPORTED = ("Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Tanh", "Sigmoid", "Flatten", "Linear", "Dropout",
             "Identity")
_POOLS = ("Conv2d", "MaxPool2d", "AvgPool2d")


def is_convolutional(network: Any) -> bool:
    """Whether an ``nn.Sequential`` holds a convolution or a pooling layer (so it is no MLP)."""
    return any(type(module).__name__ in _POOLS for _, module in network.named_children())


def _square(name: str, kind: str, option: str, value: Any) -> int:
    """torch's int-or-pair option as the one int a ConvNet spec takes; a pair of two sizes is refused."""
    first, second = (value, value) if isinstance(value, int) else tuple(value)
    if first != second:
        raise ValueError(f"from_torch: module {name} ({kind}) has {option}={tuple(value)}; a ConvNet's layers are "
                         "square (one size for height and width)")
    return int(first)


def _conv_token(name: str, module: Any) -> str:
    if module.padding_mode != "zeros":
        raise ValueError(f"from_torch: module {name} (Conv2d) pads with {module.padding_mode!r}; a ConvNet pads "
                         "with zeros")
    kernel = _square(name, "Conv2d", "kernel_size", module.kernel_size)
    dilation = _square(name, "Conv2d", "dilation", module.dilation)
    padding = module.padding
    if padding == "valid":
        padding = 0
    elif padding == "same":  # stride 1 (torch's rule); symmetric where the kernel's reach is odd
        if (dilation * (kernel - 1)) % 2:
            raise ValueError(f"from_torch: module {name} (Conv2d) has padding='same' with an even kernel reach, "
                             "which pads one side more than the other; a ConvNet pads both sides alike")
        padding = dilation * (kernel - 1) // 2
    options = {"stride": _square(name, "Conv2d", "stride", module.stride),
               "padding": _square(name, "Conv2d", "padding", padding), "dilation": dilation,
               "groups": int(module.groups)}
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    extra = "".join(f",{key}={value}" for key, value in options.items() if value != defaults[key])
    return f"conv({module.out_channels},{kernel}{extra})"


def _pool_token(name: str, module: Any, kind: str) -> str:
    refused = [f"{option}={getattr(module, option)!r}" for option, default in
               (("padding", 0), ("dilation", 1), ("ceil_mode", False), ("return_indices", False),
                ("divisor_override", None)) if hasattr(module, option) and getattr(module, option) != default]
    if refused:
        raise ValueError(f"from_torch: module {name} ({kind}) has {', '.join(refused)}; a ConvNet pools without "
                         "padding, dilation or ceil_mode")
    kernel = _square(name, kind, "kernel_size", module.kernel_size)
    stride = _square(name, kind, "stride", module.stride if module.stride is not None else kernel)
    token = "maxpool" if kind == "MaxPool2d" else "avgpool"
    return f"{token}({kernel})" if stride == kernel else f"{token}({kernel},stride={stride})"


def _last_linear(children: list) -> int:
    positions = [i for i, (_, module) in enumerate(children) if type(module).__name__ == "Linear"]
    if not positions:
        raise ValueError("from_torch: the network holds no Linear layer; a ConvNet ends in one that gives the logits")
    return positions[-1]


def sequential_spec(network: Any, host) -> tuple[str, list[np.ndarray], list[str], str | None]:
    """``(layer spec, params in softgrad's layout, the module each parameter comes from, head)`` of an
    ``nn.Sequential``; ``host(tensor, name)`` reads a tensor as a checked NumPy array. The last Linear is the
    output layer, which the spec leaves out (a ConvNet adds it)."""
    children = list(network.named_children())
    last = _last_linear(children)
    tokens, params, names, head, flat = [], [], [], None, False
    for position, (name, module) in enumerate(children):
        kind = type(module).__name__
        if kind in ("Dropout", "Identity"):
            continue
        if position > last:
            if kind not in ("Softmax", "LogSoftmax"):
                raise ValueError(f"from_torch: module {name} ({kind}) follows the last Linear; a ConvNet ends in "
                                 "logits (a final Softmax or LogSoftmax may name the head)")
            head = "softmax"
            continue
        if kind not in SUPPORTED:
            raise ValueError(f"from_torch: module {name} ({kind}) is not supported; a ConvNet holds "
                             f"{', '.join(SUPPORTED[:8])} (and Dropout, Identity)")
        if kind in _POOLS and flat:
            raise ValueError(f"from_torch: module {name} ({kind}) follows the Flatten; a ConvNet's convolutions "
                             "and pooling come before its dense layers")
        if kind == "Flatten":
            if flat or module.start_dim != 1 or module.end_dim != -1:
                raise ValueError(f"from_torch: module {name} (Flatten) is not the one Flatten(start_dim=1) between "
                                 "the images and the Linear layers")
            flat = True
            continue
        if kind == "Linear" and not flat:
            raise ValueError(f"from_torch: module {name} (Linear) takes the images unflattened; put nn.Flatten() "
                             "before the first Linear, as torch needs it")
        if kind in ("Conv2d", "Linear"):
            weight = host(module.weight, f"{name}.weight")
            bias = (host(module.bias, f"{name}.bias") if module.bias is not None
                    else np.zeros(weight.shape[0], dtype=weight.dtype))
            params += [weight if kind == "Conv2d" else weight.T, bias]  # softgrad's dense weight is (in, out)
            names += [name, name]
        if kind == "Conv2d":
            tokens.append(_conv_token(name, module))
        elif kind in ("MaxPool2d", "AvgPool2d"):
            tokens.append(_pool_token(name, module, kind))
        elif kind in ("ReLU", "Tanh", "Sigmoid"):
            tokens.append(kind.lower())
        elif position != last:
            tokens.append(f"dense({module.out_features})")
    return " ".join(tokens), params, names, head


def build_convnet(spec: str, params: list[np.ndarray], names: list[str], input_shape: tuple[int, ...] | None,
                  dtype: str, backend: str) -> ConvNet:
    """The ConvNet of ``spec`` for ``input_shape`` holding ``params``, each checked against the shape the model
    gives it (``names``: the torch module each comes from, for the message)."""
    if input_shape is None:
        raise ValueError("from_torch: a convolutional network does not say the size of its images: give "
                         "input_shape=(H, W) or (H, W, C), channels last, as softgrad's data sets give them")
    try:
        channels = image_chw(input_shape)[0]
        planned = plan_layers(spec, input_shape, params[-1].shape[0])
    except ValueError as error:
        raise ValueError(f"from_torch: {error} (input_shape {tuple(input_shape)})") from None
    first = next(p for p in planned if p.param_index is not None)
    if params[0].ndim == 4 and params[0].shape[1] * first.spec.args.get("groups", 1) != channels:
        raise ValueError(f"from_torch: module {names[0]} (Conv2d) takes {params[0].shape[1]} channels; input_shape "
                         f"{tuple(input_shape)} has {channels} (give (H, W, C), channels last)")
    model = ConvNet(spec, input_shape, int(params[-1].shape[0]), dtype=dtype)
    for index, (mine, theirs) in enumerate(zip(model.params, params)):
        if tuple(mine.shape) == tuple(theirs.shape):
            continue
        if theirs.ndim == 2:  # a Linear's weight, (in, out) here: say it in torch's terms
            raise ValueError(f"from_torch: module {names[index]} (Linear) takes {theirs.shape[0]} inputs; with "
                             f"input_shape {tuple(input_shape)} the layers before it give {mine.shape[0]}")
        raise ValueError(f"from_torch: module {names[index]}'s {'weight' if index % 2 == 0 else 'bias'} has shape "
                         f"{tuple(theirs.shape)}; with input_shape {tuple(input_shape)} the layers before it need "
                         f"{tuple(mine.shape)}")
    config = {**model.config(), "layers": next((n for n, text in NAMED.items() if text == spec), spec)}
    return ConvNet.from_config(config, [np.asarray(p, dtype=np.float64) for p in params], backend)


# ---- softgrad's own ConvNet export, back as the model that was exported --------------------------------


def _own_record(path: Path, own: dict, features: int) -> datasets.DataRecord | None:
    if own.get("data") is None:
        return None
    try:
        record = datasets.DataRecord.from_json(own["data"])
    except ValueError as error:
        raise SafetensorsError(f"{path}: {error}") from None
    if record.num_features != features:
        raise SafetensorsError(f"{path}: its data record has {record.num_features} features, its model takes "
                               f"{features}")
    return record


def restore_convnet(path: Path, header: Header, own: dict, backend: str) -> ConvNet:
    """The ConvNet a softgrad export holds: its config and parameter keys from the metadata, the folded input
    scaling (where it was folded) taken back out of the first convolution, the loss and data record restored."""
    config, keys = own.get("model"), own.get("params")
    if not isinstance(keys, list) or not all(isinstance(k, str) and k in header.tensors for k in keys):
        raise SafetensorsError(f"{path}: its softgrad metadata names parameters {keys!r} the file does not hold")
    if own.get("scaling") not in ("folded", "layer", "none"):
        raise SafetensorsError(f"{path}: its softgrad metadata has scaling {own.get('scaling')!r}")
    tensors = read_tensors(header, keys)
    params = [tensors[k] if tensors[k].ndim != 2 else tensors[k].T for k in keys]
    params = [np.asarray(p, dtype=np.float64) for p in params]
    try:
        model = ConvNet.from_config(config, params)
        record = _own_record(path, own, model.num_features)
        if own["scaling"] == "folded":
            if record is None:
                raise ValueError("the input scaling is folded into the first Conv2d, but no data record says it")
            groups = model.plan[0].spec.args.get("groups", 1)
            scale, shift = channel_affine(record.scaling, image_chw(model.input_shape)[0])
            first = unfold_affine(Conv(params[0], params[1], groups=groups), scale, shift)
            model = ConvNet.from_config(config, [first.weight, first.bias, *params[2:]])
    except (ValueError, TypeError, KeyError) as error:
        raise SafetensorsError(f"{path}: its softgrad metadata does not describe a ConvNet its tensors fit "
                               f"({json.dumps(config)[:200]}): {error}") from None
    if isinstance(own.get("loss"), str):
        model.loss = own["loss"]
    model.trained_on = record if record is not None else _raw_record(path, header, model)
    return model.to(backend)


def _raw_record(path: Path, header: Header, model: ConvNet) -> datasets.DataRecord:
    """For an export made without data: a record of raw input (no scaling) naming the classes as the file does."""
    try:
        labels = json.loads(header.metadata.get("labels", "null"))
    except ValueError:
        labels = None
    if not (isinstance(labels, list) and len(labels) == model.num_classes and all(isinstance(x, str) for x in labels)):
        raise SafetensorsError(f"{path}: its metadata labels do not name the model's {model.num_classes} classes")
    return datasets.DataRecord("imported network", "classification", model.num_features, tuple(labels), (),
                               tuple(model.input_shape), datasets.InputScaling())


__all__ = ["SUPPORTED", "build_convnet", "is_convolutional", "restore_convnet", "sequential_spec"]
