"""``softgrad conformance NAME``: the protocol's checks on one registered backend.

(``python -m softgrad conformance`` and ``python -m softgrad.backends.conformance`` are the same command.)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.files import atomic_write_text
from softgrad.numerics.registry import backend_names, get_backend


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="softgrad conformance",
        description="Check a softgrad backend against the protocol: softmax and log-softmax, NLL, cross-entropy "
        "and its gradient against float64 references and finite differences (and PyTorch where installed), "
        "non-finite semantics, bad input, SGD against the reference update, and a short training "
        "trajectory against the NumPy backend. Exits 0 only when every check passes.")
    parser.add_argument("backend", metavar="NAME", help=f"a registered backend ({', '.join(backend_names())})")
    parser.add_argument("--examples", type=int, default=30, metavar="N",
                        help="Hypothesis examples per property check and dtype (default 30)")
    parser.add_argument("--json", metavar="PATH", help="also write every result to PATH as JSON")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    return args


def render(name: str, results, console) -> None:
    from rich.table import Table

    dtypes = sorted({r.dtype for r in results})
    table = Table(title=f"conformance of backend {name!r}")
    table.add_column("operation")
    for dtype in dtypes:
        table.add_column(dtype, justify="right")
    ops: dict[str, dict[str, list]] = {}
    for r in results:
        ops.setdefault(r.op, {}).setdefault(r.dtype, []).append(r)
    for op, by_dtype in ops.items():
        cells = []
        for dtype in dtypes:
            group = by_dtype.get(dtype)
            if not group:
                cells.append("-")
                continue
            errors = [r.largest_error for r in group if r.largest_error is not None]
            ratios = [r.error_over_tolerance for r in group if r.error_over_tolerance is not None]
            largest = f" (max err {max(errors):.1e}, {max(ratios):.0%} of tol)" if errors and ratios else ""
            failed = [r for r in group if not r.passed]
            cells.append(f"[red]FAIL[/red] {len(failed)}/{len(group)}" if failed else f"pass{largest}")
        table.add_row(op, *cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    try:
        be = get_backend(args.backend)
    except BackendUnavailableError as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 2
    from softgrad.backends.conformance import run_checks

    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        with console.status("checking...") as status:
            results = run_checks(be, examples=args.examples, progress=lambda text: status.update(text))
    except ImportError as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 2
    render(args.backend, results, console)
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.print(f"[red]FAILED[/red] {r.op}: {r.check} ({r.dtype})\n{r.message}\n", markup=True,
                      highlight=False)
    verdict = (f"{args.backend}: all {len(results)} checks passed" if not failed else
               f"{args.backend}: {len(failed)} of {len(results)} checks failed, in "
               + ", ".join(dict.fromkeys(f"{r.op} ({r.dtype})" for r in failed)))
    console.print(verdict, highlight=False)
    if args.json:
        try:
            atomic_write_text(args.json, json.dumps({"backend": args.backend, "examples": args.examples,
                                                     "passed": not failed, "results": [asdict(r) for r in results]},
                                                    indent=2))
        except OSError as error:
            print(f"conformance: cannot write {args.json}: {error.strerror or error}", file=sys.stderr)
            return 2
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
