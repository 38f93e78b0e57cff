"""The CPU targets, as medians over several ``python -m bench --json`` runs:
``python -m bench.cpu_targets RUN.json [RUN.json ...]``.

Every figure is a ratio within one run; the line gives the median over the
runs and each run's value:

- the NumPy backend's MLP training throughput as a fraction of NumPy's own
  matmul ceiling (``bench.ceiling``): at least 60% at batch 64, 85% at 256 and
  90% at 1024;
- the torch backend's, of torch's ceiling: at least 80% at every batch size;
- the recommended (fastest) softgrad backend's, of the best ceiling on the
  machine: at least 80%;
- the NumPy backend's cross-entropy with gradient at 8192 x 1000 and its SGD
  update of the MLP's 575,050 parameters, each over the torch backend's time:
  at most 1.5;
- NumPy over scikit-learn at least 1.25, torch over the PyTorch autograd loop
  at least 1.1, at every batch size.

Exit status 0 whatever the verdicts (a report, not a test), 2 when a file
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

OWN_CEILING = {"numpy": {64: 0.60, 256: 0.85, 1024: 0.90}, "torch": {64: 0.80, 256: 0.80, 1024: 0.80}}
PEERS = {"numpy": ("anchor:sklearn", 1.25), "torch": ("anchor:torch-autograd", 1.10)}
OPS = (("cross_entropy + grad", "8192 x 1000"), ("sgd_step (momentum)", None))


def _records(run: dict) -> dict:
    return {(r["backend"], r["batch_size"]): r for r in run.get("records", [])
            if r.get("model") == "mlp" and r.get("optimizer", "sgd") == "sgd"}


def _line(label: str, values: list[float | None], good: Callable[[float], bool], fmt: str) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return f"  {label}: not measured"
    median = statistics.median(seen)
    each = ", ".join("-" if v is None else format(v, fmt) for v in values)
    return f"  {label}: median {median:{fmt}} ({each}): {'met' if good(median) else 'MISSED'}"


def report(runs: list[dict]) -> list[str]:
    lines = [f"CPU targets, median of {len(runs)} run(s):"]
    records = [_records(run) for run in runs]
    for backend, targets in OWN_CEILING.items():
        for batch, floor in targets.items():
            values = [(r.get((backend, batch)) or {}).get("ceiling_fraction") for r in records]
            lines.append(_line(f"{backend} MLP batch {batch}, % of its own ceiling (target >= {floor:.0%})", values,
                               lambda v, f=floor: v >= f, ".0%"))
    for batch in (64, 256, 1024):
        values = []
        for r in records:
            ours = [rec for (b, size), rec in r.items() if size == batch and not b.startswith("anchor:")]
            best = max(ours, key=lambda rec: rec["samples_per_s"], default=None)
            values.append(None if best is None else best.get("best_ceiling_fraction"))
        lines.append(_line(f"fastest softgrad backend, batch {batch}, % of the best ceiling (target >= 80%)",
                           values, lambda v: v >= 0.8, ".0%"))
    for op, size in OPS:
        values = []
        for run in runs:
            times = {o["backend"]: o["timing"]["median_s"] for o in run.get("ops", [])
                     if o["op"] == op and (size is None or o["size"] == size) and o["dtype"] == "float32"}
            values.append(times["numpy"] / times["torch"] if {"numpy", "torch"} <= set(times) else None)
        lines.append(_line(f"numpy {op}{' ' + size if size else ''} time over torch's (target <= 1.5)", values,
                           lambda v: v <= 1.5, ".2f"))
    for backend, (peer, floor) in PEERS.items():
        for batch in (64, 256, 1024):
            values = []
            for r in records:
                ours, theirs = r.get((backend, batch)), r.get((peer, batch))
                values.append(None if ours is None or theirs is None else ours["samples_per_s"] / theirs["samples_per_s"])
            lines.append(_line(f"{backend} over {peer.removeprefix('anchor:')}, batch {batch} (target >= {floor})",
                               values, lambda v, f=floor: v >= f, ".2f"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_targets", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="JSON files written by python -m bench --json")
    args = parser.parse_args(argv)
    runs = []
    for path in args.results:
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            print(f"bench.cpu_targets: cannot read {path}: {error}", file=sys.stderr)
            return 2
    print("\n".join(report(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
