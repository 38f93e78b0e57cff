"""Optimizers as units that plug in: an ``init``/``step`` pair with an explicit, named state.

As in optax, the state is a ``NamedTuple`` passed in and returned, never
hidden in an object, so a training loop can checkpoint any optimizer's state
by name and field, and any backend can resume it. Each step rule equals its
``torch.optim`` counterpart with ``foreach=False``.

To add an optimizer, write one module beside ``sgd.py`` with its state, its
hyperparameter check and a functional ``step`` against ``be.xp``, and register
an :class:`Optimizer` (see the README's "Extending softgrad"). Every backend
built on the shared implementation then has ``be.X_init`` and ``be.X_step``;
a backend may override ``X_step`` with an in-place or fused update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.base.catalog import Catalog
from core.base.optim import sgd


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's definition.

    ``init(be, params) -> state`` and ``step(be, params, grads, state, *, lr,
    **hyperparameters) -> (params, state)`` are written against ``be.xp`` and
    return their results (they never modify an input). ``check(**hyperparameters)``
    returns the hyperparameters normalised (Python floats) or raises a clear
    error. ``defaults`` are torch's defaults for every hyperparameter but ``lr``.
    """

    name: str
    state_type: type[NamedTuple]
    init: Callable[..., Any]
    step: Callable[..., tuple[list[Any], Any]]
    check: Callable[..., dict[str, Any]]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"optimizer name {self.name!r} must be a Python identifier (it names be.{self.name}_step)")

    def init_on(self, be: Any, params: Sequence[Any]) -> Any:
        """The initial state, through ``be.X_init`` where the backend has it."""
        method = getattr(be, f"{self.name}_init", None)
        return method(params) if method is not None else self.init(be, params)

    def step_on(self, be: Any, params: Sequence[Any], grads: Sequence[Any], state: Any, *, lr: float,
                **hyperparameters: Any) -> tuple[list[Any], Any]:
        """One step, through the backend's ``X_step`` (fused or in place) where it has one."""
        method = getattr(be, f"{self.name}_step", None)
        if method is not None:
            return method(params, grads, state, lr=lr, **hyperparameters)
        return self.step(be, params, grads, state, lr=lr, **hyperparameters)


OPTIMIZERS: Catalog[Optimizer] = Catalog("optimizer", Optimizer)
#: add an optimizer: every backend built on the shared code, fit and the command line then know it
register_optimizer = OPTIMIZERS.register
get_optimizer = OPTIMIZERS.lookup


register_optimizer(Optimizer("sgd", sgd.SGDState, sgd.init, sgd.step, sgd.check, sgd.DEFAULTS))

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer", "register_optimizer"]
