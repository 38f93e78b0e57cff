"""k ranks in one process, for the data-parallel tests: each rank is a thread running a whole ``fit`` with its own
model; a :class:`SimulatedRank` is the communicator of one, with the four collectives of
``softgrad.training.communicator.Communicator`` over a shared list and a ``threading.Barrier``.

The all-reduce sums the ranks' buckets in rank order on every rank, so every rank gets the same bits, as
gloo's does; a broadcast goes through pickle, as between processes, so no rank shares an array with another.
A rank that raises breaks the barrier: the others get a DistributedError at their next collective at once
(0.3 s later).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

from softgrad.training.communicator import DistributedError


class _Shared:
    def __init__(self, world_size: int, timeout: float) -> None:
        self.barrier = threading.Barrier(world_size, timeout=timeout)
        self.slots: list[Any] = [None] * world_size


class SimulatedRank:
    """One rank of a simulated run."""

    def __init__(self, shared: _Shared, rank: int, world_size: int) -> None:
        self._shared, self.rank, self.world_size = shared, rank, world_size
        self.allreduces = 0

    def _wait(self) -> None:
        try:
            self._shared.barrier.wait()
        except threading.BrokenBarrierError:
            raise DistributedError(f"rank {self.rank}: another rank left the run") from None

    def allreduce_sum(self, be, bucket):
        self.allreduces += 1
        self._shared.slots[self.rank] = bucket
        self._wait()
        total = self._shared.slots[0]
        for other in self._shared.slots[1:]:
            total = total + other
        self._wait()  # every rank has read the slots before any writes the next bucket
        return total

    def broadcast(self, value: Any, src: int = 0) -> Any:
        if self.rank == src:
            self._shared.slots[src] = pickle.dumps(value)
        self._wait()
        received = pickle.loads(self._shared.slots[src])
        self._wait()
        return received

    def barrier(self) -> None:
        self._wait()


def run_ranks(world_size: int, body: Callable[[SimulatedRank], Any], *, timeout: float = 120.0) -> list[Any]:
    """``body(comm)`` on ``world_size`` threads, one rank each; every rank's result, or its exception, in
    rank order."""
    shared = _Shared(world_size, timeout)
    results: list[Any] = [None] * world_size

    def run(rank: int) -> None:
        try:
            results[rank] = body(SimulatedRank(shared, rank, world_size))
        except BaseException as error:  # noqa: BLE001 - handed to the test, which asserts on it
            results[rank] = error
            # break the barrier for the ranks still waiting on this one; a moment later, so that ranks just
            # released from the last collective this rank took part in leave it before it breaks
            threading.Timer(0.3, shared.barrier.abort).start()

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 30)
    return results
