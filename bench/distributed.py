"""``python -m bench.distributed`` (and ``softgrad bench --distributed``): data-parallel training on this
machine, measured.

The bench's MLP (784-512-256-128-64-10, float32, the numpy backend, SGD with Nesterov momentum) trains with
``fit`` on the shipped MNIST subset at each global batch size, in three arrangements, each in processes of
its own:

- one process with 2 BLAS threads (``fit`` as ever: no communicator);
- one process with 1 thread (``fit``'s one-rank path: no all-reduce);
- 2 ranks of 1 thread each, over gloo, started with ``torch.multiprocessing`` and a ``FileStore`` in a
  temporary folder (no ports), each rank taking half of every global batch.

A repeat is one epoch; the first epoch is a warm-up (gloo connects its pairs at the first all-reduce) and
is not counted. samples/s is the epoch's global rows over its training time, as ``fit``'s record has it
(the median of the repeats, with their spread). The all-reduce's share of a step is the time rank 0 spends
inside ``allreduce_sum`` (the communicator is wrapped to time it; the wait for the slower rank included),
over the epoch's training time.

The machine is measured as it is: set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` aside for this command
(``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``); the BLAS each process ran (threadpoolctl's report)
is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from softgrad.commands.cli import OneLineErrorParser

PROG_NAME = "python -m bench.distributed"
BATCH_SIZES = (64, 256, 1024)
ROWS = 16384  # training rows of the shipped MNIST subset per epoch: 256 steps at batch 64, 16 at 1024
REPEATS = 5


@dataclass(frozen=True)
class Arrangement:
    """How the training runs: ``ranks`` processes of ``threads`` BLAS threads each."""

    label: str
    ranks: int
    threads: int


ARRANGEMENTS = (Arrangement("1 process, 2 threads", 1, 2), Arrangement("1 rank, 1 thread", 1, 1),
                Arrangement("2 ranks, 1 thread each", 2, 1))


@dataclass
class Row:
    """One arrangement at one global batch size: the repeats' figures and their medians."""

    arrangement: str
    ranks: int
    threads: int
    batch_size: int
    samples_per_s: list[float]
    allreduce_share: list[float]
    step_ms: list[float]
    blas: list[dict]

    @property
    def median_samples_per_s(self) -> float:
        return statistics.median(self.samples_per_s)

    @property
    def median_share(self) -> float | None:
        return statistics.median(self.allreduce_share) if self.ranks > 1 else None


class TimedCommunicator:
    """A communicator whose ``allreduce_sum`` calls are timed (the bench's wrapper; nothing else changes)."""

    def __init__(self, inner) -> None:
        self.inner, self.rank, self.world_size = inner, inner.rank, inner.world_size
        self.seconds = 0.0

    def allreduce_sum(self, be, bucket):
        began = time.perf_counter()
        try:
            return self.inner.allreduce_sum(be, bucket)
        finally:
            self.seconds += time.perf_counter() - began

    def broadcast(self, value: Any, src: int = 0) -> Any:
        return self.inner.broadcast(value, src)

    def barrier(self) -> None:
        self.inner.barrier()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG_NAME, description="Data-parallel training on this machine: samples/s "
                                "of the MLP for 1 process of 2 threads, 1 rank of 1 thread and 2 gloo ranks of 1 "
                                "thread each, and the all-reduce's share of a step (docs/distributed.md).")
    parser.add_argument("--batch-size", type=int, nargs="+", default=list(BATCH_SIZES), metavar="N",
                        help=f"global batch sizes (default: {' '.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"timed epochs after a warm-up one, of which "
                        f"the median is taken (default {REPEATS})")
    parser.add_argument("--rows", type=int, default=ROWS, help=f"training rows per epoch (default {ROWS:,})")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH (a new file)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to PATH (a new file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rows < 1 or min(args.batch_size) < 1:
        parser.error("--repeats, --rows and --batch-size must be at least 1")
    for path in (args.json, args.markdown):
        if path and os.path.lexists(path):  # results are kept: a new run gets a new file
            print(f"{PROG_NAME}: {path} exists: give a new path (results are never written over)", file=sys.stderr)
            return 2
    try:
        import torch.distributed  # noqa: F401
    except ImportError:
        print(f"{PROG_NAME}: needs PyTorch: pip install 'softgrad[torch]'", file=sys.stderr)
        return 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from softgrad.numerics.machine import machine_header

    header = machine_header()
    print(f"{PROG_NAME} on {header['cpu']} ({header['cpu_count']} CPUs); numpy {header['versions'].get('numpy')}, "
          f"torch {header['versions'].get('torch')}; the MLP on {args.rows:,} MNIST rows, float32, numpy backend; "
          f"median of {args.repeats} epochs after a warm-up", flush=True)
    rows: list[Row] = []
    began, load_at_start = time.perf_counter(), _load_average()
    for arrangement in ARRANGEMENTS:
        for row in measure(arrangement, args.batch_size, args.repeats, args.rows):
            rows.append(row)
            print(_stream_line(row), flush=True)
    table = render(rows)
    print()
    print(table)
    payload = {"machine": header, "rows_per_epoch": args.rows, "repeats": args.repeats,
               "elapsed_s": round(time.perf_counter() - began, 1),
               "load_average": {"start": load_at_start, "end": _load_average()},  # a shared machine's neighbours
               "openblas_environment": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
               "rows": [dict(asdict(r), median_samples_per_s=r.median_samples_per_s,
                             median_allreduce_share=r.median_share) for r in rows]}
    _write(args.json, json.dumps(payload, indent=2))
    _write(args.markdown, table + "\n")
    return 0


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages: on a shared machine, how busy the neighbours kept the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _write(path: str | None, text: str) -> None:
    if path:
        from softgrad.numerics.files import atomic_write_text

        atomic_write_text(path, text)
        print(f"wrote {path}")


def _stream_line(row: Row) -> str:
    share = "" if row.median_share is None else f", all-reduce {row.median_share:.0%} of a step"
    spread = f"{min(row.samples_per_s):,.0f}-{max(row.samples_per_s):,.0f}"
    return (f"  {row.arrangement:<24} batch {row.batch_size:>5}: {row.median_samples_per_s:>8,.0f} samples/s "
            f"({spread}){share}")


def render(rows: list[Row]) -> str:
    """The table: a line per global batch size, samples/s per arrangement, 2 ranks against 1, the share."""
    sizes = sorted({r.batch_size for r in rows})
    by = {(r.arrangement, r.batch_size): r for r in rows}
    head = ["global batch", *(a.label for a in ARRANGEMENTS), "2 ranks / 1 rank", "all-reduce share (2 ranks)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in sizes:
        cells = [str(size)]
        for arrangement in ARRANGEMENTS:
            row = by.get((arrangement.label, size))
            cells.append("-" if row is None else f"{row.median_samples_per_s:,.0f}")
        one, two = by.get((ARRANGEMENTS[1].label, size)), by.get((ARRANGEMENTS[2].label, size))
        cells.append(f"{two.median_samples_per_s / one.median_samples_per_s:.2f}x" if one and two else "-")
        cells.append(f"{two.median_share:.0%}" if two and two.median_share is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("samples/s: median of the repeats (one epoch each); all-reduce share: rank 0's time inside "
                 "allreduce_sum (waiting for the other rank included) over the epoch's training time.")
    return "\n".join(lines)


def measure(arrangement: Arrangement, batch_sizes: list[int], repeats: int, rows: int) -> list[Row]:
    """Every batch size in this arrangement's own processes (spawned, so each sets its threads first)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="softgrad-bench-distributed-") as folder:
        mp.spawn(rank_main, args=(arrangement, list(batch_sizes), repeats, rows, folder),
                 nprocs=arrangement.ranks, join=True)
        return json_rows(Path(folder) / "rank-0.json", arrangement)


def json_rows(path: Path, arrangement: Arrangement) -> list[Row]:
    return [Row(arrangement=arrangement.label, ranks=arrangement.ranks, threads=arrangement.threads, **row)
            for row in json.loads(path.read_text())]


def rank_main(rank: int, arrangement: Arrangement, batch_sizes: list[int], repeats: int, rows: int,
              folder: str) -> None:
    """One process of the arrangement: its threads set, its rank started, every batch size trained."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(arrangement.threads)
    with threadpool_limits(arrangement.threads):
        blas = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for p in threadpool_info() if p.get("user_api") == "blas"]
        communicator = _communicator(rank, arrangement, folder)
        try:
            results = [dict(batch_size=size, blas=blas, **_train(size, repeats, rows, communicator))
                       for size in batch_sizes]
        finally:
            if communicator is not None:
                communicator.inner.close()
    if rank == 0:
        Path(folder, "rank-0.json").write_text(json.dumps(results))


def _communicator(rank: int, arrangement: Arrangement, folder: str) -> TimedCommunicator | None:
    if arrangement.ranks == 1:
        return None
    from datetime import timedelta

    import torch.distributed as dist
    from softgrad.numerics.registry import get_backend
    from softgrad.training.torch_communicator import TorchCommunicator

    store = dist.FileStore(str(Path(folder) / "store"), arrangement.ranks)
    inner = TorchCommunicator.from_store(get_backend("numpy"), store, rank, arrangement.ranks,
                                         timeout=timedelta(minutes=5))
    return TimedCommunicator(inner)


def _train(batch_size: int, repeats: int, rows: int, communicator: TimedCommunicator | None) -> dict:
    """``repeats`` timed epochs after a warm-up one: samples/s, the all-reduce's share and ms per step."""
    from softgrad import datasets
    from softgrad.bench.contenders import widths
    from softgrad.training.fitting import fit
    from softgrad.training.models import MLP

    data = datasets.load("mnist")
    data = replace(data, x_train=data.x_train[:rows], y_train=data.y_train[:rows], x_test=data.x_test[:0],
                   y_test=data.y_test[:0])  # no test set: the epochs are training alone
    model = MLP(widths("mlp", data), "relu", seed=0, dtype="float32")
    marks: list[float] = []  # the all-reduce seconds so far at each epoch's end (rank 0 runs the callbacks)
    history = fit(model, data, epochs=repeats + 1, batch_size=batch_size, log=None, progress=False,
                  communicator=communicator, lr=0.01,
                  callbacks=[lambda record: marks.append(communicator.seconds if communicator else 0.0)])
    steps = -(-len(data.y_train) // batch_size)
    timed = history[1:]
    inside = [after - before for before, after in zip(marks, marks[1:])]
    return {"samples_per_s": [r["samples_per_s"] for r in timed],
            "allreduce_share": [s / r["seconds"] for s, r in zip(inside, timed)],
            "step_ms": [r["seconds"] / steps * 1e3 for r in timed]}


if __name__ == "__main__":
    sys.exit(main())
