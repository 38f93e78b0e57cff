"""A trained network as an ONNX model, built with ``onnx.helper`` (no torch): :func:`onnx_model`, :func:`write_onnx`.

The graph takes raw samples, ``input`` ``(N, num_features)`` in the model's dtype (float32, or float64 for a
float64 model: the graph is exported in that dtype, nothing is cast), with a symbolic batch dimension ``N``.
Pixels go in as 0..255, features in the data's units. Then one ``Gemm`` per layer with the hidden activation
between them, and the head:

- a classifier (softmax): ``probabilities`` ``(N, C)``, ``class_index`` ``(N,)`` int64 (``ArgMax`` of the
  logits, so it is the class :func:`softgrad.predict` gives) and ``label`` ``(N,)`` string (the class name,
  ``Gather`` from a constant of the names);
- a binary head (sigmoid over one logit): ``probability`` ``(N,)`` of the positive class, ``class_index``
  (1 where the logit is > 0, as :func:`softgrad.predict` decides) and ``label`` (negative or positive name);
- a regressor: ``values`` ``(N, k)`` in the data's units.

The input normalisation is in the graph, folded into the first ``Gemm`` (as :mod:`.portable` folds it, in
float64, rounded once to the model's dtype), not spelled out as ``Sub``/``Div`` nodes: a
:class:`~softgrad.training.portable.PortableNetwork` is the one description every exporter shares, and it
holds the scaling only folded, so the ONNX, safetensors and torch forms of a model carry the very same
weights; explicit nodes would also cost two element-wise passes over every input row. The first layer's
``doc_string`` and the metadata say so, for whoever reads the graph in Netron.

A ConvNet (a :class:`~softgrad.training.portable_conv.PortableConvNet`) takes the same ``input`` and gets the
same head; :mod:`.onnx_conv` builds its layers (``Reshape``/``Transpose`` to NCHW, ``Conv``, the poolings,
``Flatten``, ``Gemm``).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.files import atomic_write
from softgrad.training.onnx_conv import check_conv, conv_layers, conv_metadata
from softgrad.training.portable import PortableNetwork
from softgrad.training.portable_conv import PortableConvNet

if TYPE_CHECKING:
    import onnx

PIP_EXPORT = "pip install 'softgrad[export]'  (or: pip install onnx)"

#: the lowest opset the graph is built for: LeakyRelu and Softmax in their current forms, and Softmax over
#: one axis (opset 13+) rather than over a flattened 2-D view
MIN_OPSET = 17

#: the ONNX operator for each hidden activation softgrad can export (:mod:`.portable` knows the same four)
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu"}


def _onnx():
    """The ``onnx`` package, or one line saying what to install."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailableError(f"ONNX export needs the onnx package, which is not installed: {PIP_EXPORT}") from None
    return onnx


def _version() -> str:
    """softgrad's installed version (as ``softgrad.__version__`` gives it; the package root is above this layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("softgrad")
    except PackageNotFoundError:
        return "0+unknown"


def _check(network: PortableNetwork | PortableConvNet, opset: int, newest: int) -> None:
    """A ValueError, in one line, for what the graph cannot be built from."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"ONNX export: opset {opset!r} is not supported; give {MIN_OPSET}..{newest} "
                         "(the newest this onnx package knows)")
    if network.dtype not in ("float32", "float64"):
        raise ValueError(f"ONNX export: a {network.dtype} network cannot be exported; float32 or float64 only")
    if isinstance(network, PortableConvNet):
        check_conv(network)
        outputs = network.num_outputs
    elif network.activation not in _ACTIVATIONS:
        raise ValueError(f"ONNX export: no ONNX operator for the activation {network.activation!r}; "
                         f"exportable: {', '.join(_ACTIVATIONS)}")
    else:
        outputs = network.widths[-1]
    expected = {"softmax": outputs, "sigmoid": 2}.get(network.head)
    if network.head == "sigmoid" and outputs != 1:
        raise ValueError(f"ONNX export: a sigmoid head takes one logit, this network has {outputs}")
    if expected is not None and len(network.labels) != expected:
        raise ValueError(f"ONNX export: the network names {len(network.labels)} classes for {expected} "
                         f"({network.head} head over {outputs} output(s))")


def _layers(network: PortableNetwork, helper, numpy_helper) -> tuple[list, list, str]:
    """The Gemm and activation nodes, their initializers, and the name of the logits."""
    dtype = np.dtype(network.dtype)
    nodes, initializers, h = [], [], "input"
    last = len(network.weights) - 1
    for i, (w, b) in enumerate(zip(network.weights, network.biases)):
        weight = numpy_helper.from_array(np.ascontiguousarray(w, dtype=dtype), f"layer{i}.weight")
        if i == 0:
            weight.doc_string = "the data's input scaling (raw -> normalised rows) is folded into this layer"
        initializers += [weight, numpy_helper.from_array(np.ascontiguousarray(b, dtype=dtype), f"layer{i}.bias")]
        out = "logits" if i == last else f"layer{i}.out"
        # transB=1: the weights stay in torch's (out, in) layout, as the safetensors export holds them
        nodes.append(helper.make_node("Gemm", [h, weight.name, f"layer{i}.bias"], [out], name=f"layer{i}", transB=1))
        h = out
        if i < last:
            act = _ACTIVATIONS[network.activation]
            attrs = {"alpha": float(network.negative_slope)} if act == "LeakyRelu" else {}
            h = f"layer{i}.{network.activation}"
            nodes.append(helper.make_node(act, [out], [h], name=h, **attrs))
    return nodes, initializers, h


def _head(network: PortableNetwork | PortableConvNet, logits: str, onnx) -> tuple[list, list, list]:
    """The head's nodes, its constant initializers and the graph outputs."""
    helper, tp = onnx.helper, onnx.TensorProto
    elem = tp.DOUBLE if network.dtype == "float64" else tp.FLOAT
    if network.head == "identity":
        outputs = network.num_outputs if isinstance(network, PortableConvNet) else network.widths[-1]
        nodes = [helper.make_node("Identity", [logits], ["values"], name="values")]
        return nodes, [], [helper.make_tensor_value_info("values", elem, ["N", outputs])]
    names = helper.make_tensor("label_names", tp.STRING, [len(network.labels)],
                               [str(c).encode() for c in network.labels])
    if network.head == "softmax":
        probability = [helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=1)]
        # the class from the logits, not the probabilities: two logits a rounding apart can share one
        # probability, and ArgMax takes the first of equals as predict's argmax does
        index = [helper.make_node("ArgMax", [logits], ["class_index"], name="argmax", axis=1, keepdims=0)]
        shape_out = helper.make_tensor_value_info("probabilities", elem, ["N", len(network.labels)])
        constants = [names]
    else:
        axes = onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes")
        zero = onnx.numpy_helper.from_array(np.zeros((), dtype=np.dtype(network.dtype)), "zero")
        one = onnx.numpy_helper.from_array(np.ones((), dtype=np.dtype(network.dtype)), "one")
        # 1 / (1 + exp(-logit)), not the Sigmoid operator: onnxruntime's float32 Sigmoid is an approximation
        # good to about 1e-7 absolute, which is 1e-5 relative on a probability of 0.01; Exp and Reciprocal
        # are good to a rounding or two at every size (and exp overflowing to inf gives 0, not NaN)
        probability = [helper.make_node("Squeeze", [logits, "squeeze_axes"], ["logit"], name="squeeze"),
                       helper.make_node("Neg", ["logit"], ["minus_logit"], name="sigmoid.neg"),
                       helper.make_node("Exp", ["minus_logit"], ["sigmoid.exp"], name="sigmoid.exp"),
                       helper.make_node("Add", ["sigmoid.exp", "one"], ["sigmoid.denominator"], name="sigmoid.add"),
                       helper.make_node("Reciprocal", ["sigmoid.denominator"], ["probability"], name="sigmoid")]
        # logit > 0, as predict decides (a probability rounded to 0.5 would decide otherwise)
        index = [helper.make_node("Greater", ["logit", "zero"], ["positive"], name="positive"),
                 helper.make_node("Cast", ["positive"], ["class_index"], name="class_index", to=tp.INT64)]
        shape_out = helper.make_tensor_value_info("probability", elem, ["N"])
        constants = [names, axes, zero, one]
    gather = helper.make_node("Gather", ["label_names", "class_index"], ["label"], name="label", axis=0)
    outputs = [shape_out, helper.make_tensor_value_info("class_index", tp.INT64, ["N"]),
               helper.make_tensor_value_info("label", tp.STRING, ["N"])]
    return probability + index + [gather], constants, outputs


def _metadata(network: PortableNetwork) -> dict[str, str]:
    widths = "-".join(str(w) for w in network.widths)
    return {
        "softgrad_version": _version(),
        "architecture": f"MLP {widths}, {network.activation}, {network.head} head",
        "widths": json.dumps(network.widths),
        "activation": network.activation,
        "negative_slope": repr(float(network.negative_slope)),
        "head": network.head,
        "labels": json.dumps(list(network.labels)),
        "input_shape": json.dumps(None if network.input_shape is None else list(network.input_shape)),
        "num_features": str(network.num_features),
        "dtype": network.dtype,
        "input": "raw samples (pixels 0..255 for image sets), flattened; the input scaling is in layer0",
    }


def onnx_model(network: PortableNetwork | PortableConvNet, *, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """``network`` as an ONNX model (default opset 17), which takes raw rows ``input`` ``(N, num_features)``.

    Outputs: ``probabilities``, ``class_index`` and ``label`` for a classifier; ``probability``,
    ``class_index`` and ``label`` for a binary (sigmoid) head; ``values`` for a regressor (see the module's
    doc). The model's metadata names the softgrad version, the architecture, the labels and the input shape.
    """
    onnx = _onnx()
    convolutional = isinstance(network, PortableConvNet)
    _check(network, opset, onnx.defs.onnx_opset_version())
    helper, elem = onnx.helper, onnx.TensorProto.DOUBLE if network.dtype == "float64" else onnx.TensorProto.FLOAT
    if convolutional:
        nodes, initializers, logits = conv_layers(network, onnx)
    else:
        nodes, initializers, logits = _layers(network, helper, onnx.numpy_helper)
    head_nodes, constants, outputs = _head(network, logits, onnx)
    graph_input = helper.make_tensor_value_info("input", elem, ["N", network.num_features])
    graph_input.doc_string = "raw samples, flattened: pixels 0..255 for image sets, features in the data's units"
    where = ("see the metadata's input" if convolutional else "folded into layer0")
    graph = helper.make_graph(nodes + head_nodes, "softgrad_convnet" if convolutional else "softgrad_mlp",
                              [graph_input], outputs, initializer=initializers + constants,
                              doc_string=f"softgrad {network.head} network; input scaling: {where}")
    opsets = [helper.make_opsetid("", opset)]
    # the lowest IR version that carries this opset, so that older runtimes load the file too
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="softgrad", producer_version=_version())
    helper.set_model_props(model, conv_metadata(network, _version()) if convolutional else _metadata(network))
    return model


def write_onnx(network: PortableNetwork | PortableConvNet, path: str | os.PathLike) -> None:
    """``network`` as an ONNX file at ``path``, checked (``onnx.checker``, full check) and written atomically."""
    onnx = _onnx()
    model = onnx_model(network)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))


__all__ = ["onnx_model", "write_onnx"]
