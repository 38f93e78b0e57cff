"""Losses as units that plug in: each is defined once, value and analytic gradient, against ``be.xp``.

A :class:`Loss` names a function ``compute(be, input, target, *, op,
want_grad, **options) -> (loss, grad | None)`` that returns new arrays and
never modifies its inputs. Every backend built on the shared implementation
then has ``be.X``, ``be.X_grad`` and ``be.X_and_grad``; a backend may
override them with a fused kernel (the suite checks every override against
``compute``). ``fit`` and ``train_step`` take a loss by name or as a
:class:`Loss`. To add one, see the README's "Extending softgrad".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.base.catalog import Catalog
from core.base.losses import cross_entropy as _cross_entropy


@dataclass(frozen=True)
class Loss:
    """A loss's definition.

    ``compute(be, input, target, *, op, want_grad, **options)`` returns the
    loss (reduced as ``options["reduction"]`` says) and, with ``want_grad``,
    its gradient with respect to ``input``: for ``reduction="none"`` the
    gradient of ``sum(loss)``. ``op`` is the name errors start with.
    ``targets`` says what the training loop feeds it: ``"class"`` (integer
    labels; accuracy is reported) or ``"value"`` (targets shaped like the input).
    """

    name: str
    compute: Callable[..., tuple[Any, Any]]
    targets: str = "class"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"loss name {self.name!r} must be a Python identifier (it names be.{self.name})")
        if self.targets not in ("class", "value"):
            raise ValueError(f"loss {self.name!r}: targets must be 'class' or 'value', got {self.targets!r}")

    def value_and_grad_on(self, be: Any, input: Any, target: Any, **options: Any) -> tuple[Any, Any]:
        """The loss and its gradient, through ``be.X_and_grad`` where the backend has it."""
        method = getattr(be, f"{self.name}_and_grad", None)
        if method is not None:
            return method(input, target, **options)
        return self.compute(be, input, target, op=f"{self.name}_and_grad", want_grad=True, **options)

    def value_on(self, be: Any, input: Any, target: Any, **options: Any) -> Any:
        method = getattr(be, self.name, None)
        if method is not None:
            return method(input, target, **options)
        return self.compute(be, input, target, op=self.name, want_grad=False, **options)[0]


LOSSES: Catalog[Loss] = Catalog("loss", Loss)
#: add a loss: every backend built on the shared code, fit and the command line then know it
register_loss = LOSSES.register
get_loss = LOSSES.lookup


register_loss(Loss("cross_entropy", _cross_entropy.cross_entropy))
register_loss(Loss("nll_loss", _cross_entropy.nll_loss))

__all__ = ["LOSSES", "Loss", "get_loss", "register_loss"]
