"""TensorBoard curves of a run as it trains: :class:`TensorBoardCallback`, an epoch-end callback for
:func:`~softgrad.training.fitting.fit`.

    with TensorBoardCallback("runs/tb") as tensorboard:
        fit(model, data, callbacks=[tensorboard])
    # then: tensorboard --logdir runs/tb

It writes through tensorboardX (``pip install 'softgrad[tensorboard]'``), which needs neither torch nor
TensorFlow, and uses its event writer and protocol buffers directly rather than its ``SummaryWriter``:
``SummaryWriter.flush()`` does not wait for the queue its background thread drains (an epoch's scalars
reach the file only when a later epoch's flush, or the writer's two-minute timer, comes), and it names its
file to the second, so a second writer in the same folder within that second would truncate the first's
file. Here each epoch is one event, written and fsync'd before ``fit`` goes on, as ``metrics.jsonl`` is,
into a file whose name no other writer takes.
"""

from __future__ import annotations

import os
import time
import uuid
from numbers import Real
from pathlib import Path
from typing import Any

from softgrad.numerics.files import check_folder_writable

PIP_TENSORBOARD = "pip install 'softgrad[tensorboard]'  (or: pip install tensorboardX)"

#: the figures under a group of their own in TensorBoard (``train/loss``); the rest are the epoch's
_GROUPS = ("train", "test")


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of an epoch's history record, by tag: ``train_loss`` is ``train/loss``,
    ``test_accuracy`` ``test/accuracy`` (``test/rmse``, ``test/mae``, ``test/r2`` for regression), ``lr``
    stays ``lr``, ``seconds`` and ``samples_per_s`` are ``epoch/seconds`` and ``epoch/samples_per_s``. The
    epoch is the step, not a scalar; a figure the record does not have (None: no test split, a fused head's
    train accuracy) is left out."""
    tags = {}
    for key, value in record.items():
        if key == "epoch" or value is None or isinstance(value, bool) or not isinstance(value, Real):
            continue
        group, _, name = key.partition("_")
        tag = f"{group}/{name}" if group in _GROUPS and name else key if key == "lr" else f"epoch/{key}"
        tags[tag] = float(value)
    return tags


def _tensorboardx():
    """tensorboardX's event writer and protocol buffers; one line saying what to install where it is missing."""
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
    except ImportError:
        raise ImportError(f"TensorBoardCallback needs tensorboardX, which is not installed: {PIP_TENSORBOARD}"
                          ) from None
    return EventsWriter, Event, SessionLog, Summary


class TensorBoardCallback:
    """An epoch-end callback for :func:`~softgrad.training.fitting.fit` that writes each epoch's figures
    (:func:`scalar_tags`) to TensorBoard event files in ``logdir``, the epoch as the step.

    Each epoch is written and flushed to disk before training goes on, so ``tensorboard --logdir`` shows a
    run while it trains. The event file opens at the first epoch the callback sees and stays open until
    :meth:`close` (or the end of a ``with`` block); a callback used again after that (a resumed run) opens a
    new file beside the first. The first epoch's step is recorded as a restart (TensorBoard's
    ``purge_step``), so a run resumed from an earlier checkpoint replaces the epochs it trains again instead
    of drawing them twice. Files already in ``logdir`` are never written over. The callback never stops
    training.
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        _tensorboardx()  # a missing tensorboardX is said now, before any training
        self.logdir = Path(logdir)
        check_folder_writable(self.logdir, "TensorBoard log folder")
        self._writer = None
        self._suffix = ""

    def __call__(self, record: dict[str, Any]) -> None:
        events_writer, event, session_log, summary = _tensorboardx()
        step = int(record["epoch"])
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            # TensorBoard reads a folder's files in name order, and tensorboardX names them to the second: the
            # time in nanoseconds keeps two files of one second in the order they were written (a later one's
            # purge step then drops what it trains again); the process and a random token keep the name unique
            self._suffix = f".{time.time_ns()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.softgrad"
            self._writer = events_writer(str(self.logdir / "events"), self._suffix)
            self._writer.write_event(event(step=step, wall_time=time.time(),
                                           session_log=session_log(status=session_log.START)))
        values = [summary.Value(tag=tag, simple_value=value) for tag, value in scalar_tags(record).items()]
        self._writer.write_event(event(step=step, wall_time=time.time(), summary=summary(value=values)))
        self._writer.flush()  # written and fsync'd: a reader sees the whole epoch

    @property
    def path(self) -> Path | None:
        """The event file being written (None before the first epoch and after :meth:`close`)."""
        if self._writer is None:
            return None
        return next(self.logdir.glob(f"events.out.tfevents.*{self._suffix}"))

    def close(self) -> None:
        """Close the event file (every epoch is on disk already); the callback may be used again."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardCallback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorBoardCallback({str(self.logdir)!r})"


__all__ = ["PIP_TENSORBOARD", "TensorBoardCallback", "scalar_tags"]
