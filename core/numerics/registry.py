"""The backend registry: names mapped to factories, filled from the ``softgrad.backends`` entry points.

Every backend, the built-in ones included, is declared the same way: an entry
point in the group ``softgrad.backends`` whose name is the backend's name and
whose value is a callable returning a :class:`~softgrad.numerics.protocol.Backend`
(NetworkX discovers its backends the same way). softgrad's own are declared in
its ``pyproject.toml``::

    [project.entry-points."softgrad.backends"]
    numpy = "softgrad.backends.numpy_backend:NumPyBackend"

A plugin declares its own in its distribution, or calls :func:`register_backend`
at run time. Nothing is imported until a backend is asked for, and a plugin
that fails to import or to start is reported with its reason by
:func:`available_backends`; it never breaks the others.

A name ``base:option`` that is not registered itself is handed to the factory of
``base`` as its one argument: ``torch:cuda:1`` is ``TorchBackend("cuda:1")``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import threading
from collections.abc import Callable

from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.protocol import Backend, complete, missing_members

ENTRY_POINT_GROUP = "softgrad.backends"

BackendFactory = Callable[..., Backend]


class _Entry:
    """A registered backend: a factory, or an entry point loaded at first use."""

    def __init__(self, name: str, factory: BackendFactory | None = None,
                 entry_point: importlib.metadata.EntryPoint | None = None) -> None:
        self.name = name
        self._factory = factory
        self.entry_point = entry_point

    @property
    def origin(self) -> str:
        if self.entry_point is None:
            return "register_backend"
        dist = getattr(self.entry_point, "dist", None)
        where = f" of {dist.name}" if dist is not None and getattr(dist, "name", None) else ""
        return f"entry point {self.entry_point.value!r}{where}"

    def factory(self) -> BackendFactory:
        if self._factory is None:
            try:
                self._factory = self.entry_point.load()
            except KeyboardInterrupt:  # the user's Ctrl-C, not the plugin's failure
                raise
            except BaseException as error:  # noqa: BLE001  a broken plugin, even one that calls sys.exit at
                # import: reported as its failure, never fatal for the others nor for the program asking
                raise BackendUnavailableError(
                    f"backend {self.name!r}: its plugin failed to import ({self.origin}): "
                    f"{_describe(error)}") from error
            if not callable(self._factory):
                raise BackendUnavailableError(
                    f"backend {self.name!r}: {self.origin} is a {type(self._factory).__name__}, "
                    "not a callable that returns a Backend")
        return self._factory


_lock = threading.RLock()
_entries: dict[str, _Entry] = {}
_instances: dict[str, Backend] = {}
_discovered = False


def _discover() -> None:
    """Read the entry points once (the first time any registry function is called)."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        # numpy first (the default, and the reference every backend is checked against), then softgrad's
        # own, then plugins; by name within each (setuptools writes entry points sorted anyway)
        found.sort(key=lambda ep: (ep.name != "numpy", _distribution(ep) != "softgrad", ep.name))
        for entry_point in found:
            # a name registered twice (two distributions, or register_backend first): the first stays
            _entries.setdefault(entry_point.name, _Entry(entry_point.name, entry_point=entry_point))


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return getattr(dist, "name", None)


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Register ``factory`` (a callable returning a Backend) under ``name``.

    Raises ``ValueError`` if ``name`` is taken, unless ``replace=True``; a
    replaced backend's cached instance is dropped.
    """
    if not isinstance(name, str) or not name or name == "auto" or name != name.strip():
        raise ValueError(f"register_backend: {name!r} cannot be a backend name")
    if not callable(factory):
        raise TypeError(f"register_backend: factory must be callable, got {type(factory).__name__}")
    _discover()
    with _lock:
        if name in _entries and not replace:
            raise ValueError(f"register_backend: a backend named {name!r} is already registered "
                             f"({_entries[name].origin}); pass replace=True to replace it")
        _entries[name] = _Entry(name, factory=factory)
        _instances.pop(name, None)


def unregister_backend(name: str) -> None:
    """Forget ``name`` (for tests and for plugins that register temporarily)."""
    _discover()
    with _lock:
        _entries.pop(name, None)
        _instances.pop(name, None)


def backend_names() -> list[str]:
    """Every registered name, available here or not, in registration order."""
    _discover()
    return list(_entries)


def _create(name: str) -> Backend:
    entry = _entries.get(name)
    argument: tuple = ()
    if entry is None and ":" in name:
        base, option = name.split(":", 1)
        base_entry = _entries.get(base)
        if base_entry is not None and _takes_an_argument(base_entry.factory()):
            entry, argument = base_entry, (option,)
    if entry is None:
        known = ", ".join(_entries) or "none (is softgrad installed? pip install -e .)"
        raise BackendUnavailableError(f"unknown backend {name!r}; known backends: {known}")
    factory = entry.factory()
    try:
        backend = factory(*argument)
    except (BackendUnavailableError, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001  sys.exit in a factory is its failure too (see _Entry.factory)
        raise BackendUnavailableError(
            f"backend {name!r} failed to start ({entry.origin}): {_describe(error)}") from error
    missing = missing_members(complete(backend))
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r} ({entry.origin}) returned a {type(backend).__name__} that does not implement "
            f"the Backend protocol: it lacks {', '.join(missing)}")
    return backend


def _describe(error: BaseException) -> str:
    """A plugin's failure in one line; ``sys.exit(3)`` as what the plugin did, not a bare ``SystemExit: 3``."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"  # one line, whatever the plugin wrote


def _takes_an_argument(factory: Callable) -> bool:
    try:
        inspect.signature(factory).bind("option")
    except (TypeError, ValueError):
        return False
    return True


def get_backend(name: str | Backend = "numpy") -> Backend:
    """The backend called ``name``, created once and then shared; a Backend instance is returned as it is.

    Raises :class:`BackendUnavailableError` for an unknown name, a plugin that
    fails to import, a framework that is not installed or a missing device; its
    message says why and, where one exists, what to install.
    """
    if not isinstance(name, str):
        if isinstance(complete(name), Backend):  # a backend written before on_gpu, xp, peak_memory: defaults
            return name
        raise TypeError(f"get_backend: expected a backend name such as 'numpy', got {type(name).__name__}")
    if name == "auto":
        raise BackendUnavailableError(
            "get_backend: 'auto' is chosen per network and batch size; use fit(..., backend='auto') or "
            "softgrad.training.auto.pick_backend(...)")
    _discover()
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            backend = _instances[name] = _create(name)
    return backend


def available_backends() -> dict[str, str]:
    """Each registered name mapped to ``"available"`` or the one-line reason it is not."""
    status = {}
    for name in backend_names():
        try:
            get_backend(name)
        except BackendUnavailableError as error:
            status[name] = str(error)
        else:
            status[name] = "available"
    return status


__all__ = ["ENTRY_POINT_GROUP", "available_backends", "backend_names", "get_backend", "register_backend",
           "unregister_backend"]
