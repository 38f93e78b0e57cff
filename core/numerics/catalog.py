"""A catalog of named units (losses, optimizers): one place to register them, to plug them in and to look them up.

A distribution outside softgrad plugs a unit in through an entry point, as a
backend plugs in (see :mod:`softgrad.numerics.registry`)::

    [project.entry-points."softgrad.losses"]
    half_squared_error = "my_package.losses:HALF_SQUARED_ERROR"

The entry point's name is the unit's name; its value is the unit (a ``Loss``
or an ``Optimizer``) or a callable that returns one. The entry points are read
once, the first time the catalog is read (not when softgrad is imported), so a
plugin may import softgrad itself. A plugin that fails to import, or gives
something that is no unit, is recorded with its reason (:meth:`Catalog.broken`,
and in the error a lookup of its name raises); it never breaks the others.
A name softgrad or ``register_*`` already holds stays theirs.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

Unit = TypeVar("Unit")


class Catalog(dict, Generic[Unit]):
    """``name -> unit``, a dict that checks what it is given and says what it holds when asked for another.

    With an ``entry_point_group`` (set by :meth:`plug_in_from` once the
    built-in units are registered), every read first adds the units plugged in
    through that group, once.
    """

    def __init__(self, kind: str, unit_type: type) -> None:
        super().__init__()
        self.kind = kind
        self.unit_type = unit_type
        self.aliases: dict[str, str] = {}
        self.entry_point_group: str | None = None
        self._broken: dict[str, str] = {}
        self._discovered = False
        self._lock = threading.RLock()

    # ---- plugged-in units ------------------------------------------------------------------------------

    def plug_in_from(self, group: str) -> None:
        """Read the entry points of ``group`` at the first read of this catalog (not now)."""
        self.entry_point_group = group

    def broken(self) -> dict[str, str]:
        """Each plugged-in name that could not be loaded, mapped to the one-line reason."""
        self._discover()
        return dict(self._broken)

    def _discover(self) -> None:
        if self._discovered or self.entry_point_group is None:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True  # first: a plugin that reads the catalog while it loads does not recurse
            found = sorted(importlib.metadata.entry_points(group=self.entry_point_group),
                           key=lambda ep: (_distribution(ep) or "", ep.name))
            for entry_point in found:
                self._plug_in(entry_point)

    def _plug_in(self, entry_point: importlib.metadata.EntryPoint) -> None:
        name, origin = entry_point.name, _origin(entry_point)
        if dict.__contains__(self, name) or name in self.aliases:
            return  # softgrad's own, or registered first: it stays
        try:
            unit = entry_point.load()
            if not isinstance(unit, self.unit_type) and callable(unit):
                unit = unit()
        except KeyboardInterrupt:  # the user's Ctrl-C, not the plugin's failure
            raise
        except BaseException as error:  # noqa: BLE001  a broken plugin, even one calling sys.exit: its failure,
            # never fatal for the others nor for the program reading the catalog
            self._broken[name] = f"{self.kind} {name!r}: its plugin failed to load ({origin}): {_describe(error)}"
            return
        if not isinstance(unit, self.unit_type):
            self._broken[name] = (f"{self.kind} {name!r}: {origin} gives a {type(unit).__name__}, not a "
                                  f"{self.unit_type.__name__} (nor a callable returning one)")
        elif unit.name != name:
            self._broken[name] = (f"{self.kind} {name!r}: {origin} gives the {self.kind} {unit.name!r}; the entry "
                                  "point's name must be the name of what it gives")
        elif not dict.__contains__(self, name):  # the plugin may have registered it itself while it loaded
            dict.__setitem__(self, name, unit)

    # ---- reading: each read sees the plugged-in units -----------------------------------------------------

    # a name softgrad holds is answered without reading the entry points (the backends' class bodies look
    # their units up while softgrad is importing: no plugin is loaded then); any other read reads them first

    def __contains__(self, name: object) -> bool:
        if not super().__contains__(name):
            self._discover()
        return super().__contains__(name)

    def __getitem__(self, name: str) -> Unit:
        if not super().__contains__(name):
            self._discover()
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return super().__iter__()

    def __len__(self) -> int:
        self._discover()
        return super().__len__()

    def __repr__(self) -> str:
        self._discover()
        return super().__repr__()

    def get(self, name: str, default: Any = None) -> Any:
        if not super().__contains__(name):
            self._discover()
        return super().get(name, default)

    def keys(self):  # noqa: ANN201  dict's own view types
        self._discover()
        return super().keys()

    def values(self):  # noqa: ANN201
        self._discover()
        return super().values()

    def items(self):  # noqa: ANN201
        self._discover()
        return super().items()

    # ---- registering and looking up -------------------------------------------------------------------

    def alias(self, short: str, name: str) -> None:
        """Let ``short`` name the unit ``name`` too (``"mse"`` for ``"mse_loss"``), in lookups and on the command line."""
        if name not in self:
            raise ValueError(f"{self.kind} alias {short!r}: no {self.kind} named {name!r}")
        if short in self:
            raise ValueError(f"{self.kind} alias {short!r}: a {self.kind} has that name")
        self.aliases[short] = name

    def names(self) -> list[str]:
        """Every name a lookup accepts: the units', then the aliases."""
        return [*self, *self.aliases]

    def register(self, unit: Unit, *, replace: bool = False) -> Unit:
        """Add ``unit`` under its ``name``; a name taken raises ``ValueError`` unless ``replace=True``."""
        if not isinstance(unit, self.unit_type):
            raise TypeError(f"register_{self.kind}: expected a {self.unit_type.__name__}, got {type(unit).__name__}")
        if unit.name in self and not replace:
            raise ValueError(f"register_{self.kind}: a {self.kind} named {unit.name!r} is already registered; "
                             "pass replace=True to replace it")
        self[unit.name] = unit
        self._broken.pop(unit.name, None)
        return unit

    def lookup(self, unit: str | Unit) -> Unit:
        """The unit called ``unit`` (a unit is returned as it is); ``ValueError`` naming the choices otherwise."""
        if isinstance(unit, self.unit_type):
            return unit
        if isinstance(unit, str) and unit in self.aliases:
            unit = self.aliases[unit]
        if not isinstance(unit, str) or unit not in self:
            if isinstance(unit, str) and unit in self._broken:
                raise ValueError(self._broken[unit])
            aliases = ", ".join(f"{short} ({name})" for short, name in self.aliases.items())
            raise ValueError(f"unknown {self.kind} {unit!r}; choose one of {', '.join(self)}"
                             + (f", or an alias: {aliases}" if aliases else ""))
        return self[unit]


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str | None:
    return getattr(getattr(entry_point, "dist", None), "name", None)


def _origin(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = _distribution(entry_point)
    return f"entry point {entry_point.value!r}" + (f" of {dist}" if dist else "")


def _describe(error: BaseException) -> str:
    """A plugin's failure in one line; ``sys.exit(3)`` as what the plugin did, not a bare ``SystemExit: 3``."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
