"""Optimizers as units that plug in: an ``init``/``step`` pair with an explicit, named state.

As in optax, the state is a ``NamedTuple`` passed in and returned, never
hidden in an object, so a training loop can checkpoint any optimizer's state
by name and field, and any backend can resume it. Each step rule equals its
``torch.optim`` counterpart with ``foreach=False``:

``sgd``
    ``torch.optim.SGD`` (:mod:`softgrad.numerics.optim.sgd`)
``adam``, ``adamw``
    ``torch.optim.Adam`` and ``torch.optim.AdamW``: one state and one step
    rule, AdamW's defaults being decoupled weight decay 0.01
    (:mod:`softgrad.numerics.optim.adam`)
``rmsprop``
    ``torch.optim.RMSprop`` (:mod:`softgrad.numerics.optim.rmsprop`)
``adagrad``
    ``torch.optim.Adagrad`` (:mod:`softgrad.numerics.optim.adagrad`); its
    ``initial_accumulator_value`` is given to ``init``

To add an optimizer, write one module beside ``sgd.py`` with its state, its
hyperparameter check and a functional ``step`` against ``be.xp``, and register
an :class:`Optimizer` with :func:`register_optimizer`, or from another
distribution through an entry point in the group ``softgrad.optimizers``
(docs/extending.md; the README's "Plugging in a loss or an optimizer").
softgrad's own are methods of every backend (``be.X_init``, ``be.X_step``),
which a backend may override with an in-place or fused update; one
registered later runs on every backend through :meth:`Optimizer.init_on`
and :meth:`Optimizer.step_on`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from softgrad.numerics.catalog import Catalog
from softgrad.numerics.optim import adagrad, adam, rmsprop, sgd


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's definition.

    ``init(be, params, **hyperparameters) -> state`` and ``step(be, params,
    grads, state, *, lr, **hyperparameters) -> (params, state)`` are written
    against ``be.xp`` and return their results (they never modify an input).
    ``init`` may take no hyperparameters (``init(be, params)``) or some of them
    (Adagrad's ``initial_accumulator_value``): it is given those it names.
    ``check(**hyperparameters)`` returns the hyperparameters normalised (Python
    floats) or raises a clear error. ``defaults`` are torch's defaults for
    every hyperparameter but ``lr``; ``lr`` is torch's default learning rate.
    """

    name: str
    state_type: type[NamedTuple]
    init: Callable[..., Any]
    step: Callable[..., tuple[list[Any], Any]]
    check: Callable[..., dict[str, Any]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"optimizer name {self.name!r} must be a Python identifier (it names be.{self.name}_step)")

    def init_arguments(self, init: Callable[..., Any], hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters ``init`` takes, of those given; a name that is no hyperparameter raises.

        So a training loop can give every init the whole set (``lr`` included),
        and an init written as ``init(be, params)`` still works.
        """
        self.check_names({k: v for k, v in hyperparameters.items() if k != "lr"}, f"{self.name}_init")
        if not hyperparameters:
            return {}
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # no signature to read (a builtin): give it none
            return {}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return dict(hyperparameters)
        named = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        return {k: value for k, value in hyperparameters.items() if k in named}

    def check_names(self, hyperparameters: Mapping[str, Any], where: str | None = None) -> None:
        """A TypeError naming any of ``hyperparameters`` this optimizer does not have (``lr`` aside), and those it has."""
        unknown = sorted(set(hyperparameters) - set(self.defaults))
        if unknown:
            raise TypeError(f"{where + ': ' if where else ''}{self.name} has no hyperparameter "
                            f"{', '.join(map(repr, unknown))}; it takes lr"
                            f"{''.join(', ' + k for k in self.defaults)}")

    def initial_state(self, be: Any, params: Sequence[Any], **hyperparameters: Any) -> Any:
        """``self.init(be, params, ...)`` with the hyperparameters it takes (what ``be.X_init`` runs)."""
        return self.init(be, params, **self.init_arguments(self.init, hyperparameters))

    def init_on(self, be: Any, params: Sequence[Any], **hyperparameters: Any) -> Any:
        """The initial state, through ``be.X_init`` where the backend has it.

        ``hyperparameters`` (any of this optimizer's, ``lr`` included) reach
        an init that takes them, such as Adagrad's initial_accumulator_value.
        """
        method = getattr(be, f"{self.name}_init", None)
        if method is not None:
            return method(params, **self.init_arguments(method, hyperparameters))
        with be.scope():  # the hook: the context the backend computes in (JAX's 64-bit mode)
            return self.initial_state(be, params, **hyperparameters)

    def step_on(self, be: Any, params: Sequence[Any], grads: Sequence[Any], state: Any, *, lr: float,
                **hyperparameters: Any) -> tuple[list[Any], Any]:
        """One step, through the backend's ``X_step`` (fused or in place) where it has one, else the
        definition in the backend's scope."""
        method = getattr(be, f"{self.name}_step", None)
        if method is not None:
            return method(params, grads, state, lr=lr, **hyperparameters)
        with be.scope():
            return self.step(be, params, grads, state, lr=lr, **hyperparameters)


#: the entry-point group through which a distribution outside softgrad plugs an optimizer in
ENTRY_POINT_GROUP = "softgrad.optimizers"

OPTIMIZERS: Catalog[Optimizer] = Catalog("optimizer", Optimizer)
#: add an optimizer: every backend built on the shared code, fit and the command line then know it
register_optimizer = OPTIMIZERS.register
get_optimizer = OPTIMIZERS.lookup


# lr: torch.optim's default learning rate of each
register_optimizer(Optimizer("sgd", sgd.SGDState, sgd.init, sgd.step, sgd.check, sgd.DEFAULTS, lr=1e-3))
register_optimizer(Optimizer("adam", adam.AdamState, adam.init, adam.step, adam.check, adam.DEFAULTS, lr=1e-3))
register_optimizer(Optimizer("adamw", adam.AdamState, adam.init_adamw, adam.step_adamw, adam.check_adamw,
                             adam.ADAMW_DEFAULTS, lr=1e-3))
register_optimizer(Optimizer("rmsprop", rmsprop.RMSpropState, rmsprop.init, rmsprop.step, rmsprop.check,
                             rmsprop.DEFAULTS, lr=1e-2))
register_optimizer(Optimizer("adagrad", adagrad.AdagradState, adagrad.init, adagrad.step, adagrad.check,
                             adagrad.DEFAULTS, lr=1e-2))
# the optimizers other distributions declare: read at the first read of OPTIMIZERS, after softgrad's own
OPTIMIZERS.plug_in_from(ENTRY_POINT_GROUP)

__all__ = ["ENTRY_POINT_GROUP", "OPTIMIZERS", "Optimizer", "get_optimizer", "register_optimizer"]
