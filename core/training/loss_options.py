"""The loss's options (``label_smoothing``, ``weight``, ``delta``...): checked once before training, kept on
the host as settings save them, and put on the backend as the loss takes them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.protocol import Backend
from softgrad.training.data_checks import targets_on
from softgrad.training.models import MLP

ARRAY_OPTIONS = ("weight", "pos_weight")  # the loss options that are arrays (a number is one too)


def host_options(be: Backend, options: Mapping[str, Any]) -> dict[str, Any]:
    """Loss options with their arrays (NumPy, lists, arrays of ``be``) as plain lists, as settings are saved."""
    out = {}
    for key, value in options.items():
        if isinstance(value, (list, tuple)) or hasattr(value, "shape"):
            value = np.asarray(value if isinstance(value, (list, tuple, np.ndarray)) else be.to_numpy(value)).tolist()
        out[key] = value
    return out


def options_on(be: Backend, options: Mapping[str, Any], dtype) -> dict[str, Any]:
    """Loss options as the loss takes them on ``be``: lists and numbers of the array options as arrays."""
    out = dict(options)
    for key, value in options.items():
        if isinstance(value, (list, tuple)) or (key in ARRAY_OPTIONS and isinstance(value, (int, float))
                                                and not isinstance(value, bool)):
            out[key] = be.asarray(np.asarray(value, dtype=dtype))
    return out


def check_loss_options(model: MLP, data, loss: Loss | str, options: Mapping[str, Any], *,
                       label: str | None = None) -> None:
    """The loss's options, tried once on two training samples on the model's backend: a bad option is
    named before training (and before a run folder is made), not reported as a divergence later.
    ``label`` starts the error's message (default ``loss_options {...}``; the command line names its flag)."""
    loss = get_loss(loss)
    if "reduction" in options:
        raise ValueError(f"loss_options: fit takes the mean loss of each batch; 'reduction' is not an option of "
                         f"training (it is {options['reduction']!r})")
    if not options:
        return
    be = model.be
    label = label or f"loss_options {dict(host_options(be, options))}"
    known = loss_option_names(loss)
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        raise TypeError(f"{label}: {loss.name} has no option {', '.join(map(repr, unknown))}; it takes "
                        f"{', '.join(sorted(known)) or 'none'}")
    x = be.asarray(np.asarray(data.x_train[:2]), dtype=model.dtype)
    y = targets_on(be, np.asarray(data.y_train[:2]), loss, model.dtype)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            loss.value_and_grad_on(be, model.logits(x), y, **options_on(be, options, model.dtype))
    except (TypeError, ValueError) as error:
        message = str(error)
        for op in (f"{loss.name}_and_grad: ", f"{loss.name}: "):  # the op's name says nothing to the caller
            message = message.removeprefix(op)
        raise type(error)(f"{label}: {loss.name}: {message}") from None  # the loss, as the user named it


def loss_option_names(loss: Loss | str) -> set[str] | None:
    """The options ``loss`` takes in training (its keyword arguments but op, want_grad and reduction);
    None where its ``compute`` takes any (``**options``) or has no signature to read."""
    try:
        parameters = inspect.signature(get_loss(loss).compute).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"op", "want_grad",
                                                                                      "reduction"}


__all__ = ["ARRAY_OPTIONS", "check_loss_options", "host_options", "loss_option_names", "options_on"]
