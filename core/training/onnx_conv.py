"""The layers of a :class:`~softgrad.training.portable_conv.PortableConvNet` as ONNX nodes.

The graph takes softgrad's flat raw rows, ``input`` ``(N, H*W*C)``, as ``softgrad predict`` does, and turns
them into NCHW itself: a grey image ``Reshape``s to ``(N, 1, H, W)``; a colour one (HWC-flattened, channels
fastest) to ``(N, H, W, C)`` and ``Transpose``s ``(0, 3, 1, 2)``. Then the input scaling where it is not folded
into the first ``Conv`` (``Mul`` and ``Add`` per channel), and one node per layer: ``Conv``, ``MaxPool``,
``AveragePool`` (zero padding counted, as torch's), ``Relu``/``Tanh``/``Sigmoid``, ``Flatten`` (``(C, H, W)``
order, as torch's), ``Gemm`` (weights in torch's ``(out, in)`` layout, ``transB=1``); the last gives ``logits``.
:mod:`softgrad.training.onnx_export` puts the head on them.
"""

from __future__ import annotations

import json

import numpy as np
from softgrad.training.portable_conv import (
    ACTIVATIONS,
    Activation,
    Affine,
    Conv,
    Dense,
    Flatten,
    Pool,
    PortableConvNet,
)

_OPERATORS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _to_nchw(network: PortableConvNet, numpy_helper, helper) -> tuple[list, list, str]:
    """Reshape (and for colour, Transpose) the flat rows to NCHW. A 0 in Reshape's shape copies the input's
    batch dimension, so any N works, 0 rows too (where -1 could not be inferred)."""
    c, h, w = network.chw
    colour = len(network.input_shape) == 3
    shape = numpy_helper.from_array(np.array([0, h, w, c] if colour else [0, 1, h, w], dtype=np.int64),
                                    "image_shape")
    reshaped = "images.nhwc" if colour else "images"
    nodes = [helper.make_node("Reshape", ["input", "image_shape"], [reshaped], name="to_images")]
    if colour:
        nodes.append(helper.make_node("Transpose", [reshaped], ["images"], name="to_nchw", perm=[0, 3, 1, 2]))
    return nodes, [shape], "images"


def _conv_node(layer: Conv, i: int, h: str, dtype: np.dtype, onnx) -> tuple[list, list, str]:
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    weight = numpy_helper.from_array(np.ascontiguousarray(layer.weight, dtype=dtype), f"layer{i}.weight")
    bias = numpy_helper.from_array(np.ascontiguousarray(layer.bias, dtype=dtype), f"layer{i}.bias")
    (ph, pw), out = layer.padding, f"layer{i}.conv"
    node = helper.make_node("Conv", [h, weight.name, bias.name], [out], name=f"layer{i}",
                            kernel_shape=list(layer.weight.shape[2:]), strides=list(layer.stride),
                            pads=[ph, pw, ph, pw], dilations=list(layer.dilation), group=layer.groups)
    return [node], [weight, bias], out


def _pool_node(layer: Pool, i: int, h: str, helper) -> tuple[list, list, str]:
    (ph, pw), out = layer.padding, f"layer{i}.{layer.kind}pool"
    options = {"count_include_pad": 1} if layer.kind == "avg" else {}
    node = helper.make_node("MaxPool" if layer.kind == "max" else "AveragePool", [h], [out], name=f"layer{i}",
                            kernel_shape=list(layer.kernel), strides=list(layer.stride), pads=[ph, pw, ph, pw],
                            **options)
    return [node], [], out


def _affine_nodes(layer: Affine, h: str, dtype: np.dtype, onnx) -> tuple[list, list, str]:
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    c = len(layer.scale)
    scale = numpy_helper.from_array(layer.scale.reshape(1, c, 1, 1).astype(dtype), "input_scaling.scale")
    shift = numpy_helper.from_array(layer.shift.reshape(1, c, 1, 1).astype(dtype), "input_scaling.shift")
    scale.doc_string = "the data's input scaling, raw pixels -> normalised: x * scale + shift per channel"
    nodes = [helper.make_node("Mul", [h, scale.name], ["input_scaling.mul"], name="input_scaling.mul"),
             helper.make_node("Add", ["input_scaling.mul", shift.name], ["scaled"], name="input_scaling.add")]
    return nodes, [scale, shift], "scaled"


def conv_layers(network: PortableConvNet, onnx) -> tuple[list, list, str]:
    """The nodes from ``input`` to ``logits``, their initializers, and the logits' name."""
    helper, dtype = onnx.helper, np.dtype(network.dtype)
    nodes, initializers, h = _to_nchw(network, onnx.numpy_helper, helper)
    last = max(i for i, layer in enumerate(network.layers) if isinstance(layer, Dense))
    for i, layer in enumerate(network.layers):
        if isinstance(layer, Affine):
            more, constants, h = _affine_nodes(layer, h, dtype, onnx)
        elif isinstance(layer, Conv):
            more, constants, h = _conv_node(layer, i, h, dtype, onnx)
            if i == 0 and network.scaling == "folded":
                constants[0].doc_string = "the data's input scaling (raw -> normalised) is folded into this layer"
        elif isinstance(layer, Pool):
            more, constants, h = _pool_node(layer, i, h, helper)
        elif isinstance(layer, Activation):
            out = f"layer{i}.{layer.name}"
            more, constants, h = [helper.make_node(_OPERATORS[layer.name], [h], [out], name=out)], [], out
        elif isinstance(layer, Flatten):
            out = f"layer{i}.flatten"
            more, constants, h = [helper.make_node("Flatten", [h], [out], name=out, axis=1)], [], out
        else:
            weight = onnx.numpy_helper.from_array(np.ascontiguousarray(layer.weight, dtype=dtype), f"layer{i}.weight")
            bias = onnx.numpy_helper.from_array(np.ascontiguousarray(layer.bias, dtype=dtype), f"layer{i}.bias")
            out = "logits" if i == last else f"layer{i}.out"
            more = [helper.make_node("Gemm", [h, weight.name, bias.name], [out], name=f"layer{i}", transB=1)]
            constants, h = [weight, bias], out
        nodes += more
        initializers += constants
    return nodes, initializers, h


def check_conv(network: PortableConvNet) -> None:
    """A ValueError, in one line, for what the graph cannot be built from."""
    for layer in network.layers:
        if isinstance(layer, Activation) and layer.name not in _OPERATORS:
            raise ValueError(f"ONNX export: no ONNX operator for the activation {layer.name!r}; exportable: "
                             f"{', '.join(ACTIVATIONS)}")
    if not isinstance(network.layers[-1], Dense):
        raise ValueError("ONNX export: the network does not end in a dense layer giving the logits")


def describe(network: PortableConvNet) -> str:
    """``conv(6,5,padding=2) relu maxpool(2) ... dense(10)``-like words for the metadata's architecture."""
    from softgrad.training.portable_conv import torch_modules

    return "ConvNet " + ", ".join(code for code, _ in torch_modules(network))


def conv_metadata(network: PortableConvNet, version: str) -> dict[str, str]:
    c, h, w = network.chw
    layout = ("rows of HWC images flattened channels fastest, reshaped to (N, H, W, C) and transposed to NCHW "
              "in the graph" if len(network.input_shape) == 3 else "rows of grey images, reshaped to (N, 1, H, W)")
    scaling = {"folded": "folded into layer0", "layer": "the Mul/Add input_scaling nodes",
               "none": "none known: the graph takes the rows the model takes"}[network.scaling]
    return {
        "softgrad_version": version,
        "architecture": f"{describe(network)}; {network.head} head",
        "head": network.head,
        "labels": json.dumps(list(network.labels)),
        "input_shape": json.dumps(list(network.input_shape)),
        "num_features": str(network.num_features),
        "dtype": network.dtype,
        "input": f"raw samples (pixels 0..255 for image sets), {layout}; the input scaling: {scaling}",
    }


__all__ = ["check_conv", "conv_layers", "conv_metadata", "describe"]
