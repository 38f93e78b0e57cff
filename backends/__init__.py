"""Backends: a registry from a name to a lazily imported class.

``get_backend("numpy")`` imports neither torch nor cupy; a framework is
imported only when its backend is asked for.
"""

from __future__ import annotations

import importlib

from core.errors import BackendUnavailableError
from core.protocol import Backend

# name -> ("module:Class", constructor keyword arguments)
_REGISTRY: dict[str, tuple[str, dict]] = {
    "numpy": ("backends.numpy_backend:NumPyBackend", {}),
    "torch": ("backends.torch_backend:TorchBackend", {"device": "cpu"}),
    "torch:cuda": ("backends.torch_backend:TorchBackend", {"device": "cuda"}),
    "cupy": ("backends.cupy_backend:CuPyBackend", {}),
}

_instances: dict[str, Backend] = {}


def backend_names() -> list[str]:
    """Every name ``get_backend`` knows, available here or not."""
    return list(_REGISTRY)


def _resolve(name: str) -> tuple[str, dict]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    # "torch:cuda:1" and other explicit torch devices
    if name.startswith("torch:cuda:") and name.rsplit(":", 1)[1].isdigit():
        return _REGISTRY["torch"][0], {"device": name.split(":", 1)[1]}
    raise BackendUnavailableError(
        f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)} (and 'torch:cuda:N')"
    )


def get_backend(name: str | Backend = "numpy") -> Backend:
    """The backend called ``name`` (a Backend instance is returned as it is).

    Raises BackendUnavailableError for an unknown name, a framework that is
    not installed or a missing CUDA device; its message says what to install.
    """
    if not isinstance(name, str):
        if isinstance(name, Backend):
            return name
        raise TypeError(f"get_backend: expected a backend name such as 'numpy', got {type(name).__name__}")
    if name not in _instances:
        path, kwargs = _resolve(name)
        module_name, class_name = path.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _instances[name] = cls(**kwargs)
    return _instances[name]


def available_backends() -> dict[str, str]:
    """Each known name mapped to ``"available"`` or the reason it is not."""
    status = {}
    for name in _REGISTRY:
        try:
            get_backend(name)
        except BackendUnavailableError as error:
            status[name] = str(error)
        else:
            status[name] = "available"
    return status


__all__ = ["BackendUnavailableError", "available_backends", "backend_names", "get_backend"]
