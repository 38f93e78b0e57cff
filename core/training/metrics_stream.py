"""``metrics.jsonl``: one JSON line per epoch, beside a run's checkpoint, written as each epoch ends.

The history (``history.json``, the checkpoint's) is whole only when a run ends; this file lets a long run
be watched and plotted while it trains. Each line is flushed and fsync'd at once, so a reader sees every
finished epoch. A resumed run rewrites it to the checkpoint's epochs first (an epoch trained after the
last checkpoint, by a run that was then killed, is not repeated), then appends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from softgrad.numerics.files import atomic_write_text, writable_target

#: the file's name, beside the checkpoint
METRICS_NAME = "metrics.jsonl"


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _holds_metrics(path: Path) -> bool:
    """Whether ``path`` holds a metrics stream (empty, or JSON lines of epoch records; the last may be
    cut short by a killed run): only such a file is a run's own to rewrite."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read(256 << 20).decode().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return False
    for number, text in enumerate(lines, start=1):
        try:
            record = json.loads(text)
        except ValueError:
            if number == len(lines) and not text.endswith("\n"):
                continue  # the line a killed run was writing
            return False
        if not isinstance(record, dict) or "epoch" not in record:
            return False
    return True


class MetricsStream:
    """The open ``metrics.jsonl`` of a run: :meth:`append` writes one epoch's record, durably."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path, self._handle = path, handle

    @classmethod
    def start(cls, folder: str | os.PathLike, history: list[dict]) -> MetricsStream:
        """The stream in ``folder``, holding exactly ``history`` (the epochs the run starts from: none for a
        new run). A file there that is not a metrics stream is someone else's and is not replaced."""
        path = Path(folder) / METRICS_NAME
        target = writable_target(path)  # no folder, FIFO or device in its place
        if target.exists() and not _holds_metrics(target):
            raise FileExistsError(f"{path} exists and holds something other than a run's metrics: move it, or "
                                  "train into another folder (a run never replaces files it did not write)")
        atomic_write_text(target, "".join(_line(record) for record in history))
        return cls(path, open(target, "a", encoding="utf-8"))

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(_line(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())  # a reader, or a crash, sees the whole epoch

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> MetricsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics stream (a file, or the run folder holding ``metrics.jsonl``); a line
    being written (no newline yet) is left out."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


__all__ = ["METRICS_NAME", "MetricsStream", "read_metrics"]
