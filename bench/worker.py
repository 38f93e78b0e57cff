"""Each training contender in a process of its own, driven from the bench's process.

OpenBLAS, OpenMP and XLA leave worker threads spinning for a while after a
call. In one process, one library's spinning threads took cores from the next
contender's block: the NumPy backend trained 16-19% slower at batch 64 beside
torch and JAX than alone (alternating blocks, 7 repeats, two runs). A user
trains with one library loaded, so the bench measures each contender that way.

The bench's process still decides the order: it asks one worker at a time for
a block of steps while the others wait on their pipe, so drift in the machine
hits every contender alike, as before. After each repeat's training blocks,
one worker per library (the first that trains on it: softgrad's backend
before an anchor on the same library) times the step's matmul ceiling
(:mod:`bench.ceiling`), so a row and the ceiling it is read against are
measured with the same library loaded alone, in the same minutes.

The op benchmarks (:mod:`bench.ops`) of each softgrad backend run in its
worker too. Each worker loads the data itself (the same files, the same
call) when it first trains, so nothing large crosses the pipe: only the
commands, their timings and the results.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from softgrad.bench.contenders import Case


class WorkerError(RuntimeError):
    """A contender's process failed or ended: the message names the contender and what went wrong."""


@dataclass(frozen=True)
class DataSpec:
    """How every worker loads the training data: the arguments of ``datasets.load``."""

    dataset: str = "mnist"
    root: str | None = None
    download: bool = False

    def load(self):
        from softgrad import datasets

        return datasets.load(self.dataset, root=self.root, download=self.download)


def make_contender(kind: str, argument: str | None):
    """A contender by kind: ``softgrad`` (``argument``: a backend name), ``torch-autograd`` (``argument``: the
    device), ``sklearn``, or ``cnn`` (the CNN row's LeNet: ``argument`` a backend name, or ``anchor`` for the torch
    loop; :mod:`bench.cnn_contenders`)."""
    from softgrad.bench import contenders

    if kind == "cnn":
        from softgrad.bench.cnn_contenders import make_cnn_contender

        return make_cnn_contender(argument)

    if kind == "softgrad":
        return contenders.SoftgradContender(argument)
    if kind == "torch-autograd":
        return contenders.TorchAutogradContender(argument or "cpu")
    if kind == "sklearn":
        return contenders.SklearnContender()
    raise ValueError(f"unknown contender kind {kind!r}")


def _one_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()


def serve(conn, kind: str, argument: str | None, data_spec: DataSpec) -> None:
    """The worker's loop: build the contender, load the data, then answer commands until ``close``.

    Every answer is ``("ok", value)`` or ``("error", one line)``.
    """
    # Ctrl-C reaches the whole process group: the bench's process closes its workers, so a worker
    # neither dies with a traceback of its own nor leaves a command half-answered
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # several workers may share one GPU: none takes 75% of its memory up front, as XLA would
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        worker = _Served(make_contender(kind, argument), data_spec)
        conn.send(("ok", (worker.contender.name, bool(getattr(worker.contender, "on_gpu", False)), worker.library)))
    except BaseException as error:  # noqa: BLE001  (reported to the bench's process, which raises it)
        conn.send(("error", _one_line(error)))
        return
    while True:
        try:
            command, *args = conn.recv()
        except (EOFError, OSError):  # the bench's process went away
            return
        if command == "close":
            conn.send(("ok", None))
            return
        try:
            value = worker.answer(command, args)
        except Exception as error:  # noqa: BLE001
            conn.send(("error", _one_line(error)))
            continue
        try:
            conn.send(("ok", value))
        except Exception as error:  # noqa: BLE001  (a value that cannot be sent: say why, not just die)
            conn.send(("error", f"its answer to {command!r} could not be sent back: {_one_line(error)}"))


class _Served:
    """What a worker holds between commands: its contender, the data (loaded on first use: a worker that
    only times ops never needs it), its prepared cases, and the ceiling's calls per block."""

    def __init__(self, contender, data_spec: DataSpec) -> None:
        from softgrad.bench.ceiling import ANCHOR_LIBRARY

        self.contender = contender
        self.library = ANCHOR_LIBRARY.get(contender.name, contender.name)
        self._data_spec = data_spec
        self._loaded: list = []
        self._cases: dict[int, Case] = {}
        self._calls: dict[tuple, int] = {}  # calibrated on each (widths, batch size)'s first block

    def data(self):
        if not self._loaded:
            self._loaded.append(self._data_spec.load())
        return self._loaded[0]

    def answer(self, command: str, args: list) -> Any:
        """The value that answers ``command``; an exception, which the loop reports in one line."""
        cases = self._cases
        if command == "prepare":
            model, batch_size, optimizer = args
            cases[len(cases)] = self.contender.prepare(model, batch_size, self.data(), optimizer)
            return len(cases) - 1
        if command == "timed":
            case_id, steps = args
            return cases[case_id].timed(steps)
        if command == "peak_memory":
            return cases[args[0]].peak_memory()
        if command == "release":
            cases.pop(args[0], None)
            return None
        if command == "accuracy":
            from softgrad.bench.contenders import accuracy_subset

            model, batch_size, optimizer, *samples = args
            return self.contender.accuracy(model, batch_size, accuracy_subset(self.data(), (samples or [None])[0]),
                                           optimizer)
        if command == "ceiling":
            return self._ceiling(*args)
        if command == "ops":
            import numpy as np
            from softgrad.bench.ops import measure_ops

            dtype, quick, repeats = args
            return measure_ops(self.contender.be, np.dtype(dtype), quick=quick, repeats=repeats)
        raise ValueError(f"unknown command {command!r}")

    def _ceiling(self, widths, batch_size: int, min_block_s: float) -> dict:
        from softgrad.bench.ceiling import measure

        key = (tuple(widths), batch_size)
        value = measure(self.library, widths, batch_size, repeats=1, min_block_s=min_block_s,
                        calls=self._calls.get(key))
        self._calls[key] = value["calls"]
        return value


class IsolatedContender:
    """A contender that trains in a process of its own (:func:`serve`), with the in-process contenders'
    interface: ``name``, ``on_gpu``, ``prepare(...)`` returning a :class:`Case`, ``accuracy(...)``; and
    ``library`` and ``ceiling(...)``: its library's matmul ceiling, timed in the same process."""

    def __init__(self, kind: str, argument: str | None, data_spec: DataSpec, *, wait: bool = True) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no library loaded but its own
        self._conn, child = context.Pipe()
        self.name = f"{kind} {argument or ''}".strip()  # until the worker names it
        self._process = context.Process(target=serve, args=(child, kind, argument, data_spec), daemon=True,
                                        name=f"softgrad-bench-{kind}")
        self._process.start()
        child.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """The worker's first answer: its contender's name, device and library (or why it could not start)."""
        try:
            self.name, self.on_gpu, self.library = self._answer()
        except BaseException:
            self.close()
            raise

    def _answer(self) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(timeout=5)
            raise WorkerError(f"bench: the process measuring {self.name} ended (exit code "
                              f"{self._process.exitcode})") from None
        if status == "error":
            raise WorkerError(f"bench: {self.name}: {value}")
        return value

    def _call(self, *command: Any) -> Any:
        try:
            self._conn.send(command)
        except (BrokenPipeError, OSError):
            self._process.join(timeout=5)
            raise WorkerError(f"bench: the process measuring {self.name} ended (exit code "
                              f"{self._process.exitcode})") from None
        return self._answer()

    def prepare(self, model: str, batch_size: int, data: Any = None, optimizer: str = "sgd") -> Case:
        """``data`` is unused: the worker loaded the same data itself."""
        case_id = self._call("prepare", model, batch_size, optimizer)

        def timed(steps: int) -> float:  # the worker's own clock, between two synchronisations
            return self._call("timed", case_id, steps)

        return Case(timed, lambda: None, lambda: self._call("peak_memory", case_id), timed_run=timed,
                    release=lambda: self._call("release", case_id))

    def accuracy(self, model: str, batch_size: int, data: Any = None, optimizer: str = "sgd",
                 samples: int | None = None) -> float:
        """``samples``: train on that many of the worker's training rows (bench.contenders.accuracy_subset)."""
        return self._call("accuracy", model, batch_size, optimizer, samples)

    def ceiling(self, widths: Sequence[int], batch_size: int, min_block_s: float) -> dict:
        """One block of :func:`bench.ceiling.measure` for this contender's library, in its process."""
        return self._call("ceiling", list(widths), batch_size, min_block_s)

    def ops(self, dtype: str, quick: bool, repeats: int) -> list:
        """:func:`bench.ops.measure_ops` for this softgrad backend, in its process."""
        return self._call("ops", dtype, quick, repeats)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close",))
                self._conn.poll(5) and self._conn.recv()  # the answer to a command interrupted by Ctrl-C, or close's
            except Exception:  # noqa: BLE001  (a pipe broken or left mid-message: the process is ended below)
                pass
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def start_workers(specs: Sequence[tuple[str, str | None]], data_spec: DataSpec,
                  progress=lambda _: None) -> list[IsolatedContender]:
    """One :class:`IsolatedContender` per ``(kind, argument)``; those already started are closed if one fails."""
    workers: list[IsolatedContender] = []
    try:
        # all started first, then each awaited: the interpreters import their libraries side by side
        for kind, argument in specs:
            progress(f"starting the process for {kind} {argument or ''}".strip())
            workers.append(IsolatedContender(kind, argument, data_spec, wait=False))
        for worker in workers:
            progress(f"waiting for the process of {worker.name}")
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.close()
        raise
    return workers


__all__ = ["DataSpec", "IsolatedContender", "WorkerError", "make_contender", "serve", "start_workers"]
