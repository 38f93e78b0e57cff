"""A catalog of named units (losses, optimizers): one place to register them and to look them up."""

from __future__ import annotations

from typing import Generic, TypeVar

Unit = TypeVar("Unit")


class Catalog(dict, Generic[Unit]):
    """``name -> unit``, a dict that checks what it is given and says what it holds when asked for another."""

    def __init__(self, kind: str, unit_type: type) -> None:
        super().__init__()
        self.kind = kind
        self.unit_type = unit_type
        self.aliases: dict[str, str] = {}

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
        return unit

    def lookup(self, unit: str | Unit) -> Unit:
        """The unit called ``unit`` (a unit is returned as it is); ``ValueError`` naming the choices otherwise."""
        if isinstance(unit, self.unit_type):
            return unit
        if isinstance(unit, str) and unit in self.aliases:
            unit = self.aliases[unit]
        if not isinstance(unit, str) or unit not in self:
            aliases = ", ".join(f"{short} ({name})" for short, name in self.aliases.items())
            raise ValueError(f"unknown {self.kind} {unit!r}; choose one of {', '.join(self)}"
                             + (f", or an alias: {aliases}" if aliases else ""))
        return self[unit]
