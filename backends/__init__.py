"""Backends: the shared array-API implementation bound to NumPy, PyTorch, CuPy and array-api-strict.

Each is registered through the ``softgrad.backends`` entry points in
``pyproject.toml``, exactly as a plugin from outside this repository is; the
registry itself lives in :mod:`softgrad.numerics.registry` and is re-exported here.
``get_backend("numpy")`` imports neither torch nor cupy.
"""

from __future__ import annotations

from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.registry import (
           available_backends,
           backend_names,
           get_backend,
           register_backend,
           unregister_backend,
)

__all__ = ["BackendUnavailableError", "available_backends", "backend_names", "get_backend", "register_backend",
           "unregister_backend"]
