"""The registered losses and optimizers as backend methods: ``X``, ``X_grad``, ``X_and_grad``; ``X_init``, ``X_step``.

A backend class binds each loss and optimizer it carries with one line in its
class body, which a reader finds by grepping the name::

    cross_entropy, cross_entropy_grad, cross_entropy_and_grad = loss_methods("cross_entropy")
    sgd_init, sgd_step = optimizer_methods("sgd")

A backend that does better overrides the method as an ordinary method and
calls ``super()`` where its fused path declines. A loss or optimizer
registered later (a plugin, an entry point) is no attribute of any backend: it
runs on every backend through one dispatch, :meth:`Loss.value_and_grad_on
<softgrad.numerics.losses.Loss.value_and_grad_on>` and :meth:`Optimizer.step_on
<softgrad.numerics.optim.Optimizer.step_on>` (what the training loop calls), or
:func:`method_of` for any one method name: the backend's own method where it
has one, the shared definition otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from softgrad.numerics.losses import LOSSES, Loss
from softgrad.numerics.optim import OPTIMIZERS, Optimizer
from softgrad.numerics.validation import array_list


def loss_methods(name: str) -> tuple[Callable, Callable, Callable]:
    """``(X, X_grad, X_and_grad)`` of the registered loss ``name``: functions taking the backend first."""
    value, grad, value_and_grad = _loss_methods(LOSSES[name]).values()
    return value, grad, value_and_grad


def optimizer_methods(name: str) -> tuple[Callable, Callable]:
    """``(X_init, X_step)`` of the registered optimizer ``name``: functions taking the backend first."""
    init, step = _optimizer_methods(OPTIMIZERS[name]).values()
    return init, step


def method_of(be: Any, attribute: str) -> Callable:
    """``be``'s own method ``attribute`` where it has one, else the shared definition of the registered loss or
    optimizer method of that name (``"mse_loss_grad"``, ``"adam_step"``) bound to ``be`` and run in the hook
    ``be.scope()`` (on JAX, its 64-bit mode, as its own methods are).

    The one dispatch for units registered after a backend's class was written. Raises ``AttributeError``
    for a name no backend method and no registered unit provides.
    """
    own = getattr(be, attribute, None)
    if own is not None:
        return own
    shared = registered_method(attribute)
    if shared is None:
        raise AttributeError(f"{type(be).__name__!r} has no method {attribute!r} and no registered loss or "
                             "optimizer provides it")

    def in_scope(*args: Any, **kwargs: Any) -> Any:
        with be.scope():  # the hook: the context the backend computes in (JAX's 64-bit mode)
            return shared(be, *args, **kwargs)

    in_scope.__name__ = in_scope.__qualname__ = attribute
    in_scope.__doc__ = shared.__doc__
    return in_scope


def _loss_methods(loss: Loss) -> dict[str, Callable]:
    name, compute = loss.name, loss.compute

    def value(self, input, target, *positional, **options):
        _keywords_only(name, positional)
        return compute(self, input, target, op=name, want_grad=False, **options)[0]

    def grad(self, input, target, *positional, **options):
        _keywords_only(f"{name}_grad", positional)
        return compute(self, input, target, op=f"{name}_grad", want_grad=True, **options)[1]

    def value_and_grad(self, input, target, *positional, **options):
        _keywords_only(f"{name}_and_grad", positional)
        return compute(self, input, target, op=f"{name}_and_grad", want_grad=True, **options)

    value.__doc__ = compute.__doc__
    grad.__doc__ = f"The gradient of :meth:`{name}` with respect to its input (see softgrad.numerics.losses)."
    value_and_grad.__doc__ = f"``({name}(...), {name}_grad(...))`` from one pass."
    return {name: value, f"{name}_grad": grad, f"{name}_and_grad": value_and_grad}


def _optimizer_methods(optimizer: Optimizer) -> dict[str, Callable]:
    step = optimizer.step

    def init_method(self, params, **hyperparameters):
        # hyperparameters reach an init that takes them (Adagrad's initial_accumulator_value); be.sgd_init(params)
        # is unchanged
        if isinstance(params, Iterator):  # a generator, read once (an init that needs no params may get None)
            params = list(params)
        return optimizer.initial_state(self, params, **hyperparameters)

    def step_method(self, params, grads, state, *, lr=optimizer.lr, **hyperparameters):
        op = f"{optimizer.name}_step"
        optimizer.check_names(hyperparameters, op)
        # any iterable of arrays (a generator too, as torch.optim takes), read once
        params, grads = array_list(op, "params", params), array_list(op, "grads", grads)
        return step(self, params, grads, state, lr=lr, **hyperparameters)

    init_method.__doc__ = (f"The initial {optimizer.state_type.__name__} for ``params`` (given the "
                           f"hyperparameters {optimizer.name}'s init takes, such as Adagrad's initial_accumulator_value).")
    step_method.__doc__ = step.__doc__
    return {f"{optimizer.name}_init": init_method, f"{optimizer.name}_step": step_method}


def registered_method(attribute: str) -> Callable | None:
    """The shared definition of the registered loss or optimizer method ``attribute`` (a function taking the
    backend first), or None."""
    for loss in LOSSES.values():
        if attribute.startswith(loss.name):
            method = _loss_methods(loss).get(attribute)
            if method is not None:
                return method
    for optimizer in OPTIMIZERS.values():
        if attribute.startswith(optimizer.name):
            method = _optimizer_methods(optimizer).get(attribute)
            if method is not None:
                return method
    return None


def _keywords_only(op: str, positional: tuple) -> None:
    if positional:
        raise TypeError(f"{op}: takes the input and the target, then options by keyword only, such as "
                        f"{op}(input, target, reduction='sum'); got {len(positional)} more positional argument(s)")


def linear_cross_entropy_methods() -> dict[str, Callable]:
    """``linear_cross_entropy`` and ``linear_cross_entropy_and_grad``, chunked (softgrad.numerics.losses.linear_cross_entropy)."""
    from softgrad.numerics.losses import linear_cross_entropy as chunked

    def value(self, input, linear_weight, target, *positional, **options):
        _linear_keywords_only("linear_cross_entropy", positional)
        _known_options("linear_cross_entropy", options, exclude=("grad_output",))
        return chunked.linear_cross_entropy(self, input, linear_weight, target, op="linear_cross_entropy",
                                            want_grad=False, **options)[0]

    def value_and_grad(self, input, linear_weight, target, *positional, **options):
        _linear_keywords_only("linear_cross_entropy_and_grad", positional)
        _known_options("linear_cross_entropy_and_grad", options)
        return chunked.linear_cross_entropy(self, input, linear_weight, target,
                                            op="linear_cross_entropy_and_grad", want_grad=True, **options)

    value.__doc__ = chunked.linear_cross_entropy.__doc__
    value_and_grad.__doc__ = "``(loss, (d_input, d_linear_weight, d_linear_bias))`` in one chunked pass."
    return {"linear_cross_entropy": value, "linear_cross_entropy_and_grad": value_and_grad}


def _linear_keywords_only(op: str, positional: tuple) -> None:
    if positional:
        raise TypeError(f"{op}: takes input, linear_weight and target, then options by keyword only, such as "
                        f"{op}(x, w, y, linear_bias=b); got {len(positional)} more positional argument(s)")


def _known_options(op: str, options: dict, exclude: tuple = ()) -> None:
    from softgrad.numerics.losses.linear_cross_entropy import OPTIONS

    known = [name for name in OPTIONS if name not in exclude]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"{op}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(known)}")
