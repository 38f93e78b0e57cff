"""``python -m bench.cnn`` (and ``python -m bench --cnn``): the bench's CNN row, LeNet on MNIST-shaped data.

softgrad's LeNet (:mod:`bench.cnn_contenders`) on the numpy and torch backends against the idiomatic torch
loop (``nn.Conv2d``, autograd, ``torch.optim.SGD``), at batch 64 and 256, in float32, on the shipped MNIST
rows. As in the MLP rows (:mod:`bench.training`), each contender trains in a process of its own
(:class:`bench.worker.IsolatedContender`), the repeats are interleaved (one block per contender in turn, a
pause between), samples/s is the median of the repeats and the ratios are taken within the same run.

What bounds numpy: after each repeat's blocks, this process (NumPy alone loaded) times the GEMMs of one
im2col step (:mod:`bench.cnn_ceiling`); numpy's samples/s over the GEMMs' is their share of its step, and
the GEMMs' GFLOP/s over NumPy's 2048x2048 matmul rate (:mod:`bench.roofline`, timed once per run) says how
much of BLAS's speed those shapes reach. ``--runs 3`` measures everything three times, fresh processes
each time, and reports each run and the medians of the three.

Set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` aside for this command (``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE``); the JSON records the BLAS threadpoolctl saw and the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from softgrad.commands.cli import OneLineErrorParser

PROG_NAME = "python -m bench.cnn"
BATCH_SIZES = (64, 256)
BACKENDS = ("numpy", "torch")
REPEATS = 3
BLOCK_SECONDS = 1.0  # each contender's timed block: about this long (at least 4 steps)
PAUSE_S = 0.2  # between two contenders' blocks: the last one's BLAS/OpenMP threads go idle


@dataclass
class CNNRow:
    """One contender at one batch size, in one run."""

    contender: str
    batch_size: int
    samples_per_s: list[float]  # one per repeat
    ratio: float | None = None  # median samples/s over the anchor's, same run
    gemm: dict[str, Any] = field(default_factory=dict)  # numpy's row: the im2col GEMMs' ceiling and shares

    @property
    def median(self) -> float:
        return statistics.median(self.samples_per_s)


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog=PROG_NAME, description="The CNN row: LeNet on MNIST-shaped data, softgrad's "
                                "backends against the idiomatic torch loop, samples/s and ratios in one run.")
    parser.add_argument("--batch-size", type=int, nargs="+", default=list(BATCH_SIZES), metavar="N")
    parser.add_argument("--backend", nargs="+", default=list(BACKENDS), help="softgrad backends (default: numpy "
                        "torch)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"interleaved blocks per contender "
                        f"(default {REPEATS})")
    parser.add_argument("--runs", type=int, default=1, help="whole measurements, fresh processes each (default 1)")
    parser.add_argument("--block-seconds", type=float, default=BLOCK_SECONDS, help=f"each timed block's "
                        f"length (default {BLOCK_SECONDS})")
    parser.add_argument("--rows", type=int, default=None, help="MNIST training rows the steps cycle through "
                        "(default: all 20,000)")
    parser.add_argument("--json", help="write every figure here (a new file)")
    parser.add_argument("--markdown", help="write the table here (a new file)")
    parser.add_argument("--from-json", metavar="PATH", help="measure nothing: print (and with --markdown write) "
                        "the table of a JSON this command wrote")
    return parser


def _block_steps(case, batch_size: int, block_seconds: float) -> int:
    """Steps in a block of about ``block_seconds``, after a warm-up of 2 steps and a probe of 4."""
    case.timed(2)
    probe = case.timed(4)
    return max(4, int(block_seconds / max(probe / 4, 1e-6)))


def measure_run(workers: list, batch_sizes: list[int], *, repeats: int, block_seconds: float,
                gemm_ceiling=None, progress=print) -> list[CNNRow]:
    """One run: every worker's samples/s at every batch size, blocks interleaved; ``gemm_ceiling(batch)``
    (one timed block of the im2col GEMMs, a dict) after each repeat, for the numpy row."""
    from softgrad.bench.cnn_contenders import ANCHOR_NAME, CNN_MODEL

    rows = []
    for batch_size in batch_sizes:
        cases = {w.name: w.prepare(CNN_MODEL, batch_size) for w in workers}
        steps = {name: _block_steps(case, batch_size, block_seconds) for name, case in cases.items()}
        rates: dict[str, list[float]] = {name: [] for name in cases}
        ceilings = []
        for repeat in range(repeats):
            for name, case in cases.items():
                time.sleep(PAUSE_S)
                rates[name].append(steps[name] * batch_size / case.timed(steps[name]))
            if gemm_ceiling is not None:
                time.sleep(PAUSE_S)
                ceilings.append(gemm_ceiling(batch_size))
            progress(f"  batch {batch_size} repeat {repeat + 1}/{repeats}: " + ", ".join(
                f"{name} {rates[name][-1]:,.0f}" for name in cases) + " samples/s")
        for case in cases.values():
            if case.release is not None:
                case.release()
        new = [CNNRow(name, batch_size, rates[name]) for name in cases]
        anchor = next((r for r in new if r.contender == ANCHOR_NAME), None)
        for row in new:
            row.ratio = None if anchor is None else row.median / anchor.median
            if row.contender == "numpy" and ceilings:
                row.gemm = gemm_shares(row.median, ceilings)
        rows += new
    return rows


def gemm_shares(numpy_samples_per_s: float, ceilings: list[dict], roofline_gflops: float | None = None) -> dict:
    """The numpy row's GEMM figures: the ceiling's median samples/s and GFLOP/s, and the GEMMs' share of the
    step's time (the step's samples/s over the ceiling's)."""
    ceiling = statistics.median(c["samples_per_s"] for c in ceilings)
    gflops = statistics.median(c["gflops"] for c in ceilings)
    out = {"ceiling_samples_per_s": ceiling, "gemm_gflops": gflops, "gemm_share_of_step": numpy_samples_per_s / ceiling,
           "flops_per_sample": ceilings[0]["flops_per_sample"], "ceilings": ceilings,
           "step_gflops": numpy_samples_per_s * ceilings[0]["flops_per_sample"] / 1e9}
    if roofline_gflops:
        out.update(roofline_gflops=roofline_gflops, gemm_share_of_roofline=gflops / roofline_gflops,
                   step_share_of_roofline=out["step_gflops"] / roofline_gflops)
    return out


def medians_of_runs(runs: list[list[CNNRow]]) -> list[dict]:
    """Per (contender, batch): the median over the runs of each run's median samples/s and ratio."""
    keys = sorted({(r.contender, r.batch_size) for run in runs for r in run}, key=lambda k: (k[1], k[0]))
    out = []
    for contender, batch in keys:
        same = [r for run in runs for r in run if (r.contender, r.batch_size) == (contender, batch)]
        ratios = [r.ratio for r in same if r.ratio is not None]
        shares = [r.gemm[k] for r in same for k in ("gemm_share_of_step",) if k in r.gemm]
        roof = [r.gemm["gemm_share_of_roofline"] for r in same if "gemm_share_of_roofline" in r.gemm]
        out.append({"contender": contender, "batch_size": batch, "runs": len(same),
                    "samples_per_s": statistics.median(r.median for r in same),
                    "ratio": statistics.median(ratios) if ratios else None,
                    "gemm_share_of_step": statistics.median(shares) if shares else None,
                    "gemm_share_of_roofline": statistics.median(roof) if roof else None})
    return out


def render(medians: list[dict], runs: list[list[CNNRow]]) -> str:
    """The markdown table: per (batch, contender) the median over the runs of samples/s, of the ratio to the
    torch loop (each taken within its run) and of numpy's GEMM shares; then each run's samples/s (ratio)."""
    lines = ["| batch | contender | samples/s (median of runs) | / torch autograd (median of the runs' ratios) | "
             "per run: samples/s (ratio) | GEMMs' share of the step | GEMM GFLOP/s / 2048² matmul |",
             "|---|---|---|---|---|---|---|"]
    for m in medians:
        per_run = " / ".join(f"{r.median:,.0f} ({r.ratio:.2f}x)" if r.ratio is not None else f"{r.median:,.0f}"
                             for run in runs for r in run
                             if (r.contender, r.batch_size) == (m["contender"], m["batch_size"]))
        ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}x"
        share = "-" if m["gemm_share_of_step"] is None else f"{m['gemm_share_of_step']:.0%}"
        roof = "-" if m["gemm_share_of_roofline"] is None else f"{m['gemm_share_of_roofline']:.0%}"
        lines.append(f"| {m['batch_size']} | {m['contender']} | {m['samples_per_s']:,.0f} | {ratio} | {per_run} | "
                     f"{share} | {roof} |")
    return "\n".join(lines)


def rows_from_json(payload: dict) -> list[list[CNNRow]]:
    """The runs of a JSON this command wrote, as rows again (to render its table anew)."""
    fields = ("contender", "batch_size", "samples_per_s", "ratio", "gemm")
    return [[CNNRow(**{k: row[k] for k in fields}) for row in run] for run in payload["per_run"]]


def _run_once(args, data_spec, roofline: float | None) -> list[CNNRow]:
    from softgrad.bench import cnn_ceiling
    from softgrad.bench.worker import start_workers

    specs = [("cnn", b) for b in args.backend] + [("cnn", "anchor")]
    workers = start_workers(specs, data_spec)
    try:
        rows = measure_run(workers, args.batch_size, repeats=args.repeats, block_seconds=args.block_seconds,
                           gemm_ceiling=lambda b: cnn_ceiling.measure("numpy", b, repeats=1))
    finally:
        for worker in workers:
            worker.close()
    for row in rows:
        if row.gemm and roofline:
            row.gemm = gemm_shares(row.median, row.gemm["ceilings"], roofline)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.batch_size) < 1 or args.repeats < 1 or args.runs < 1 or args.block_seconds <= 0:
        parser.error("--batch-size, --repeats and --runs must be at least 1, --block-seconds above 0")
    if args.rows is not None and args.rows < max(args.batch_size):
        parser.error(f"--rows {args.rows} is fewer than a batch of {max(args.batch_size)}")
    for path in (args.json, args.markdown):
        if path and os.path.lexists(path):  # results are kept: a new run gets a new file
            parser.error(f"{path} exists: give a new path (results are never written over)")
        if path:
            from softgrad.numerics.files import check_writable

            check_writable(path, "--json" if path == args.json else "--markdown")
    if args.from_json:
        try:
            runs = rows_from_json(json.loads(open(args.from_json).read()))
        except OSError as error:
            parser.error(f"--from-json {args.from_json}: {error.strerror or error}")
        except (ValueError, KeyError, TypeError):
            parser.error(f"--from-json {args.from_json} is not a JSON this command wrote")
        table = render(medians_of_runs(runs), runs)
        print(table)
        _write(args.markdown, table + "\n")
        return 0
    return _measure(args)


def _measure(args) -> int:
    from softgrad.bench.cnn_contenders import MNISTRows
    from softgrad.bench.roofline import matmul_gflops
    from softgrad.bench.worker import DataSpec
    from softgrad.numerics.machine import machine_header

    header = machine_header()
    print(f"{PROG_NAME}: LeNet, float32, batch {' '.join(map(str, args.batch_size))}, {args.repeats} repeats x "
          f"{args.runs} run(s) on {header['cpu']} ({header['cpu_count']} CPUs); BLAS {header['blas']}", flush=True)
    data_spec = DataSpec("mnist") if args.rows is None else MNISTRows(args.rows)
    began, load_start = time.perf_counter(), os.getloadavg()
    runs = []
    for run in range(args.runs):
        roofline = matmul_gflops().get("numpy")  # NumPy's 2048x2048 rate, in this run's minutes
        print(f"run {run + 1}/{args.runs} (numpy 2048x2048 matmul {roofline:.1f} GFLOP/s)", flush=True)
        runs.append(_run_once(args, data_spec, roofline))
    medians = medians_of_runs(runs)
    table = render(medians, runs)
    print(table)
    payload = {"machine": header, "batch_sizes": args.batch_size, "repeats": args.repeats, "runs": args.runs,
               "block_seconds": args.block_seconds, "elapsed_s": round(time.perf_counter() - began, 1),
               "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
               "openblas_environment": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
               "medians": medians, "per_run": [[asdict(r) | {"median": r.median} for r in run] for run in runs]}
    _write(args.json, json.dumps(payload, indent=1) + "\n")
    _write(args.markdown, table + "\n")
    return 0


def _write(path: str | None, text: str) -> None:
    if path:
        from softgrad.numerics.files import atomic_write_text

        atomic_write_text(path, text)
        print(f"wrote {path}")


if __name__ == "__main__":
    from softgrad.commands.cli import run_main

    sys.exit(run_main(PROG_NAME, main))
