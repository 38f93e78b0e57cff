"""The bottom layer: the Backend protocol, errors, input checks, losses, optimizers, the registry, file helpers.

Nothing here imports a layer above it (backends, training, bench, the CLI) and
no array library at module level; backends are found through the registry's
entry points, never imported by name.
"""

from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.losses import LOSSES, Loss, get_loss, register_loss
from softgrad.numerics.optim import OPTIMIZERS, Optimizer, get_optimizer, register_optimizer
from softgrad.numerics.optim.sgd import SGDState
from softgrad.numerics.protocol import Backend, Reduction
from softgrad.numerics.registry import available_backends, backend_names, get_backend, register_backend

__all__ = ["LOSSES", "OPTIMIZERS", "Backend", "BackendUnavailableError", "Loss", "Optimizer", "Reduction",
           "SGDState", "available_backends", "backend_names", "get_backend", "get_loss", "get_optimizer",
           "register_backend", "register_loss", "register_optimizer"]
