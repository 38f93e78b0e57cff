"""How ranks of a data-parallel run talk: the :class:`Communicator` interface the training loop uses, the
one-rank :class:`SingleProcess` (the default: no communication at all), and how a global batch is shared
out (:func:`shard`).

The loop needs four things of an engine, and nothing else: its ``rank`` and ``world_size``, a SUM
all-reduce of one flat bucket of a backend's array, a broadcast of a small Python object from rank 0 (the
settings, a checkpoint's bytes), and a barrier. torch.distributed provides them (gloo on CPUs, NCCL on
GPUs; ``softgrad.training.torch_communicator``); an mpi4py communicator would provide the same four.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from softgrad.numerics.protocol import Array, Backend


class DistributedError(RuntimeError):
    """A rank died, hung past the timeout, or the ranks disagree; the message is one line naming the rank,
    where training was, the engine's message and the checkpoint to resume from."""


@runtime_checkable
class Communicator(Protocol):
    """The ranks of one data-parallel run, as the training loop sees them."""

    rank: int  #: this process's rank, 0 .. world_size - 1; rank 0 writes the run's files
    world_size: int  #: how many ranks train together

    def allreduce_sum(self, be: Backend, bucket: Array) -> Array:
        """The element-wise sum of every rank's ``bucket`` (a 1-D array of ``be``, the same shape and dtype on
        every rank), as an array of ``be``; it may be ``bucket`` itself, summed in place."""
        ...

    def broadcast(self, value: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``value`` (a picklable object) on every rank; the other ranks' ``value`` is ignored."""
        ...

    def barrier(self) -> None:
        """Return once every rank has called it."""
        ...


class SingleProcess:
    """One rank: every collective is the identity. ``fit`` without a communicator runs as it always has."""

    rank = 0
    world_size = 1

    def allreduce_sum(self, be: Backend, bucket: Array) -> Array:
        return bucket

    def broadcast(self, value: Any, src: int = 0) -> Any:
        return value

    def barrier(self) -> None:
        return None


def shard(start: int, stop: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of the global batch ``[start, stop)``: the rows split as evenly as can
    be, the first ``(stop - start) % world_size`` ranks one row more. No padding and no dropped rows: a
    rank's share may be empty (a short last batch), and it then contributes zeros to the all-reduce."""
    n = stop - start
    base, extra = divmod(n, world_size)
    first = start + rank * base + min(rank, extra)
    return slice(first, first + base + (1 if rank < extra else 0))


__all__ = ["Communicator", "DistributedError", "SingleProcess", "shard"]
