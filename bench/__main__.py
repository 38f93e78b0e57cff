"""``python -m bench``: op throughput per available backend, as a table.

Exit status 2, with one line, when the backend asked for is unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict

import numpy as np
from rich.console import Console
from rich.table import Table

from backends import available_backends, backend_names, get_backend
from bench.ops import OpResult, measure_ops
from core.errors import BackendUnavailableError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure softgrad's op throughput on each backend (median of repeats, "
        "device synchronised before every clock read).",
    )
    parser.add_argument("--backend", default="all",
                        help=f"a backend name ({', '.join(backend_names())}) or 'all' (default: all available)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="floating-point type of the logits and parameters (default: float32)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and shorter blocks (a few seconds)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case; the median is shown (default: 5)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def format_rate(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.1f}"


def render(results: list[OpResult], unavailable: dict[str, str], console: Console) -> None:
    table = Table(title="softgrad op throughput (median of repeats)")
    for column in ("op", "size", "backend", "dtype", "time / call", "spread", "rows or params / s"):
        table.add_column(column, justify="right" if column not in ("op", "backend") else "left")
    # group by op, then size in the order measured, then backend: rows to compare sit together
    op_order, size_order, backend_order = ({}, {}, {})
    for r in results:
        op_order.setdefault(r.op, len(op_order))
        size_order.setdefault(r.size, len(size_order))
        backend_order.setdefault(r.backend, len(backend_order))
    ordered = sorted(results, key=lambda r: (op_order[r.op], size_order[r.size], backend_order[r.backend]))
    for r in ordered:
        table.add_row(r.op, r.size, r.backend, r.dtype, f"{r.timing.median_s * 1e6:,.1f} µs",
                      f"±{r.timing.spread_s / r.timing.median_s * 50:.0f}%", format_rate(r.items_per_s))
    console.print(table)
    for name, reason in unavailable.items():
        console.print(f"[dim]{name}: unavailable: {reason}[/dim]")


def write_json_atomically(path: str, payload: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # a table wider than a pipe's default 80 columns, so redirected output stays readable
    console = Console(width=None if sys.stdout.isatty() else 120)
    if args.backend == "all":
        status = available_backends()
        names = [name for name, s in status.items() if s == "available"]
        unavailable = {name: s for name, s in status.items() if s != "available"}
    else:
        try:
            get_backend(args.backend)
        except BackendUnavailableError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        names, unavailable = [args.backend], {}

    results: list[OpResult] = []
    with console.status("measuring...") as status:
        for name in names:
            results += measure_ops(get_backend(name), np.dtype(args.dtype), quick=args.quick,
                                   repeats=args.repeats, progress=lambda text: status.update(text))
    render(results, unavailable, console)
    if args.json:
        write_json_atomically(args.json, {
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__},
            "unavailable": unavailable,
            "records": [dict(asdict(r), items_per_s=r.items_per_s) for r in results],
        })
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
