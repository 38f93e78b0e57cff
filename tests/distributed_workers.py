"""What the ranks of tests/test_distributed_gloo.py run, in processes started with torch.multiprocessing's
spawn: importable by the child (a test module's functions are not, under pytest's own import machinery).

Each worker meets the others through a FileStore in the test's tmp_path (no ports), writes what it found to
``result-RANK.pkl`` there (a dict; an error is recorded as its type, message and how long it took to come),
and exits. The parent reads the files back and asserts.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np


def _start(folder: Path, rank: int, world_size: int, backend: str = "numpy", timeout_s: float = 20.0):
    import torch

    torch.set_num_threads(1)  # two ranks on a 2-core machine, beside other work
    from softgrad.backends import get_backend
    from softgrad.training.torch_communicator import TorchCommunicator

    store = torch.distributed.FileStore(str(folder / "store"), world_size)
    # every rank here before the clock of the (short) timeout starts: a rank that a loaded machine starts
    # seconds later would otherwise fail the rendezvous instead of the operation the test is about
    store.set(f"here-{rank}", "1")
    store.wait([f"here-{other}" for other in range(world_size)], timedelta(seconds=120))
    be = get_backend(backend)
    return be, TorchCommunicator.from_store(be, store, rank, world_size, timeout=timedelta(seconds=timeout_s))


def _save(folder: Path, rank: int, result: dict[str, Any]) -> None:
    path = folder / f"result-{rank}.pkl"
    path.with_suffix(".tmp").write_bytes(pickle.dumps(result))
    os.replace(path.with_suffix(".tmp"), path)


def _guarded(worker, rank: int, folder: str, *args: Any) -> None:
    """Run ``worker(rank, folder, ...)``; any exception is written down as the result, so the test can read it."""
    try:
        result = worker(rank, Path(folder), *args)
    except BaseException as error:  # noqa: BLE001 - the parent asserts on it
        result = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    _save(Path(folder), rank, result)


def _pointer(be, x) -> int:
    """The address of ``x``'s first element, read through the library's own attributes."""
    if isinstance(x, np.ndarray):
        return x.ctypes.data
    if be.name.startswith("torch"):
        return x.data_ptr()
    if be.name.startswith("jax"):
        return x.unsafe_buffer_pointer()
    if be.name == "array-api-strict":
        return np.from_dlpack(x).ctypes.data
    raise TypeError(be.name)


def _collectives_on(be, comm, rank: int) -> dict[str, Any]:
    """Each dtype's bucket, (rank + 1) * base: the sum is base * (1 + 2 + ... + world) whatever the order."""
    found = {}
    for dtype in (np.float32, np.float64):
        base = np.linspace(-3.0, 5.0, 1001).astype(dtype)
        bucket = be.asarray(base * (rank + 1))
        before = _pointer(be, bucket)
        summed = comm.allreduce_sum(be, bucket)
        found[np.dtype(dtype).name] = {
            "sum": np.asarray(be.to_numpy(summed)), "same_object": summed is bucket,
            "same_memory": _pointer(be, summed) == before,
            "bucket_after": np.asarray(be.to_numpy(bucket))}
    return found


def _collectives(rank: int, folder: Path, world_size: int, backends: list[str]) -> dict[str, Any]:
    from softgrad.backends import get_backend

    be, comm = _start(folder, rank, world_size)
    result: dict[str, Any] = {"rank": comm.rank, "world_size": comm.world_size, "engine": comm.engine}
    with comm:
        for name in backends:
            other = get_backend(name)
            scope = getattr(other, "scope", None)
            if scope is not None:
                with scope():
                    result[name] = _collectives_on(other, comm, rank)
            else:
                result[name] = _collectives_on(other, comm, rank)
        frozen = np.linspace(-3.0, 5.0, 1001) * (rank + 1)
        frozen.flags.writeable = False  # a read-only array (a memory map, say): summed in a copy, left as it was
        summed = comm.allreduce_sum(be, frozen)
        result["read-only"] = {"sum": np.array(summed), "same_object": summed is frozen,
                               "bucket_after": np.array(frozen)}
        sent = {"settings": {"lr": 0.05, "epochs": 3}, "weights": np.arange(6.0).reshape(2, 3), "from": rank}
        result["broadcast"] = comm.broadcast(sent if rank == 0 else {"wrong": rank})
        result["broadcast_from_1"] = comm.broadcast(f"from rank {rank}", src=1)
        comm.barrier()
        result["after_barrier"] = True
    return result


def _killed(rank: int, folder: Path, world_size: int, victim: int, how: str, where: str,
            timeout_s: float) -> dict[str, Any]:
    """Every rank all-reduces (``where="allreduce"``) or meets at a barrier (``"barrier"``); at the third time,
    ``victim`` dies at once (``how="exit"``: SIGKILL, as kill -9) or stops answering (``how="hang"``: sleeps
    past the timeout), and the others time how long their call took to raise."""
    be, comm = _start(folder, rank, world_size, timeout_s=timeout_s)
    bucket = np.ones(1000)
    for step in range(1, 4):
        if rank == victim and step == 3:
            _save(folder, rank, {"victim": True})
            if how == "exit":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(timeout_s * 3)  # the parent kills this process once the others have answered
            os._exit(1)
        begun = time.monotonic()
        try:
            if where == "barrier":
                comm.barrier()
            else:
                bucket = comm.allreduce_sum(be, bucket)
        except BaseException as error:  # noqa: BLE001
            return {"error": type(error).__name__, "message": str(error), "step": step,
                    "seconds": time.monotonic() - begun}
    comm.close()
    return {"error": None}


class _Recording:
    """The communicator, recording what each all-reduce was given and gave back (copies, as NumPy)."""

    def __init__(self, comm) -> None:
        self.comm, self.rank, self.world_size = comm, comm.rank, comm.world_size
        self.sent: list[np.ndarray] = []
        self.summed: list[np.ndarray] = []

    def allreduce_sum(self, be, bucket):
        self.sent.append(np.array(be.to_numpy(bucket)))
        out = self.comm.allreduce_sum(be, bucket)
        self.summed.append(np.array(be.to_numpy(out)))
        return out

    def broadcast(self, value, src=0):
        return self.comm.broadcast(value, src)

    def barrier(self):
        self.comm.barrier()


def _fit_ranks(rank: int, folder: Path, world_size: int, problem: dict[str, Any]) -> dict[str, Any]:
    """``fit`` on this rank with the communicator; the parameters and history it ends with, and each step's
    bucket before and after the all-reduce."""
    from softgrad.datasets import from_arrays
    from softgrad.training.fitting import fit
    from softgrad.training.models import MLP

    be, comm = _start(folder, rank, world_size)
    with comm:
        data = from_arrays(problem["x"], problem["y"])
        model = MLP(problem["widths"], seed=problem["seed"], dtype=np.float64)
        recording = _Recording(comm)
        history = fit(model, data, "numpy", communicator=recording, log=None, progress=False,
                      **problem["settings"])
        params = [np.array(model.be.to_numpy(p)) for p in model.params]
    return {"history": history, "params": params, "sent": recording.sent, "summed": recording.summed}


# the entry points torch.multiprocessing's spawn calls as fn(rank, *args)
def collectives(rank: int, folder: str, *args: Any) -> None:
    _guarded(_collectives, rank, folder, *args)


def killed(rank: int, folder: str, *args: Any) -> None:
    _guarded(_killed, rank, folder, *args)


def fit_ranks(rank: int, folder: str, *args: Any) -> None:
    _guarded(_fit_ranks, rank, folder, *args)
