"""Models: softmax regression and the MLP, with hand-written backward passes.

Parameters are initialised on the host from a seeded NumPy generator, then
moved to a backend, so one seed gives the same weights on every backend.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.protocol import Array, Backend
from softgrad.numerics.registry import get_backend
from softgrad.training.layers import (
    dense_backward,
    dense_forward,
    dense_relu_forward,
    init_dense,
    make_activation,
)

CLASSIC_MLP_HIDDEN = (512, 256, 128, 64)
#: the networks the command line and bench name, by their hidden widths: softmax regression has none
MODELS = {"linear": (), "mlp": CLASSIC_MLP_HIDDEN}


def parameter_count(widths: Sequence[int]) -> int:
    """The number of weights and biases of an MLP of these widths."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:]))


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the machine's available memory, or the container's
    (cgroup) limit less its use where that is lower; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _gib(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size / 2**20:,.1f} MiB"


def check_fits_in_memory(widths: Sequence[int], dtype: np.dtype) -> None:
    """A ValueError naming the model's size, before anything is allocated, for a model whose parameters
    would not fit in the memory available (a MemoryError from deep inside NumPy otherwise, or swapping)."""
    count = parameter_count(widths)
    # the weights are drawn in float64 one layer at a time, then converted: the largest layer twice more
    largest = max(fan_in * fan_out for fan_in, fan_out in zip(widths, widths[1:]))
    needed = count * dtype.itemsize + largest * (8 + dtype.itemsize)
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"the model {'-'.join(map(str, widths))} has {count:,} parameters, "
                         f"{_gib(count * dtype.itemsize)} as {dtype.name} ({_gib(needed)} to initialise); "
                         f"this machine has {_gib(max(available, 0))} of memory available: use smaller widths")


class HostParameters:
    """What every softgrad model shares: parameters ``params`` on a backend ``be`` (initialised on the host,
    moved by :meth:`to`), pickling (the backend by name, the parameters as NumPy arrays) and copying.
    A subclass names what its pickled state leaves out (``_PICKLED``), says what it is in messages
    (:meth:`_pickled_name`) and rebuilds what it left out (:meth:`_unpickled`)."""

    be: Backend
    params: list
    dtype: np.dtype

    # ---- placement and persistence --------------------------------------------------------

    def to(self, backend: Backend | str) -> Any:
        """Move the parameters to ``backend`` (in place); returns the model."""
        be = get_backend(backend)
        if be is not self.be:
            # copies, so the model never shares memory with arrays it held before
            host = [np.array(self.be.to_numpy(p)) for p in self.params]
            self.params = [be.asarray(p) for p in host]
            self.be = be
        return self

    # ---- pickling and copying -------------------------------------------------------------
    # The model holds its backend (shared by every model on it, and holding modules, which don't pickle)
    # and arrays of that backend. Pickled, it names the backend by its registry name and holds the
    # parameters as NumPy arrays; unpickled, it gets the backend by name where it is loaded.

    _PICKLED: tuple[str, ...] = ("be", "params")  # the attributes the state holds in another form
    _PICKLE_FORMAT = 1

    def __getstate__(self) -> dict:
        """Every attribute but those of ``_PICKLED`` (the backend, the parameters, what is rebuilt: the layers'
        shapes, seed, dtype and what fit recorded stay), with the backend's name and the parameters as NumPy
        arrays."""
        state = {key: value for key, value in self.__dict__.items() if key not in self._PICKLED}
        state["pickle_format"] = self._PICKLE_FORMAT
        state["backend"] = self.be.name
        state["params"] = [np.array(self.be.to_numpy(p)) for p in self.params]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        found = state.pop("pickle_format", None)
        if found != self._PICKLE_FORMAT:
            raise ValueError(f"cannot unpickle this {type(self).__name__}: it is in pickle format {found!r}, and "
                             f"this softgrad reads format {self._PICKLE_FORMAT}")
        name, host = state.pop("backend"), state.pop("params")
        try:
            be = get_backend(name)
        except BackendUnavailableError as error:
            reason = " ".join(str(error).split())  # one line, whatever the backend's message spans
            raise BackendUnavailableError(
                f"cannot unpickle {self._pickled_name(state)}: it was pickled on backend {name!r}, which is not "
                f"available here ({reason}); pickle it after .to('numpy') to load it anywhere") from None
        self.__dict__.update(state)
        self._unpickled()
        self.be = be
        self.params = [be.asarray(np.asarray(p, dtype=self.dtype)) for p in host]

    def __deepcopy__(self, memo: dict) -> Any:
        """An independent model on the same backend: its own copy of every parameter and attribute."""
        duplicate = type(self).__new__(type(self))
        memo[id(self)] = duplicate
        for key, value in self.__dict__.items():
            if key not in ("be", "params"):
                duplicate.__dict__[key] = copy.deepcopy(value, memo)
        duplicate.be = self.be  # one instance per backend name in a process: shared, never copied
        duplicate.params = [self.be.asarray(np.array(self.be.to_numpy(p))) for p in self.params]
        return duplicate

    def __copy__(self) -> Any:
        """The same as deepcopy. The model's value is its parameters, so a copy has its own (as ``copy.copy``
        of a NumPy array copies its data): shared ones would make training the copy train the original on
        NumPy, whose optimizers write in place, and not on JAX, whose arrays are immutable."""
        return self.__deepcopy__({})

    def _pickled_name(self, state: dict) -> str:
        return f"the {type(self).__name__}"

    def _unpickled(self) -> None:
        """Rebuild what the pickled state left out (beyond the backend and the parameters)."""

    @property
    def num_parameters(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params)


class MLP(HostParameters):
    """A stack of dense layers with one hidden activation, ending in logits.

    ``widths`` lists every layer's width, input first and classes last:
    ``[784, 512, 256, 128, 64, 10]`` is the classic MNIST network; ``[784, 10]``
    is softmax regression. Hidden layers use He initialisation for the ReLU
    family and Glorot for sigmoid and tanh; the output layer uses Glorot.
    ``params`` is the flat list ``[W1, b1, W2, b2, ...]`` of arrays of the
    current backend (NumPy until :meth:`to` moves them).

    A model pickles (its backend by name, its parameters as NumPy arrays: the loading process
    gets the backend by that name), and ``copy.deepcopy`` and ``copy.copy`` give an independent
    model on the same backend.
    """

    def __init__(self, widths: Sequence[int], activation: str = "relu", *, seed: int = 0,
                 dtype: Any = np.float32, backend: Backend | str = "numpy") -> None:
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"an MLP needs at least an input and an output width, all >= 1; got {widths}")
        if np.dtype(dtype).name not in ("float32", "float64"):
            raise TypeError(f"model dtype must be float32 or float64, got {np.dtype(dtype).name}")
        check_fits_in_memory(widths, np.dtype(dtype))
        self.widths = widths
        self.activation_name = activation
        self.activation = make_activation(activation)
        self.seed = seed
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        hidden_scheme = "he" if activation in ("relu", "leaky_relu") else "glorot"
        host = []
        for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            scheme = "glorot" if i == len(widths) - 2 else hidden_scheme
            host += init_dense(rng, fan_in, fan_out, scheme, self.dtype)
        self.be = get_backend("numpy")
        self.params: list[Array] = host
        # what fit trained it with, so predict and evaluate answer in the task's terms (checkpoints keep them)
        self.loss: str | None = None
        self.target_mean: tuple[float, ...] | None = None  # a regressor's outputs * target_std + target_mean
        self.target_std: tuple[float, ...] | None = None
        self.to(get_backend(backend))

    def config(self) -> dict:
        return {"widths": self.widths, "activation": self.activation_name, "seed": self.seed,
                "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config: dict, params: Sequence[np.ndarray], backend: Backend | str = "numpy") -> MLP:
        model = cls(config["widths"], config["activation"], seed=config["seed"], dtype=config["dtype"])
        expected = [tuple(np.shape(p)) for p in model.params]
        given = [tuple(np.shape(p)) for p in params]
        if expected != given:
            raise ValueError(f"parameters of shapes {given} do not fit an MLP {config['widths']} ({expected})")
        model.params = [np.array(p, dtype=model.dtype) for p in params]  # a copy: training writes in place
        return model.to(backend)

    # ---- pickling: what the MLP's state leaves out and rebuilds ---------------------------------

    _PICKLED = ("be", "activation", "params")

    def _pickled_name(self, state: dict) -> str:
        return f"the MLP {'-'.join(map(str, state.get('widths', ())))}"

    def _unpickled(self) -> None:
        self.activation = make_activation(self.activation_name)

    @property
    def num_classes(self) -> int:
        return self.widths[-1]

    @property
    def num_features(self) -> int:
        """The width of the rows the model takes."""
        return self.widths[0]

    @property
    def num_outputs(self) -> int:
        """The width of the logits (or values) it gives."""
        return self.widths[-1]

    def __repr__(self) -> str:
        shape = "-".join(map(str, self.widths))
        # one layer is softmax regression under cross-entropy and linear regression under MSE: the model can't tell
        kind = f"linear model {shape}" if len(self.widths) == 2 else f"MLP {shape} {self.activation_name}"
        return f"{kind} on {self.be.name} ({self.num_parameters:,} parameters, {self.dtype.name})"

    # ---- forward and backward -------------------------------------------------------------

    def forward(self, x: Array) -> tuple[Array, list]:
        """Logits for the batch ``x`` ``(N, widths[0])``, and the cache backward needs."""
        be, layers = self.be, len(self.widths) - 1
        inputs = []
        h = x
        for i in range(layers):
            inputs.append(h)
            last = i == layers - 1
            h = dense_forward(be, h, self.params[2 * i], self.params[2 * i + 1]) if last else self._hidden(h, i)
        return h, inputs

    def _hidden(self, h: Array, i: int) -> Array:
        """Hidden layer ``i``: dense, then the activation (a ReLU fused with its layer, ``be.affine_relu``)."""
        weight, bias = self.params[2 * i], self.params[2 * i + 1]
        if self.activation_name == "relu":
            return dense_relu_forward(self.be, h, weight, bias)
        return self.activation.forward(self.be, dense_forward(self.be, h, weight, bias))

    def backward(self, cache: list, dlogits: Array) -> list[Array]:
        """Gradients ``[dW1, db1, ...]`` of the loss, given ``dlogits = d loss / d logits``."""
        be, layers = self.be, len(self.widths) - 1
        grads: list[Array] = [None] * len(self.params)
        dy, dbias = dlogits, None
        fused = hasattr(self.activation, "bias_backward")  # the ReLU: its backward also sums the bias gradient
        for i in reversed(range(layers)):
            x = cache[i]
            dx, grads[2 * i], grads[2 * i + 1] = dense_backward(be, x, self.params[2 * i], dy, need_dx=i > 0,
                                                                dbias=dbias)
            if i > 0:  # x is the activation's output
                dy, dbias = self.activation.bias_backward(be, x, dx) if fused else (self.activation.backward(be, x, dx), None)
        return grads

    def logits(self, x: Array) -> Array:
        return self.forward(x)[0]

    def chunked_head_loss_and_grads(self, x: Array, y: Array, **options) -> tuple[Array, list[Array]]:
        """The cross-entropy of the batch and the gradients ``[dW1, db1, ...]``, with the last layer
        and the loss fused: ``be.linear_cross_entropy_and_grad`` never holds the batch's logits (for a
        large number of classes). The same loss and gradients as ``forward``, ``cross_entropy_and_grad``
        and ``backward``; ``options`` are cross-entropy's and linear_cross_entropy's (``chunk_size``)."""
        be, layers = self.be, len(self.widths) - 1
        inputs = []
        h = x
        for i in range(layers - 1):
            inputs.append(h)
            h = self._hidden(h, i)
        w, b = self.params[-2], self.params[-1]  # w is (in, out); linear_cross_entropy takes (out, in)
        loss, (dh, dw_t, db) = be.linear_cross_entropy_and_grad(h, w.T, y, linear_bias=b, **options)
        grads: list[Array] = [None] * len(self.params)
        grads[-2] = dw_t.T  # the parameter's (in, out) layout: a transposed view, as every optimizer takes
        grads[-1] = db
        dy = dh
        for i in reversed(range(layers - 1)):
            dy = self.activation.backward(be, h if i == layers - 2 else inputs[i + 1], dy)
            dx, grads[2 * i], grads[2 * i + 1] = dense_backward(be, inputs[i], self.params[2 * i], dy, need_dx=i > 0)
            dy = dx
        return loss, grads


def softmax_regression(num_features: int, num_classes: int, **kwargs) -> MLP:
    """One linear layer: logits = x W + b."""
    return MLP([num_features, num_classes], **kwargs)


def classic_mlp(num_features: int = 784, num_classes: int = 10, **kwargs) -> MLP:
    """The classic 784-512-256-128-64-10 ReLU network."""
    return MLP([num_features, *CLASSIC_MLP_HIDDEN, num_classes], **kwargs)
