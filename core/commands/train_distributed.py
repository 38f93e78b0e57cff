"""What ``softgrad train --distributed`` adds to a run: the check that torchrun launched it, the communicator
made from torchrun's environment, how the ranks agree to start (or all stop at once with rank 0's error), and
the fault hook the torchrun smoke test uses.

torch is imported only in :func:`make_communicator`, when a distributed run starts.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from softgrad.training.communicator import Communicator
from softgrad.training.settings import RunSettings

#: what torchrun sets in each worker's environment and ``torch.distributed``'s env:// start reads
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH = "torchrun --nproc-per-node K -m softgrad train --distributed --out RUN ..."
DEFAULT_TIMEOUT_MINUTES = 5.0
#: the test hook: ``rank=R,epoch=E,step=S[,restart=N]`` makes rank R exit at once (``os._exit(1)``) as it reaches
#: step S of epoch E (its all-reduce), in torchrun's restart round N only (default 0), in a run started fresh
FAULT_VARIABLE = "SOFTGRAD_FAULT"

T = TypeVar("T")


def check_launch(out: str | None, timeout_minutes: float | None, environ: Mapping[str, str] | None = None) -> None:
    """``--distributed``'s requirements, before any work: torchrun's environment, ``--out``, a positive
    ``--dist-timeout``; each missing one is bad input (exit status 2) in one line saying what to do."""
    environ = os.environ if environ is None else environ
    missing = [name for name in TORCHRUN_VARIABLES if not environ.get(name)]
    if missing:
        raise ValueError(f"--distributed runs one process per rank under torchrun, and {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not set: launch it as {LAUNCH}")
    if not out:
        raise ValueError("--distributed needs --out RUN: a restarted round (torchrun --max-restarts) continues "
                         "from the checkpoint in that folder, so it must not change between rounds")
    if timeout_minutes is not None and not 0 < timeout_minutes < math.inf:
        raise ValueError(f"--dist-timeout must be a number of minutes above 0, got {timeout_minutes:g}")


def run_backend(backend: str | None, out: str) -> str:
    """The backend every rank trains on: ``--backend``, else the one a run in ``out`` recorded (a restarted
    round continues on it), else the default. It decides the engine: gloo on the CPU, NCCL on a GPU."""
    if backend == "auto":
        raise ValueError("--backend auto probes one process's speed; with --distributed name the backend "
                         "(numpy, torch, ...)")
    if backend is not None:
        return backend
    try:
        recorded = json.loads((Path(out) / "run.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded if isinstance(recorded, str) and recorded != "auto" else RunSettings().backend


def make_communicator(backend: str, timeout_minutes: float | None) -> Communicator:
    """The ranks of this torchrun round (gloo for a CPU backend, NCCL for a GPU one), with the fault hook where
    ``SOFTGRAD_FAULT`` asks."""
    fault = Fault.from_environment()  # a malformed hook is refused before torch loads
    from datetime import timedelta

    from softgrad.training.torch_communicator import from_environment

    minutes = DEFAULT_TIMEOUT_MINUTES if timeout_minutes is None else timeout_minutes
    # by name: a GPU backend is then created once LOCAL_RANK's GPU is current, so each rank works on its own GPU
    communicator = from_environment(backend, timeout=timedelta(minutes=minutes))
    if fault is not None and fault.applies(communicator.rank):
        return FaultyCommunicator(communicator, fault)
    return communicator


def on_rank_zero(communicator: Communicator, make: Callable[[], T]) -> T:
    """``make()``'s value, computed on rank 0 and shared with every rank. Where it raises, rank 0 raises its
    error and every other rank a ValueError naming it, so that all ranks stop at once, none left waiting."""
    value: Any = None
    error: BaseException | None = None
    if communicator.rank == 0:
        try:
            value = make()
        except Exception as caught:  # every rank must still reach the broadcast
            error = caught
    value, message = communicator.broadcast((value, None if error is None else str(error) or type(error).__name__))
    if error is not None:
        raise error
    if message is not None:
        raise ValueError(f"rank 0 stopped before training: {message}")
    return value


GATE_GRACE_SECONDS = 2.0


class StartGate:
    """Where the ranks meet once before training: each either ready (:meth:`ready`) or stopping on an error
    (:meth:`fail`), so that a rank left ready while another failed stops too, at once, rather than waiting in
    ``fit`` for the timeout."""

    def __init__(self, communicator: Communicator) -> None:
        self.communicator = communicator
        self.met = False

    def _meet(self, failed: bool) -> bool:
        from softgrad.numerics.registry import get_backend

        self.met = True
        total = self.communicator.allreduce_sum(get_backend("numpy"), np.array([1.0 if failed else 0.0]))
        return float(np.asarray(total)[0]) > 0

    def ready(self) -> None:
        """This rank is ready to train; raises where another rank stopped."""
        if self._meet(False):
            # torchrun stops the other ranks once one exits: leave the failing rank a moment to print its line,
            # the one that says why, before this one exits
            time.sleep(GATE_GRACE_SECONDS)
            raise ValueError("another rank stopped before training (its line says why); this one stops with it")

    def fail(self) -> None:
        """This rank stops on an error: the others are told (where they have not met yet)."""
        if not self.met:
            try:
                self._meet(True)
            except Exception:  # the others are gone already: this rank's own error is the one to show
                pass


@dataclass(frozen=True)
class Fault:
    """Where ``SOFTGRAD_FAULT`` makes a rank exit: a test hook, not a feature."""

    rank: int
    epoch: int
    step: int
    restart: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Fault | None:
        environ = os.environ if environ is None else environ
        text = environ.get(FAULT_VARIABLE, "").strip()
        if not text:
            return None
        try:
            fields = dict(part.split("=", 1) for part in text.split(","))
            return cls(**{key.strip(): int(value) for key, value in fields.items()})
        except (ValueError, TypeError):
            raise ValueError(f"{FAULT_VARIABLE}={text!r}: expected rank=R,epoch=E,step=S[,restart=N] "
                             "(a test hook)") from None

    def applies(self, rank: int, environ: Mapping[str, str] | None = None) -> bool:
        """Whether this process is the rank to stop, in the restart round named (torchrun counts them)."""
        environ = os.environ if environ is None else environ
        return rank == self.rank and int(environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == self.restart


class FaultyCommunicator:
    """A communicator that exits the process hard (as a killed rank would) at its fault's step. Once
    :meth:`arm`-ed with the steps of an epoch, it counts the all-reduces (``fit`` does one per training step,
    and nothing else goes through ``allreduce_sum``), the first being epoch 1's first step: the hook is for a
    run that starts fresh in the round it names."""

    def __init__(self, inner: Communicator, fault: Fault) -> None:
        self.inner, self.fault = inner, fault
        self.rank, self.world_size = inner.rank, inner.world_size
        self.at: int | None = None  # the all-reduce to stop at, counted from arm()
        self.count = 0

    def arm(self, steps_per_epoch: int) -> None:
        self.at, self.count = (self.fault.epoch - 1) * steps_per_epoch + self.fault.step, 0

    def allreduce_sum(self, be, bucket):
        if self.at is not None:
            self.count += 1
            if self.count == self.at:
                os._exit(1)  # no clean-up, no goodbye to the other ranks: what a killed process does
        return self.inner.allreduce_sum(be, bucket)

    def broadcast(self, value: Any, src: int = 0) -> Any:
        return self.inner.broadcast(value, src)

    def barrier(self) -> None:
        self.inner.barrier()

    def __getattr__(self, name: str) -> Any:  # the engine's own extras (close, ...)
        return getattr(self.inner, name)


__all__ = ["DEFAULT_TIMEOUT_MINUTES", "FAULT_VARIABLE", "LAUNCH", "TORCHRUN_VARIABLES", "Fault",
           "FaultyCommunicator", "StartGate", "check_launch", "make_communicator", "on_rank_zero",
           "run_backend"]
