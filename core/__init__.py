"""softgrad: train classifiers and regressors with hand-written backward passes on pluggable array backends
(NumPy, PyTorch, JAX, CuPy, array-api-strict).

What a user imports, all from ``softgrad``::

    import softgrad

    data = softgrad.load("mnist")                       # the MNIST subset shipped with softgrad
    model = softgrad.classic_mlp(data.num_features, data.num_classes, backend="numpy")
    history = softgrad.fit(model, data, epochs=2)
    softgrad.evaluate(model, data.x_test, data.y_test)  # {"accuracy": ..., "loss": ...}
    softgrad.predict(model, data.x_test[:5])            # class indices

- backends: :func:`get_backend`, :func:`available_backends`, :func:`backend_names`, :func:`register_backend`,
  :class:`Backend` (the protocol), :class:`BackendHooks` (its optional half), :func:`method_of`, :class:`BackendUnavailableError`;
- models and training: :class:`MLP`, :class:`ConvNet` (convolutional networks from a layer spec),
  :func:`classic_mlp`, :func:`softmax_regression`, :func:`fit`,
  :func:`evaluate`, :func:`predict`, :class:`TrainingDivergedError`, :class:`StopTraining`, :class:`TensorBoardCallback` (a ``fit`` callback; ``softgrad[tensorboard]``), :class:`CheckpointError`, :class:`TorchCommunicator` (the ranks of a torchrun launch, for ``fit(communicator=...)``);
- weights out and in: :func:`export` (``.safetensors`` for torch, ``.onnx``), :func:`from_torch`;
- data: :func:`load`, :func:`from_arrays`, :class:`Dataset`, :class:`DatasetError`;
- losses and optimizers by name: :data:`LOSSES`, :data:`OPTIMIZERS`, :func:`get_loss`, :func:`get_optimizer`,
  :func:`register_loss`, :func:`register_optimizer`, :class:`Loss`, :class:`Optimizer`, :class:`SGDState`,
  :data:`Reduction`;
- ``__version__``.

Everything else (``softgrad.numerics``, ``softgrad.training``, ``softgrad.backends``, ``softgrad.datasets``,
``softgrad.bench``) is the implementation, importable but free to change. The command line is ``softgrad``
(``softgrad/__main__.py``; the subcommands in ``softgrad.commands``).

Importing ``softgrad`` imports no array library: each name above is imported from its module the first time
it is used (:data:`_PUBLIC`, module ``__getattr__``), so ``softgrad --help`` and ``import softgrad`` stay fast.

``softgrad.evaluate`` is the function :func:`softgrad.training.inference.evaluate`; the command ``softgrad
evaluate`` is the module ``softgrad.commands.evaluate`` (the commands live in ``softgrad.commands``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: every public name -> the module it comes from; imported on first use
_PUBLIC: dict[str, str] = {
    # backends
    "Backend": "softgrad.numerics.protocol",
    "BackendHooks": "softgrad.numerics.hooks",
    "BackendUnavailableError": "softgrad.numerics.errors",
    "available_backends": "softgrad.numerics.registry",
    "backend_names": "softgrad.numerics.registry",
    "get_backend": "softgrad.numerics.registry",
    "register_backend": "softgrad.numerics.registry",
    # losses and optimizers by name
    "LOSSES": "softgrad.numerics.losses",
    "Loss": "softgrad.numerics.losses",
    "Reduction": "softgrad.numerics.protocol",
    "get_loss": "softgrad.numerics.losses",
    "register_loss": "softgrad.numerics.losses",
    "method_of": "softgrad.numerics.methods",
    "OPTIMIZERS": "softgrad.numerics.optim",
    "Optimizer": "softgrad.numerics.optim",
    "SGDState": "softgrad.numerics.optim.sgd",
    "get_optimizer": "softgrad.numerics.optim",
    "register_optimizer": "softgrad.numerics.optim",
    # models and training
    "MLP": "softgrad.training.models",
    "ConvNet": "softgrad.training.convnet",
    "classic_mlp": "softgrad.training.models",
    "softmax_regression": "softgrad.training.models",
    "fit": "softgrad.training.fitting",
    "evaluate": "softgrad.training.inference",
    "predict": "softgrad.training.inference",
    "TrainingDivergedError": "softgrad.training.fitting",
    "StopTraining": "softgrad.training.fitting",
    "CheckpointError": "softgrad.training.checkpoint",
    "TensorBoardCallback": "softgrad.training.tensorboard",
    "read_metrics": "softgrad.training.metrics_stream",
    "TorchCommunicator": "softgrad.training.torch_communicator",
    # weights out and in
    "export": "softgrad.training.exporting",
    "from_torch": "softgrad.training.torch_import",
    # data sets
    "Dataset": "softgrad.datasets",
    "DatasetError": "softgrad.datasets",
    "from_arrays": "softgrad.datasets",
    "load": "softgrad.datasets",
}

# the same names as _PUBLIC, written out for type checkers and linters (tests/test_public_api.py)
__all__ = ["Backend", "BackendHooks", "BackendUnavailableError", "CheckpointError", "ConvNet", "Dataset", "DatasetError", "LOSSES",
           "Loss", "MLP", "OPTIMIZERS", "Optimizer", "Reduction", "SGDState", "StopTraining", "TensorBoardCallback", "TorchCommunicator", "TrainingDivergedError",
           "available_backends", "backend_names", "classic_mlp", "evaluate", "export", "fit", "from_arrays", "from_torch",
           "get_backend", "get_loss", "get_optimizer", "load", "method_of", "predict", "read_metrics", "register_backend",
           "register_loss", "register_optimizer", "softmax_regression"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each comes from _PUBLIC on first use
    from softgrad.datasets import Dataset, DatasetError, from_arrays, load
    from softgrad.numerics.errors import BackendUnavailableError
    from softgrad.numerics.hooks import BackendHooks
    from softgrad.numerics.losses import LOSSES, Loss, get_loss, register_loss
    from softgrad.numerics.methods import method_of
    from softgrad.numerics.optim import OPTIMIZERS, Optimizer, get_optimizer, register_optimizer
    from softgrad.numerics.optim.sgd import SGDState
    from softgrad.numerics.protocol import Backend, Reduction
    from softgrad.numerics.registry import available_backends, backend_names, get_backend, register_backend
    from softgrad.training.checkpoint import CheckpointError
    from softgrad.training.convnet import ConvNet
    from softgrad.training.exporting import export
    from softgrad.training.fitting import StopTraining, TrainingDivergedError, fit
    from softgrad.training.inference import evaluate, predict
    from softgrad.training.metrics_stream import read_metrics
    from softgrad.training.models import MLP, classic_mlp, softmax_regression
    from softgrad.training.tensorboard import TensorBoardCallback
    from softgrad.training.torch_communicator import TorchCommunicator
    from softgrad.training.torch_import import from_torch

    __version__: str


def _version() -> str:
    """The installed distribution's version; in a checkout that was never installed, ``0+unknown``."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover  (Python < 3.8)
        return "0+unknown"
    try:
        return version("softgrad")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        # AttributeError, not ImportError: `from softgrad import datasets` then imports the subpackage
        raise AttributeError(f"module 'softgrad' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, "__version__"})
