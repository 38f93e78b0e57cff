"""Convolutional networks with hand-written backward passes: :class:`ConvNet`, built from a layer spec.

A spec is a string of tokens separated by spaces or commas (LeNet)::

    conv(6,5,padding=2) relu maxpool(2) conv(16,5) relu maxpool(2) dense(120) relu dense(84) relu

``conv(out, k[, stride=s][, padding=p][, dilation=d][, groups=g])``, ``maxpool(k[, stride=s])``,
``avgpool(k[, stride=s])``, ``relu``, ``tanh``, ``sigmoid``, ``dense(width)`` and ``flatten`` (implicit before
the first dense). The output layer ``dense(num_classes)`` is appended by the model. :data:`NAMED` holds the
networks the command line names (``lenet``, ``tutorial-cnn``).

Parameters and layout follow torch: conv weights ``(O, C/groups, k, k)``, dense weights ``(in, out)`` (torch's
Linear weight transposed, as the MLP's), the flatten in ``(C, H, W)`` order, so an ``nn.Sequential`` of the same
layers maps 1:1; initialisation is torch's default (uniform on ``+-1/sqrt(fan_in)`` for weights and biases),
drawn on the host from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from softgrad.numerics.protocol import Array, Backend
from softgrad.numerics.registry import get_backend
from softgrad.training.conv_layers import (
    ConvOptions,
    avg_pool_backward,
    avg_pool_forward,
    conv_backward,
    conv_forward,
    flatten_backward,
    flatten_forward,
    max_pool_backward,
    max_pool_forward,
    rows_to_images,
)
from softgrad.training.layers import dense_backward, dense_forward, dense_relu_forward, make_activation
from softgrad.training.models import HostParameters, _gib, available_memory

#: the convolutional networks the command line names, by their specs (the output layer is the model's)
NAMED = {
    # LeCun et al.'s LeNet-5 as the d2l book writes it (ReLU and max-pooling), for 1x28x28 MNIST
    "lenet": "conv(6,5,padding=2) relu maxpool(2) conv(16,5) relu maxpool(2) dense(120) relu dense(84) relu",
    # the network of PyTorch's CIFAR-10 tutorial ("Training a classifier"), for 3x32x32 images
    "tutorial-cnn": "conv(6,5) relu maxpool(2) conv(16,5) relu maxpool(2) dense(120) relu dense(84) relu",
}
ACTIVATION_TOKENS = ("relu", "tanh", "sigmoid")
GRAMMAR = ("conv(out, k[, stride=s][, padding=p][, dilation=d][, groups=g]), maxpool(k[, stride=s]), "
           "avgpool(k[, stride=s]), relu, tanh, sigmoid, dense(width), flatten")
# each token: a name, then optionally its arguments in parentheses; separated by spaces or commas
_TOKEN = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(\(([^()]*)\))?\s*(,|\s|$)")
# the activations' definitions (stateless), shared by every ConvNet
_ACTIVATIONS = {name: make_activation(name) for name in ACTIVATION_TOKENS}
# per token kind: the positional arguments it takes (required ones first) and its keyword arguments
_SIGNATURES = {"conv": (("out", "k"), ("stride", "padding", "dilation", "groups")),
               "maxpool": (("k",), ("stride",)), "avgpool": (("k",), ("stride",)), "dense": (("width",), ())}


# ---- the spec --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One token of a spec: its kind (conv, maxpool, avgpool, dense, flatten or an activation), its arguments,
    and the text it was written as (messages name it)."""

    kind: str
    args: dict[str, int] = field(default_factory=dict)
    text: str = ""

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "dense")


def resolve_layers(layers: str) -> str:
    """The spec a name of :data:`NAMED` stands for; any other string is a spec itself."""
    return NAMED.get(layers.strip(), layers) if isinstance(layers, str) else layers


def parse_layers(spec: str) -> list[LayerSpec]:
    """The tokens of ``spec`` (a name of :data:`NAMED` or a spec); a ValueError of one line naming the first
    bad token and the grammar otherwise."""
    if not isinstance(spec, str):
        raise TypeError(f"layers must be a spec string such as {NAMED['tutorial-cnn']!r}, got {type(spec).__name__}")
    text = resolve_layers(spec)
    if not text.strip():
        raise ValueError(f"layers: the spec is empty; give tokens such as {NAMED['tutorial-cnn']!r}")
    parsed, position = [], 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            bad = text[position:].strip().split()[0] if text[position:].strip() else text
            raise ValueError(f"layers: cannot read {bad!r} (at character {position + 1} of {text!r}); tokens are "
                             f"{GRAMMAR}")
        parsed.append(_token(match.group(1), match.group(3), match.group(0).strip().rstrip(",").strip()))
        position = match.end()
    return parsed


def _token(name: str, arguments: str | None, text: str) -> LayerSpec:
    kind = name.lower()
    if kind in ACTIVATION_TOKENS or kind == "flatten":
        if arguments is not None and arguments.strip():
            raise ValueError(f"layers: {text!r}: {kind} takes no arguments")
        return LayerSpec(kind, {}, text)
    if kind not in _SIGNATURES:
        raise ValueError(f"layers: unknown layer {text!r}; tokens are {GRAMMAR}")
    positional, keywords = _SIGNATURES[kind]
    if arguments is None:
        raise ValueError(f"layers: {text!r}: {kind} needs its arguments, {kind}({', '.join(positional)})")
    values: dict[str, int] = {}
    parts = [part.strip() for part in arguments.split(",")]
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        key = key.strip() if sep else (positional[i] if i < len(positional) else None)
        value = value if sep else part
        if key is None or (sep and key not in keywords) or key in values:
            raise ValueError(f"layers: {text!r}: {kind} takes {', '.join(positional)}"
                             f"{'' if not keywords else ' then ' + ', '.join(k + '=' for k in keywords)}; "
                             f"{part!r} is not one of them")
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"layers: {text!r}: {key} must be a whole number, got {value.strip()!r}") from None
        least = 0 if key == "padding" else 1
        if number < least:
            raise ValueError(f"layers: {text!r}: {key} must be at least {least}, got {number}")
        values[key] = number
    missing = [key for key in positional if key not in values]
    if missing:
        raise ValueError(f"layers: {text!r}: {kind} needs {', '.join(missing)} ({kind}({', '.join(positional)}))")
    return LayerSpec(kind, values, text)


# ---- the plan: each layer with its input and output shapes, checked before anything is allocated ------


@dataclass(frozen=True)
class Planned:
    """A layer of the network with the shapes it takes and gives (per sample: ``(C, H, W)`` or ``(F,)``), its
    parameters' index in ``params`` (None for none) and whether a ReLU is fused into it (a dense layer)."""

    spec: LayerSpec
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    param_index: int | None = None
    fused_relu: bool = False


def plan_layers(spec: str, input_shape: Sequence[int], num_classes: int) -> list[Planned]:
    """The network's layers with their shapes, the implicit flatten and the output layer added; a ValueError
    naming the layer and the shapes where one does not fit its input."""
    tokens = parse_layers(spec)
    shape = image_chw(input_shape)
    tokens = [*tokens, LayerSpec("dense", {"width": int(num_classes)}, f"dense({num_classes}) (the output layer)")]
    planned: list[Planned] = []
    params = 0
    for number, token in enumerate(tokens, start=1):
        if token.kind == "dense" and len(shape) == 3:  # the implicit flatten before the first dense
            planned.append(Planned(LayerSpec("flatten", {}, "flatten"), shape, (math.prod(shape),)))
            shape = (math.prod(shape),)
        out = _out_shape(token, shape, number)
        index = None
        if token.has_params:
            index, params = params, params + 2
        planned.append(Planned(token, shape, out, index))
        shape = out
    return _fuse(planned)


def _fuse(planned: list[Planned]) -> list[Planned]:
    """A dense layer followed by a ReLU becomes one (``be.affine_relu`` forward; the bias gradient summed
    in the ReLU's backward pass, ``be.relu_bias_backward``), as the MLP's hidden layers are."""
    fused: list[Planned] = []
    for layer in planned:
        previous = fused[-1] if fused else None
        if (layer.spec.kind == "relu" and previous is not None and previous.spec.kind == "dense"
                and not previous.fused_relu):
            fused[-1] = Planned(previous.spec, previous.in_shape, previous.out_shape, previous.param_index, True)
        else:
            fused.append(layer)
    return fused


def image_chw(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """The per-sample ``(C, H, W)`` of a data set's ``image_shape``: ``(H, W)`` grey or ``(H, W, C)``."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"a ConvNet takes images: input_shape must be (H, W) or (H, W, C), got {input_shape!r}")
    return (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])


def _out_shape(token: LayerSpec, shape: tuple[int, ...], number: int) -> tuple[int, ...]:
    kind, args = token.kind, token.args
    where = f"layer {number} {token.text}"
    if kind in ACTIVATION_TOKENS:
        return shape
    if kind == "dense":
        return (args["width"],)
    if kind == "flatten":
        if len(shape) != 3:
            raise ValueError(f"{where}: its input is already flat ({shape[0]} features)")
        return (math.prod(shape),)
    if len(shape) != 3:
        raise ValueError(f"{where}: takes images (C, H, W), but it follows a flatten or a dense layer "
                         f"({shape[0]} features); put convolutions and pooling before the dense layers")
    channels, height, width = shape
    if kind == "conv":
        options = conv_options(token)
        if channels % options.groups or args["out"] % options.groups:
            raise ValueError(f"{where}: groups={options.groups} must divide its {channels} input channels and "
                             f"its {args['out']} output channels")
        reach = options.dilation * (args["k"] - 1) + 1
        sizes = [(n + 2 * options.padding - reach) // options.stride + 1 for n in (height, width)]
        if min(sizes) < 1:
            raise ValueError(f"{where}: a {args['k']}x{args['k']} kernel (dilation {options.dilation}, padding "
                             f"{options.padding}) does not fit its {height}x{width} input map (C, H, W) = {shape}")
        return (args["out"], *sizes)
    kernel, stride = args["k"], args.get("stride", args["k"])
    if kernel > min(height, width):
        raise ValueError(f"{where}: a {kernel}x{kernel} window does not fit its {height}x{width} input map "
                         f"(C, H, W) = {shape}")
    return (channels, (height - kernel) // stride + 1, (width - kernel) // stride + 1)


def conv_options(token: LayerSpec) -> ConvOptions:
    args = token.args
    return ConvOptions(stride=args.get("stride", 1), padding=args.get("padding", 0),
                       dilation=args.get("dilation", 1), groups=args.get("groups", 1))


def param_shapes(planned: list[Planned]) -> list[tuple[int, ...]]:
    """The shapes of ``params``, ``[W1, b1, W2, b2, ...]``, for the planned layers."""
    shapes: list[tuple[int, ...]] = []
    for layer in planned:
        if layer.spec.kind == "conv":
            k, groups = layer.spec.args["k"], layer.spec.args.get("groups", 1)
            shapes += [(layer.out_shape[0], layer.in_shape[0] // groups, k, k), (layer.out_shape[0],)]
        elif layer.spec.kind == "dense":
            shapes += [(layer.in_shape[0], layer.out_shape[0]), (layer.out_shape[0],)]
    return shapes


def _check_fits_in_memory(shapes: list[tuple[int, ...]], dtype: np.dtype, layers: str) -> None:
    """A ValueError naming the model's size for parameters that would not fit in the memory available (a
    dense layer after a large image can be huge); before anything is allocated."""
    count = sum(math.prod(shape) for shape in shapes)
    largest = max(math.prod(shape) for shape in shapes)
    needed = count * dtype.itemsize + largest * (8 + dtype.itemsize)  # drawn in float64, then converted
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"the ConvNet {layers!r} has {count:,} parameters, {_gib(count * dtype.itemsize)} as "
                         f"{dtype.name}; this machine has {_gib(max(available, 0))} of memory available: use "
                         "smaller dense layers or pool the images more before them")


# ---- the model ---------------------------------------------------------------------------------


class ConvNet(HostParameters):
    """Convolution, pooling and dense layers (a spec, see the module), ending in ``dense(num_classes)`` logits.

    ``input_shape`` is the data set's ``image_shape``: ``(28, 28)`` (grey) or ``(32, 32, 3)`` (HWC). The model
    takes the flat float rows ``(N, prod(input_shape))`` the training loop gives the MLP and turns them into
    NCHW images itself. It has the MLP's interface towards fit, evaluate, predict, checkpoints, pickling and
    copying; ``params`` is ``[W1, b1, W2, b2, ...]``, one pair per conv or dense layer.
    """

    _PICKLED = ("be", "params", "plan")

    def __init__(self, layers: str, input_shape: Sequence[int], num_classes: int, *, seed: int = 0,
                 dtype: Any = np.float32, backend: Backend | str = "numpy") -> None:
        if np.dtype(dtype).name not in ("float32", "float64"):
            raise TypeError(f"model dtype must be float32 or float64, got {np.dtype(dtype).name}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        image_chw(input_shape)  # a clear error for anything but (H, W) or (H, W, C)
        self.layers = layers
        self.input_shape = tuple(int(s) for s in input_shape)
        self.classes = int(num_classes)
        self.plan = plan_layers(layers, self.input_shape, self.classes)
        self.seed = seed
        self.dtype = np.dtype(dtype)
        shapes = param_shapes(self.plan)
        _check_fits_in_memory(shapes, self.dtype, layers)
        rng = np.random.default_rng(seed)
        host = []
        for weight_shape, bias_shape in zip(shapes[::2], shapes[1::2]):
            # torch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), and
            # the same bound for the bias; a dense weight (in, out) has fan_in = in, a conv's C/groups * k * k
            fan_in = math.prod(weight_shape[1:]) if len(weight_shape) == 4 else weight_shape[0]
            bound = 1.0 / math.sqrt(fan_in)
            host.append(rng.uniform(-bound, bound, size=weight_shape).astype(self.dtype))
            host.append(rng.uniform(-bound, bound, size=bias_shape).astype(self.dtype))
        self.be = get_backend("numpy")
        self.params: list[Array] = host
        self.loss: str | None = None  # what fit trained it with (checkpoints keep them), as the MLP's
        self.target_mean: tuple[float, ...] | None = None
        self.target_std: tuple[float, ...] | None = None
        self.to(get_backend(backend))

    def config(self) -> dict:
        return {"kind": "convnet", "layers": self.layers, "input_shape": list(self.input_shape),
                "num_classes": self.classes, "seed": self.seed, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config: dict, params: Sequence[np.ndarray], backend: Backend | str = "numpy") -> ConvNet:
        model = cls(config["layers"], config["input_shape"], config["num_classes"], seed=config["seed"],
                    dtype=config["dtype"])
        expected = [tuple(np.shape(p)) for p in model.params]
        given = [tuple(np.shape(p)) for p in params]
        if expected != given:
            raise ValueError(f"parameters of shapes {given} do not fit the ConvNet {config['layers']!r} "
                             f"({expected})")
        model.params = [np.array(p, dtype=model.dtype) for p in params]  # a copy: training writes in place
        return model.to(backend)

    def _pickled_name(self, state: dict) -> str:
        return f"the ConvNet {state.get('layers')!r}"

    def _unpickled(self) -> None:
        self.plan = plan_layers(self.layers, self.input_shape, self.classes)

    @property
    def num_classes(self) -> int:
        return self.classes

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_outputs(self) -> int:
        return self.classes

    def __repr__(self) -> str:
        name = self.layers if self.layers in NAMED else "ConvNet"
        return (f"{name} {'x'.join(map(str, image_chw(self.input_shape)))} -> {self.classes} on {self.be.name} "
                f"({self.num_parameters:,} parameters, {self.dtype.name})")

    # ---- forward and backward -------------------------------------------------------------

    def forward(self, x: Array) -> tuple[Array, list]:
        """Logits for the rows ``x`` ``(N, prod(input_shape))``, and the cache backward needs (each layer's
        input, or what stands for it)."""
        be = self.be
        h = rows_to_images(be, x, self.input_shape)
        cache = []
        for layer in self.plan:
            cache.append(h)
            h = self._forward(layer, h)
        return h, cache

    def _forward(self, layer: Planned, h: Array) -> Array:
        be, kind, args = self.be, layer.spec.kind, layer.spec.args
        if kind == "conv":
            i = layer.param_index
            return conv_forward(be, h, self.params[i], self.params[i + 1], conv_options(layer.spec))
        if kind == "dense":
            i = layer.param_index
            forward = dense_relu_forward if layer.fused_relu else dense_forward
            return forward(be, h, self.params[i], self.params[i + 1])
        if kind == "maxpool":
            return max_pool_forward(be, h, args["k"], args.get("stride"))
        if kind == "avgpool":
            return avg_pool_forward(be, h, args["k"], args.get("stride"))
        if kind == "flatten":
            return flatten_forward(be, h)
        return _ACTIVATIONS[kind].forward(be, h)

    def backward(self, cache: list, dlogits: Array) -> list[Array]:
        """Gradients ``[dW1, db1, ...]`` of the loss, given ``dlogits = d loss / d logits``."""
        grads: list[Array] = [None] * len(self.params)
        first = min(i for i, layer in enumerate(self.plan) if layer.param_index is not None)
        dy = dlogits
        for position in range(len(self.plan) - 1, first - 1, -1):  # nothing before the first weights needs one
            layer = self.plan[position]
            # the output of this layer is the next layer's cached input (the logits' gradient for the last)
            output = cache[position + 1] if position + 1 < len(cache) else None
            dy = self._backward(layer, cache[position], output, dy, grads, need_dx=position > first)
        return grads

    def _backward(self, layer: Planned, x: Array, y: Array | None, dy: Array, grads: list, *,
                  need_dx: bool) -> Array | None:
        be, kind, args = self.be, layer.spec.kind, layer.spec.args
        i = layer.param_index
        if kind == "conv":
            dx, grads[i], grads[i + 1] = conv_backward(be, x, self.params[i], dy, conv_options(layer.spec),
                                                       need_dx=need_dx)
            return dx
        if kind == "dense":
            dbias = None
            if layer.fused_relu:  # y is the ReLU's output: the gradient through it and the bias's in one pass
                dy, dbias = _ACTIVATIONS["relu"].bias_backward(be, y, dy)
            dx, grads[i], grads[i + 1] = dense_backward(be, x, self.params[i], dy, need_dx=need_dx, dbias=dbias)
            return dx
        if kind == "maxpool":
            return max_pool_backward(be, x, dy, args["k"], args.get("stride"))
        if kind == "avgpool":
            return avg_pool_backward(be, tuple(x.shape), dy, args["k"], args.get("stride"))
        if kind == "flatten":
            return flatten_backward(be, tuple(x.shape), dy)
        return _ACTIVATIONS[kind].backward(be, y, dy)

    def logits(self, x: Array) -> Array:
        return self.forward(x)[0]


def model_from_config(config: dict, params: Sequence[np.ndarray], backend: Backend | str = "numpy") -> Any:
    """The model a checkpoint's config describes: a :class:`ConvNet` for ``"kind": "convnet"``, else the MLP
    (configs before the kind was recorded are MLPs')."""
    from softgrad.training.models import MLP

    if isinstance(config, dict) and config.get("kind") == "convnet":
        return ConvNet.from_config(config, params, backend)
    return MLP.from_config(config, params, backend)


__all__ = ["ConvNet", "GRAMMAR", "LayerSpec", "NAMED", "Planned", "image_chw", "model_from_config", "param_shapes",
           "parse_layers", "plan_layers", "resolve_layers"]
