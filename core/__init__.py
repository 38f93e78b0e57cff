"""softgrad's backend-agnostic core, in two layers (see the README's "Layout"):

- ``core.base``: the bottom layer: the Backend protocol, errors, input checks, the
  definitions of losses and optimizers, the backend registry, file helpers;
- ``core.training``: models, layers, the training loop, checkpoints and reports, above
  the backends, which they reach only through the registry;
- ``core.train``: the command line, on top.

Importing ``core`` imports no array library; a framework (torch, cupy) is imported
only when its backend is asked for.
"""

from softgrad.base import *  # noqa: F403  (the bottom layer's public names)
from softgrad.base import __all__  # noqa: F401
