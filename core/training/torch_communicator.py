"""The :class:`~softgrad.training.communicator.Communicator` on torch.distributed: gloo for backends on the CPU,
NCCL for backends on a GPU, started from the environment ``torchrun`` sets (:meth:`TorchCommunicator.from_environment`)
or from an explicit store (:meth:`TorchCommunicator.from_store`: a ``torch.distributed.FileStore``, as the tests do,
so no ports are involved).

torch is imported inside the functions here, when distributed training starts: importing softgrad (and this
module) imports no torch.

How each backend's bucket crosses into torch, and whether it is copied:

- NumPy: ``torch.from_numpy``, summed in place: no copy, and the bucket itself is returned (a read-only array,
  or a subclass of ndarray such as a test's immutable arrays, is copied once into a torch-owned bucket);
- torch (CPU, CUDA): the tensor itself, in place (a non-contiguous one is copied);
- array-api-strict and CuPy: ``torch.from_dlpack``, in place, no copy (CuPy: on the GPU, unverified here);
- JAX: its arrays are immutable, so the bucket is copied once into a torch-owned tensor, summed there, and
  handed back to JAX through DLPack (``be.asarray``), which shares the tensor's memory where JAX can (on the
  CPU it does; on a GPU unverified). The torch bucket is new at every call, so the JAX array it becomes never
  changes afterwards.

Every error of the engine (a peer that died: "Connection closed by peer"; one that hung past the timeout; a
store that is gone) becomes a :class:`~softgrad.training.communicator.DistributedError` of one line naming this
rank, the operation and the engine's message, raised within the process group's timeout.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
from softgrad.numerics.protocol import Array, Backend
from softgrad.training.communicator import DistributedError

PIP_TORCH = "pip install 'softgrad[torch]'  (or: pip install torch)"

#: what torchrun sets for every rank; without them there is no run to join
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "torchrun --nproc-per-node K -m softgrad train --distributed ..."
DEFAULT_TIMEOUT = timedelta(minutes=5)  # gloo's own default is 30 minutes, NCCL's 10: too long to notice a hang


def _torch_distributed():
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ValueError(f"distributed training needs PyTorch (torch.distributed), which is not installed: "
                         f"{PIP_TORCH}") from None
    if not dist.is_available():
        raise ValueError(f"this PyTorch ({torch.__version__}) was built without torch.distributed: {PIP_TORCH}")
    return torch, dist


def engine_message(error: BaseException) -> str:
    """The engine's message on one line: its first non-empty line, without the C++ source location gloo and
    c10d put in front (``[/pytorch/third_party/gloo/.../pair.cc:534] Connection closed by peer ...``) and the
    stack trace torch may append, whitespace squeezed, at most 300 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    # [file.cc:123] source locations, and the "[Rank 0]: " c10d puts before a rank's own message
    text = re.sub(r"^(\[[^\]]*\.(?:cpp|cc|h|hpp):\d+\]\s*|\[Rank \d+\]:\s*)+", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    # gloo's advice after the fact ("This is typically caused by a remote worker hanging ... GLHF!") adds
    # nothing to the line the caller's own message frames
    text = re.sub(r"\.? This is typically caused by .*$", "", text) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class TorchCommunicator:
    """A rank of a data-parallel run over torch.distributed's default process group.

    Build one with :meth:`from_environment` (under ``torchrun``) or :meth:`from_store`; :meth:`close` (or
    ``with``) destroys the process group. ``timeout`` bounds every collective: a rank that died or hung makes
    the others raise :class:`DistributedError` within it.
    """

    def __init__(self, *, rank: int, world_size: int, engine: str, timeout: timedelta, device: Any = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.engine = engine  #: "gloo" or "nccl"
        self.timeout = timeout
        self.device = device  #: the torch.device NCCL works on; None for gloo
        self._closed = False

    # ---- starting ----------------------------------------------------------------------------------------

    @classmethod
    def from_environment(cls, be: Backend | str, timeout: timedelta = DEFAULT_TIMEOUT) -> TorchCommunicator:
        """This process's rank of the run ``torchrun`` launched: RANK, WORLD_SIZE and the rendezvous
        (MASTER_ADDR/MASTER_PORT, or torchrun's own store) from the environment. gloo when ``be`` is on the
        CPU; NCCL when it is on a GPU, on the GPU numbered LOCAL_RANK. Raises ValueError, in one line saying how
        to launch, when the environment is not torchrun's.

        Give ``be`` as a name ("torch:cuda", "cupy") on a machine with several GPUs: the backend is then
        created once this rank's GPU is the current device, so each rank works on its own GPU. A backend
        created before on another GPU than LOCAL_RANK's is refused in one line."""
        missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
        if len(missing) == len(LAUNCH_VARIABLES):
            raise ValueError(f"distributed training runs under torchrun, and this process was not started by it "
                             f"({', '.join(missing)} are not set): launch it as {LAUNCH_HINT}")
        if missing:
            raise ValueError(f"torchrun's environment is incomplete here ({', '.join(missing)} not set): launch it "
                             f"as {LAUNCH_HINT}")
        rank, world_size = _int_variable("RANK"), _int_variable("WORLD_SIZE")
        local_rank = _int_variable("LOCAL_RANK")
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} is not below WORLD_SIZE={world_size}: launch it as {LAUNCH_HINT}")
        be = _backend_on_local_gpu(be, local_rank)
        device = _local_gpu(be, local_rank) if be.on_gpu else None
        return cls._start(be, timeout, device, init_method="env://", rank=rank, world_size=world_size)

    @classmethod
    def from_store(cls, be: Backend, store: Any, rank: int, world_size: int,
                   timeout: timedelta = DEFAULT_TIMEOUT) -> TorchCommunicator:
        """A rank that meets the others through ``store`` (a ``torch.distributed.FileStore`` or ``TCPStore``
        every rank opened with ``world_size``), as the tests start ranks without ports. On a GPU backend,
        rank ``rank`` works on GPU ``rank``."""
        device = _local_gpu(be, rank) if be.on_gpu else None
        return cls._start(be, timeout, device, store=store, rank=rank, world_size=world_size)

    @classmethod
    def _start(cls, be: Backend, timeout: timedelta, device: Any, **where: Any) -> TorchCommunicator:
        _, dist = _torch_distributed()
        engine = "nccl" if device is not None else "gloo"
        if dist.is_initialized():
            raise ValueError("torch.distributed's default process group is already started in this process: "
                             "close the communicator that started it first")
        begun = time.monotonic()
        try:
            dist.init_process_group(engine, timeout=timeout, device_id=device, **where)
        except (RuntimeError, OSError) as error:  # DistStoreError, DistNetworkError: a rank that never came
            raise DistributedError(f"rank {where['rank']} of {where['world_size']}: starting the process group "
                                   f"({engine}) failed after {time.monotonic() - begun:.1f} s (timeout "
                                   f"{timeout.total_seconds():g} s; did every rank start?): "
                                   f"{engine_message(error)}") from None
        return cls(rank=where["rank"], world_size=where["world_size"], engine=engine, timeout=timeout,
                   device=device)

    # ---- the Communicator interface ----------------------------------------------------------------------

    def allreduce_sum(self, be: Backend, bucket: Array) -> Array:
        """Every rank's ``bucket`` summed, in place where the bucket's memory can be shared (see the module's
        notes); returns ``bucket`` itself then, else a new array of ``be``."""
        torch, dist = _torch_distributed()
        tensor, shared = _as_tensor(torch, bucket)
        if tensor.ndim != 1:
            raise ValueError(f"allreduce_sum: the bucket must be 1-D, got shape {tuple(tensor.shape)}")
        what = f"the all-reduce of {tensor.numel():,} {str(tensor.dtype).removeprefix('torch.')} values"
        with self._failures(what):
            if self.device is not None and tensor.device.type == "cpu":
                # NCCL reduces GPU memory only: a host bucket (a flag of NumPy's beside a GPU run) goes through
                # this rank's GPU and back into its own memory (unverified here: no GPU)
                staged = tensor.to(self.device)
                dist.all_reduce(staged, op=dist.ReduceOp.SUM)
                tensor.copy_(staged)
            else:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        if tensor.is_cuda and not isinstance(bucket, torch.Tensor):
            # all_reduce orders NCCL's work before torch's current stream only; CuPy and JAX run on their own
            # streams, so they must not read the bucket before the sum is there (unverified here: no GPU)
            torch.cuda.current_stream().synchronize()
        if shared:
            return bucket
        return be.asarray(tensor.numpy() if tensor.device.type == "cpu" else tensor)

    def broadcast(self, value: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``value`` (picklable) on every rank."""
        _, dist = _torch_distributed()
        if not 0 <= src < self.world_size:
            raise ValueError(f"broadcast: src={src} is not a rank of this run (0 .. {self.world_size - 1})")
        objects = [value if self.rank == src else None]
        with self._failures(f"the broadcast from rank {src}"):
            dist.broadcast_object_list(objects, src=src, device=self.device)
        return objects[0]

    def barrier(self) -> None:
        """Return once every rank has called it. With gloo, torch's monitored barrier: within the timeout, rank
        0 names the ranks that did not arrive."""
        _, dist = _torch_distributed()
        with self._failures("the barrier"):
            if self.engine == "gloo":
                dist.monitored_barrier(timeout=self.timeout, wait_all_ranks=True)
            else:
                dist.barrier()

    # ---- ending ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the process group (once; a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        _, dist = _torch_distributed()
        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> TorchCommunicator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TorchCommunicator(rank={self.rank}, world_size={self.world_size}, engine={self.engine!r}, "
                f"timeout={self.timeout.total_seconds():g} s)")

    @contextmanager
    def _failures(self, operation: str):
        """The engine's errors as one DistributedError line: this rank, the operation, how long it waited."""
        if self._closed:
            raise DistributedError(f"rank {self.rank} of {self.world_size}: {operation} was called after close()")
        begun = time.monotonic()
        try:
            yield
        except (RuntimeError, OSError) as error:  # torch.distributed.DistError and its kinds are RuntimeErrors
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {operation} failed after {time.monotonic() - begun:.1f} s "
                f"(timeout {self.timeout.total_seconds():g} s; another rank died or hung): "
                f"{engine_message(error)}") from None


def from_environment(be: Backend | str, timeout: timedelta = DEFAULT_TIMEOUT) -> TorchCommunicator:
    """:meth:`TorchCommunicator.from_environment`: this process's rank of the run torchrun launched."""
    return TorchCommunicator.from_environment(be, timeout)


def _int_variable(name: str) -> int:
    value = os.environ[name]
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number: launch it as {LAUNCH_HINT}") from None
    if number < 0:
        raise ValueError(f"{name}={value!r} is negative: launch it as {LAUNCH_HINT}")
    return number


def _backend_on_local_gpu(be: Backend | str, local_rank: int) -> Backend:
    """``be``, or the backend named ``be`` created with GPU ``local_rank`` current (torch's and CuPy's current
    device, which torch:cuda and cupy take when they are created). Unverified here: no GPU."""
    from softgrad.numerics.registry import get_backend

    if not isinstance(be, str):
        return be
    if any(word in be for word in ("cuda", "gpu", "rocm")) or be == "cupy":
        torch, _ = _torch_distributed()
        if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        if be == "cupy":
            try:
                import cupy

                cupy.cuda.Device(local_rank).use()
            except Exception:  # noqa: BLE001 - no CuPy or no such device: get_backend says which, in one line
                pass
    return get_backend(be)


def _local_gpu(be: Backend, local_rank: int):
    """The CUDA device of local rank ``local_rank``, made torch's current one; ``be`` must already be on it (a
    backend on another GPU would put two ranks on one device, which NCCL refuses). Unverified here: no GPU."""
    torch, _ = _torch_distributed()
    if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local_rank} needs GPU {local_rank}, and torch finds "
                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA devices here: "
                         "start at most one rank per GPU (torchrun --nproc-per-node)")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    found = re.search(r"(\d+)\s*\)?$", str(getattr(be, "device", "")))
    if found is not None and int(found.group(1)) != local_rank:
        raise ValueError(f"backend {be.name!r} is on {be.device}, but local rank {local_rank} trains on GPU "
                         f"{local_rank}: create the backend after the communicator, or give each rank its own GPU "
                         "with CUDA_VISIBLE_DEVICES")
    return device


def _as_tensor(torch, bucket: Any) -> tuple[Any, bool]:
    """``bucket`` as a torch tensor, and whether it shares the bucket's memory (then summing it in place sums
    the bucket)."""
    if isinstance(bucket, torch.Tensor):
        tensor = bucket.detach()
        return (tensor, True) if tensor.is_contiguous() else (tensor.contiguous(), False)
    if isinstance(bucket, np.ndarray):
        # only a plain, writeable, contiguous ndarray is shared: a read-only one may be a memory map that
        # would crash the process, and a subclass may promise immutability (the loop uses what is returned)
        if type(bucket) is np.ndarray and bucket.flags.writeable and bucket.flags.c_contiguous:
            return torch.from_numpy(bucket), True
        return torch.from_numpy(np.array(bucket, order="C")), False
    if type(bucket).__module__.startswith("jax"):  # immutable: sum a torch-owned copy
        return torch.from_dlpack(bucket).clone(), False
    return torch.from_dlpack(bucket), True  # array-api-strict, CuPy: DLPack shares the memory


__all__ = ["DEFAULT_TIMEOUT", "TorchCommunicator", "engine_message", "from_environment"]
