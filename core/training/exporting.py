"""``softgrad.export``: a trained model's weights as a file other frameworks load, the format chosen by the suffix.

    softgrad.export(model, "model.safetensors", data=data)   # torch.nn.Sequential(...).load_state_dict takes it
    softgrad.export("runs/mnist-...", "model.onnx")          # a run folder or checkpoint.npz: onnxruntime runs it

Either file takes what ``softgrad predict`` takes, the raw samples (0..255 pixels for the image sets,
flattened), and gives the logits (a regressor: values in the data's units): the data's input scaling is folded
into the first layer and a regressor's target scale into the last (:mod:`softgrad.training.portable`).
A ConvNet's file is the state dict of the ``nn.Sequential`` of its layers (``Conv2d``, ..., ``Flatten``,
``Linear``), which takes raw NCHW pixels; its ONNX graph takes the flat rows (:mod:`.portable_conv`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from softgrad import datasets
from softgrad.numerics.files import check_writable
from softgrad.training import checkpoint
from softgrad.training.convnet import ConvNet
from softgrad.training.models import MLP
from softgrad.training.portable import PortableNetwork, portable_network
from softgrad.training.portable_conv import PortableConvNet, portable_convnet, torch_modules
from softgrad.training.safetensors_io import write_safetensors

#: the formats :func:`export` writes, by the output's suffix
SUFFIXES = (".safetensors", ".onnx")

#: what :func:`export` writes in the ``softgrad`` metadata entry, so an import restores the model as trained
EXPORT_FORMAT = "softgrad-export-1"

#: torch's names for the hidden activations, as ``repr(nn.Sequential(...))`` prints them
TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU"}

_OUTPUTS = {"softmax": "logits; softmax over them gives the class probabilities",
            "sigmoid": "one logit; its sigmoid is the probability of the positive class (labels[1])",
            "identity": "the predicted values in the data's units"}


def export(model_or_run: MLP | ConvNet | str | os.PathLike, path: str | os.PathLike, *,
           data: datasets.Dataset | datasets.DataRecord | None = None, overwrite: bool = False) -> Path:
    """Write a trained model to ``path``: ``.safetensors`` (torch's ``nn.Sequential`` state dict) or ``.onnx``.

    ``model_or_run``: an :class:`MLP` or a :class:`ConvNet`, or a run folder or ``checkpoint.npz`` of
    ``softgrad train``. A ConvNet's ``.safetensors`` is the state dict of the ``nn.Sequential`` of its layers,
    which takes raw NCHW pixels; its ``.onnx`` takes the raw flat rows (see docs/export.md and docs/onnx.md).
    ``data``: the :class:`Dataset` (or its record) the model was trained on, whose input scaling is folded into
    the first layer; default what the checkpoint recorded (``model.trained_on``). Without either, the file takes
    the rows the model takes. An existing ``path`` is replaced (atomically) only with ``overwrite=True``.
    Returns the path written.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{target}: the format is chosen by the suffix, {' or '.join(SUFFIXES)}; got "
                         f"{suffix or 'none'!r}")
    check_output(target, overwrite, "overwrite=True")
    model = load_model(model_or_run)
    record = data.record() if isinstance(data, datasets.Dataset) else data
    record = record if record is not None else getattr(model, "trained_on", None)
    convolutional = isinstance(model, ConvNet)
    network = portable_convnet(model, record) if convolutional else portable_network(model, record)
    arrays = network.weights if convolutional else (*network.weights, *network.biases)
    if not all(np.isfinite(p).all() for p in arrays):
        raise ValueError("export: the model's weights hold NaN or infinite values (its training diverged): "
                         "there is nothing to export")
    if suffix == ".safetensors" and convolutional:
        write_safetensors(target, conv_tensors(network), conv_metadata(network, model, record))
    elif suffix == ".safetensors":
        write_safetensors(target, network_tensors(network), network_metadata(network, model, record))
    else:
        _write_onnx(network, target)
    return target


def load_model(model_or_run: MLP | ConvNet | str | os.PathLike) -> MLP | ConvNet:
    """The model itself, or the one a run folder (its ``checkpoint.npz``) or a checkpoint file holds."""
    if isinstance(model_or_run, (MLP, ConvNet)):
        return model_or_run
    if not isinstance(model_or_run, (str, os.PathLike)):
        raise TypeError(f"export: expected an MLP or a ConvNet, a run folder or a checkpoint.npz, got "
                        f"{type(model_or_run).__name__}")
    run = Path(model_or_run)
    path = run / "checkpoint.npz" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no checkpoint.npz there (give a run folder or a checkpoint file)")
    return checkpoint.load(path)[0]


def check_output(target: Path, overwrite: bool, how: str) -> None:
    """A writable regular file, and a new one unless ``overwrite`` (``how`` says how to ask for that)."""
    check_writable(target, "the export")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target} exists: give a new path, or {how} to replace it")


def network_tensors(network: PortableNetwork) -> dict[str, np.ndarray]:
    """The state dict of ``nn.Sequential(Linear, act, ..., Linear)``: ``{2i}.weight`` ``(out, in)``, ``{2i}.bias``."""
    dtype = np.dtype(network.dtype)
    tensors = {}
    for i, (w, b) in enumerate(zip(network.weights, network.biases)):
        tensors[f"{2 * i}.weight"] = np.ascontiguousarray(w, dtype=dtype)
        tensors[f"{2 * i}.bias"] = np.ascontiguousarray(b, dtype=dtype)
    return tensors


def torch_architecture(network: PortableNetwork) -> str:
    """``Sequential(Linear(784, 128), ReLU(), Linear(128, 10))``: the module whose state dict the file holds."""
    name = TORCH_ACTIVATIONS[network.activation]
    act = f"{name}(negative_slope={network.negative_slope:g})" if network.activation == "leaky_relu" else f"{name}()"
    widths = network.widths
    layers = [f"Linear({a}, {b})" for a, b in zip(widths, widths[1:])]
    return f"Sequential({f', {act}, '.join(layers)})"


def describe_input(network: PortableNetwork, record: datasets.DataRecord | None) -> str:
    """In words, the rows the network takes."""
    n = network.num_features
    if record is None:
        return f"rows (N, {n}) as the model takes them ({network.dtype}; no input scaling was known to fold in)"
    scaling = record.scaling
    if scaling.pixels:
        return (f"raw {record.dataset} pixels 0..{scaling.raw_scale:g}, images {tuple(record.image_shape or (n,))} "
                f"flattened to rows (N, {n}), {network.dtype}")
    return f"raw {record.dataset} samples as rows (N, {n}), {network.dtype}, in the units of its files"


def network_metadata(network: PortableNetwork, model: MLP, record: datasets.DataRecord | None) -> dict[str, str]:
    """The file's ``__metadata__``: strings a reader understands without softgrad, and under ``softgrad`` what
    an import needs to restore the model as trained (the data record with its input scaling, loss, target scale)."""
    own = {"export_format": EXPORT_FORMAT, "loss": model.loss, "seed": model.seed,
           "data": None if record is None else record.to_json(),
           "target_mean": None if model.target_mean is None else list(model.target_mean),
           "target_std": None if model.target_std is None else list(model.target_std)}
    return {"format": "pt", "architecture": torch_architecture(network), "widths": json.dumps(network.widths),
            "activation": network.activation, "negative_slope": repr(float(network.negative_slope)),
            "head": network.head, "output": _OUTPUTS[network.head], "labels": json.dumps(list(network.labels)),
            "input": describe_input(network, record),
            "input_shape": json.dumps(None if network.input_shape is None else list(network.input_shape)),
            "dtype": network.dtype, "softgrad": json.dumps(own)}


# ---- convolutional networks: the state dict of nn.Sequential(Conv2d, ReLU, MaxPool2d, ..., Flatten, Linear) ----


def conv_tensors(network: PortableConvNet) -> dict[str, np.ndarray]:
    """The state dict of the ``nn.Sequential`` :func:`conv_architecture` writes: ``{i}.weight``, ``{i}.bias`` for
    the i-th module where it has parameters (``Conv2d`` weights ``(out, in / groups, kH, kW)``, ``Linear``
    ``(out, in)``)."""
    dtype = np.dtype(network.dtype)
    return {f"{i}.{name}": np.ascontiguousarray(value, dtype=dtype)
            for i, (_, params) in enumerate(torch_modules(network)) for name, value in params.items()}


def conv_architecture(network: PortableConvNet) -> str:
    """``Sequential(Conv2d(3, 6, 5), ReLU(), MaxPool2d(2), ..., Flatten(), Linear(400, 120), ...)``, as torch code."""
    return f"Sequential({', '.join(code for code, _ in torch_modules(network))})"


def describe_conv_input(network: PortableConvNet, record: datasets.DataRecord | None) -> str:
    """In words, the images the ``nn.Sequential`` takes (NCHW) and how softgrad's flat rows become them."""
    c, h, w = network.chw
    rows = (f"a row of softgrad predict's ({network.num_features} values, HWC) reshaped to ({h}, {w}, {c}) and "
            "permuted (2, 0, 1)" if len(network.input_shape) == 3 else
            f"a row of softgrad predict's ({network.num_features} values) reshaped to (1, {h}, {w})")
    where = {"folded": "is folded into the first Conv2d", "layer": "is the first module, Conv2d(C, C, 1, groups=C)",
             "none": "is not known: the images are as the model takes them"}[network.scaling]
    what = "images" if record is None else (f"raw {record.dataset} pixels 0..{record.scaling.raw_scale:g}"
                                            if record.scaling.pixels else f"raw {record.dataset} samples")
    return f"{what} as NCHW (N, {c}, {h}, {w}), {network.dtype}: {rows}; the input scaling {where}"


def conv_metadata(network: PortableConvNet, model: ConvNet, record: datasets.DataRecord | None) -> dict[str, str]:
    """The file's ``__metadata__`` (as :func:`network_metadata`'s), and under ``softgrad`` the model's config,
    where the scaling went and which tensors are its parameters, so that an import restores it as trained."""
    keys = [f"{i}.{name}" for i, (code, params) in enumerate(torch_modules(network)) for name in params
            if not (network.scaling == "layer" and i == 0)]
    own = {"export_format": EXPORT_FORMAT, "loss": model.loss, "seed": model.seed,
           "data": None if record is None else record.to_json(), "model": model.config(),
           "scaling": network.scaling, "params": keys}
    return {"format": "pt", "architecture": conv_architecture(network), "head": network.head,
            "output": _OUTPUTS[network.head], "labels": json.dumps(list(network.labels)),
            "input": describe_conv_input(network, record), "input_layout": "NCHW",
            "input_shape": json.dumps(list(network.input_shape)), "dtype": network.dtype, "softgrad": json.dumps(own)}


def _write_onnx(network: PortableNetwork | PortableConvNet, target: Path) -> None:
    """The ONNX writer (imported here: it needs the onnx package, which only this format does); it writes
    atomically, and says in one line what to install where onnx is missing."""
    from softgrad.training.onnx_export import write_onnx

    write_onnx(network, target)


__all__ = ["EXPORT_FORMAT", "SUFFIXES", "TORCH_ACTIVATIONS", "check_output", "conv_architecture", "conv_metadata",
           "conv_tensors", "describe_conv_input", "describe_input", "export", "load_model", "network_metadata",
           "network_tensors", "torch_architecture"]
