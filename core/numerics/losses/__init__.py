"""Losses as units that plug in: each is defined once, value and analytic gradient, against ``be.xp``.

A :class:`Loss` names a function ``compute(be, input, target, *, op,
want_grad, **options) -> (loss, grad | None)`` that returns new arrays and
never modifies its inputs. softgrad's own are methods of every backend
(``be.X``, ``be.X_grad``, ``be.X_and_grad``), which a backend may override
with a fused kernel (the suite checks every override against ``compute``);
one registered later runs on every backend through
:meth:`Loss.value_and_grad_on` and :meth:`Loss.value_on`. ``fit`` and
``train_step`` take a loss by name or as a :class:`Loss`. To add one, call
:func:`register_loss` or, from another distribution, declare an entry point
in the group ``softgrad.losses`` (see :mod:`softgrad.numerics.catalog`,
docs/extending.md and the README's "Plugging in a loss or an optimizer").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from softgrad.numerics.catalog import Catalog
from softgrad.numerics.losses import binary as _binary
from softgrad.numerics.losses import cross_entropy as _cross_entropy
from softgrad.numerics.losses import regression as _regression


@dataclass(frozen=True)
class Loss:
    """A loss's definition.

    ``compute(be, input, target, *, op, want_grad, **options)`` returns the
    loss (reduced as ``options["reduction"]`` says) and, with ``want_grad``,
    its gradient with respect to ``input``: for ``reduction="none"`` the
    gradient of ``sum(loss)``. ``op`` is the name errors start with.
    ``targets`` says what the training loop feeds it: ``"class"`` (integer
    labels; accuracy is reported), ``"binary"`` (one logit per sample against
    0/1 labels as probabilities; accuracy at probability 0.5) or ``"value"``
    (real targets shaped like the input: regression).
    """

    name: str
    compute: Callable[..., tuple[Any, Any]]
    targets: str = "class"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"loss name {self.name!r} must be a Python identifier (it names be.{self.name})")
        if self.targets not in ("class", "binary", "value"):
            raise ValueError(f"loss {self.name!r}: targets must be 'class', 'binary' or 'value', "
                             f"got {self.targets!r}")

    def value_and_grad_on(self, be: Any, input: Any, target: Any, **options: Any) -> tuple[Any, Any]:
        """The loss and its gradient, through ``be.X_and_grad`` where the backend has it, else the definition
        in the backend's scope (the hook ``be.scope()``: JAX's 64-bit mode)."""
        method = getattr(be, f"{self.name}_and_grad", None)
        if method is not None:
            return method(input, target, **options)
        with be.scope():
            return self.compute(be, input, target, op=f"{self.name}_and_grad", want_grad=True, **options)

    def value_on(self, be: Any, input: Any, target: Any, **options: Any) -> Any:
        """The loss, through ``be.X`` where the backend has it, else the definition in the backend's scope."""
        method = getattr(be, self.name, None)
        if method is not None:
            return method(input, target, **options)
        with be.scope():
            return self.compute(be, input, target, op=self.name, want_grad=False, **options)[0]


#: the entry-point group through which a distribution outside softgrad plugs a loss in
ENTRY_POINT_GROUP = "softgrad.losses"

LOSSES: Catalog[Loss] = Catalog("loss", Loss)
#: add a loss: every backend built on the shared code, fit and the command line then know it
register_loss = LOSSES.register
get_loss = LOSSES.lookup


register_loss(Loss("cross_entropy", _cross_entropy.cross_entropy))
register_loss(Loss("nll_loss", _cross_entropy.nll_loss))
register_loss(Loss("mse_loss", _regression.mse_loss, "value"))
register_loss(Loss("l1_loss", _regression.l1_loss, "value"))
register_loss(Loss("smooth_l1_loss", _regression.smooth_l1_loss, "value"))
register_loss(Loss("huber_loss", _regression.huber_loss, "value"))
register_loss(Loss("binary_cross_entropy_with_logits", _binary.binary_cross_entropy_with_logits, "binary"))
# the short names the command line and fit take (torch's function names work too)
for _short, _name in (("mse", "mse_loss"), ("l1", "l1_loss"), ("smooth_l1", "smooth_l1_loss"),
                      ("huber", "huber_loss"), ("bce_with_logits", "binary_cross_entropy_with_logits")):
    LOSSES.alias(_short, _name)
del _short, _name
# the losses other distributions declare: read at the first read of LOSSES, after softgrad's own
LOSSES.plug_in_from(ENTRY_POINT_GROUP)

__all__ = ["ENTRY_POINT_GROUP", "LOSSES", "Loss", "get_loss", "register_loss"]
