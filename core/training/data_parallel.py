"""Data-parallel training on several ranks, equal to one process on the global batch: the step
(:class:`DataParallelStep`) and the run's start on every rank (:func:`start_on_ranks`).

Each step every rank computes, on its shard of the global batch, the gradients of the SUMMED loss, the loss
sum, the mean's denominator for its rows (:mod:`softgrad.training.denominators`) and its correct predictions,
packs them in ONE flat bucket of the backend and all-reduces it (a sum). Every rank then divides by the
global denominator, which gives the one-process mean exactly (to rounding), and takes the same optimizer step.
A rank with no rows contributes zeros. A rank whose loss fails (a non-finite loss) contributes zeros and
raises its flag in the bucket: every rank then raises that rank's message, so none waits on the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from softgrad.numerics import validation as v
from softgrad.numerics.losses.support import device_of
from softgrad.numerics.registry import get_backend
from softgrad.training import checkpoint
from softgrad.training.communicator import Communicator, DistributedError
from softgrad.training.denominators import check_distributable, denominator_rule
from softgrad.training.inference import count_correct
from softgrad.training.models import MLP
from softgrad.training.runs import Run, start_run
from softgrad.training.settings import TrainSettings


@dataclasses.dataclass(frozen=True)
class StepTotals:
    """A step's figures over every rank: the batch's mean loss and correct predictions (host scalars)."""

    loss: Any
    correct: Any


class DataParallelStep:
    """One step on this rank's shard, all-reduced with the other ranks (see the module)."""

    def __init__(self, model: MLP, settings: TrainSettings, comm: Communicator) -> None:
        self.model, self.settings, self.comm = model, settings, comm
        self.loss = settings.loss_definition
        self.chunked = bool(settings.chunked_head) and self.loss.name == "cross_entropy"
        self.rule = denominator_rule(self.loss)
        self.classes = self.loss.targets != "value" and not self.chunked
        self.sizes = [math.prod(tuple(p.shape)) for p in model.params]
        self.count = sum(self.sizes)

    def __call__(self, x, y, state, lr: float) -> tuple[StepTotals, Any]:
        """The step on the shard ``(x, y)`` (None for an empty shard); returns the totals and the new state,
        and sets the model's parameters. A ValueError (a non-finite loss on some rank, a mean over no
        weight) is raised on every rank alike."""
        be, model = self.model.be, self.model
        grads, figures, message = self._local(x, y)
        bucket = self._pack(grads, figures, failed=message is not None)
        bucket = self.comm.allreduce_sum(be, bucket)
        tail = np.asarray(be.to_numpy(bucket[self.count:]))
        self._raise_failures(tail[3:], message)
        loss_sum, denominator, correct = tail[0], tail[1], tail[2]
        if denominator == 0:
            raise v.empty_mean(f"{self.loss.name}_and_grad")
        if not math.isfinite(float(loss_sum)):
            raise ValueError(f"{self.loss.name}: the loss summed over the ranks is {float(loss_sum)}")
        scaled = bucket[: self.count] / float(denominator)
        mean_grads, offset = [], 0
        for p, size in zip(model.params, self.sizes):
            mean_grads.append(be.xp.reshape(scaled[offset: offset + size], tuple(p.shape)))
            offset += size
        optimizer = self.settings.optimizer_definition
        model.params, state = optimizer.step_on(be, model.params, mean_grads, state, lr=lr,
                                                **self.settings.resolved_hyperparameters)
        return StepTotals(loss=loss_sum / denominator, correct=correct), state

    def _local(self, x, y) -> tuple[list | None, list, tuple[str, str] | None]:
        """This shard's gradients of the summed loss and ``[loss sum, denominator, correct]``; None and zeros
        for an empty shard, or after a failure (then its kind and one-line message)."""
        if x is None or x.shape[0] == 0:
            return None, [0, 0, 0], None
        be, model, options = self.model.be, self.model, self.settings.loss_options
        try:
            if self.chunked:
                value, grads = model.chunked_head_loss_and_grads(x, y, reduction="sum", **options)
                shape = (x.shape[0], model.num_outputs)
                correct = 0
            else:
                logits, cache = model.forward(x)
                value, dlogits = self.loss.value_and_grad_on(be, logits, y, reduction="sum", **options)
                grads, shape = model.backward(cache, dlogits), tuple(logits.shape)
                correct = count_correct(be, self.loss, logits, y) if self.classes else 0
            return grads, [value, self.rule(be, y, shape, options), correct], None
        except ValueError as error:
            return None, [0, 0, 0], ("ValueError", f"{error} (on rank {self.comm.rank}'s rows of the batch)")
        except Exception as error:  # noqa: BLE001 - every rank must hear of it, or the others wait on it
            return None, [0, 0, 0], (type(error).__name__, f"{error} (on rank {self.comm.rank})")

    def _pack(self, grads: list | None, figures: list, *, failed: bool):
        """The one flat bucket: the gradients, then loss sum, denominator, correct, one failure flag per rank."""
        xp, reference = self.model.be.xp, self.model.params[0]
        dtype, device = reference.dtype, device_of(reference)

        def scalar(value):
            if isinstance(value, (int, float)):
                return xp.full((1,), value, dtype=dtype, device=device)
            return xp.reshape(xp.astype(value, dtype), (1,))

        flags = xp.zeros((self.comm.world_size,), dtype=dtype, device=device)
        if failed:
            flags = xp.where(xp.arange(self.comm.world_size, device=device) == self.comm.rank,
                             xp.ones_like(flags), flags)
        if grads is None:
            head = [xp.zeros((self.count,), dtype=dtype, device=device)]
        else:
            head = [xp.reshape(g, (-1,)) for g in grads]
        return xp.concat([*head, *(scalar(f) for f in figures), flags])

    def _raise_failures(self, flags: np.ndarray, message: tuple[str, str] | None) -> None:
        """The first failing rank's error, raised on every rank: a ValueError (the loop's divergence) as it
        was, anything else as a DistributedError naming its kind."""
        failing = [rank for rank, flag in enumerate(flags) if flag != 0]
        if not failing:
            return
        first = failing[0]
        kind, text = self.comm.broadcast(message if self.comm.rank == first else None, src=first)
        if kind == "ValueError":
            raise ValueError(text)
        raise DistributedError(f"{kind}: {text}")


# ---- the start ------------------------------------------------------------------------------------------

def _fingerprint(model: MLP, data, given: Mapping[str, Any], backend, resume) -> dict[str, Any]:
    """What every rank must have alike: the settings given, the backend asked for, the resumed checkpoint,
    the model and the data (shapes and a digest of the arrays)."""
    def digest(array) -> str:
        return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=8).hexdigest()

    arrays = {}
    for name in ("x_train", "y_train", "x_test", "y_test"):
        value = getattr(data, name, None)
        arrays[name] = None if value is None else f"{np.shape(value)} {np.asarray(value).dtype} {digest(value)}"
    return {**{f"setting {k}": v for k, v in given.items()}, "backend": getattr(backend, "name", backend),
            "resume": None if resume is None else str(resume),
            # not the seed: rank 0's parameters are broadcast, whatever the other ranks drew
            "model": {k: v for k, v in model.config().items() if k != "seed"},
            "model backend": model.be.name, **{f"data {k}": v for k, v in arrays.items()}}


def check_agreement(comm: Communicator, mine: dict[str, Any]) -> None:
    """Every rank's ``mine`` against rank 0's: a DistributedError on every rank naming the first setting
    that differs and the ranks, else nothing. Each rank hears every other rank's verdict (a broadcast from
    each), so all fail together."""
    lead = comm.broadcast(mine if comm.rank == 0 else None, src=0)
    verdict = None
    for key in sorted(set(lead) | set(mine)):
        if lead.get(key) != mine.get(key):
            verdict = (f"ranks disagree at the start: {key} is {lead.get(key)!r} on rank 0 and {mine.get(key)!r} "
                       f"on rank {comm.rank}; start every rank with the same arguments and data")
            break
    for rank in range(comm.world_size):
        told = comm.broadcast(verdict if comm.rank == rank else None, src=rank)
        if told is not None:
            raise DistributedError(told)


def start_on_ranks(comm: Communicator, model: MLP, data, given: dict[str, Any], *, backend, resume,
                   lead_start: Callable[[], Run]) -> Run:
    """The run on every rank, identical: the ranks' settings checked alike, then rank 0 starts it
    (``lead_start``: reads the checkpoint when resuming, claims the folder, logs) and broadcasts its
    settings, parameters, optimizer state and history; the other ranks start from them without reading a
    file. An error on rank 0 at the start is raised on every rank."""
    check_agreement(comm, _fingerprint(model, data, given, backend, resume))
    if comm.rank == 0:
        try:
            run = lead_start()
            check_distributable(run.settings.loss_definition, run.settings.loss_options)
        except Exception as error:
            comm.broadcast({"error": str(error), "kind": type(error).__name__})
            raise
        host = get_backend("numpy")
        comm.broadcast({"backend": run.be.name, "settings": run.saved_settings, "history": run.history,
                        "params": [np.array(run.be.to_numpy(p)) for p in model.params],
                        "state": checkpoint.move_state(run.state, run.be, host)})
        return run
    package = comm.broadcast(None)
    if "error" in package:
        kind = {"ValueError": ValueError, "TypeError": TypeError}.get(package["kind"], DistributedError)
        raise kind(package["error"] if kind is not DistributedError
                   else f"rank {comm.rank}: rank 0 could not start the run: {package['error']}")
    target = package["backend"] if backend == "auto" else backend
    run = start_run(model, data, dict(package["settings"]), backend=target, resume=None, log=None)
    model.params = [run.be.asarray(np.array(p, dtype=model.dtype)) for p in package["params"]]
    run.state = checkpoint.move_state(package["state"], get_backend("numpy"), run.be)
    run.history = list(package["history"])
    return run


__all__ = ["DataParallelStep", "StepTotals", "check_agreement", "start_on_ranks"]
