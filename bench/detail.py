"""What ``python -m bench --wide`` adds below the default report: the op table with every column, a
training table per case (ceilings, % of ceiling, spreads, peak memory, first steps), the matmul ceilings
and the recommendation per network. ``bench.report`` holds the default, narrow tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from softgrad.bench.ops import OpResult


def format_rate(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.1f}"


def render_ops(results: list[OpResult], console: Console) -> None:
    table = Table(title="op throughput (median of repeats)")
    for column in ("op", "size", "backend", "dtype", "time / call", "spread", "rows or params / s", "GB/s",
                   "% of copy"):
        table.add_column(column, justify="right" if column not in ("op", "backend") else "left")
    # group by op, then size in the order measured, then backend: rows to compare sit together
    op_order, size_order, backend_order = ({}, {}, {})
    for r in results:
        op_order.setdefault(r.op, len(op_order))
        size_order.setdefault(r.size, len(size_order))
        backend_order.setdefault(r.backend, len(backend_order))
    ordered = sorted(results, key=lambda r: (op_order[r.op], size_order[r.size], backend_order[r.backend]))
    copies = {(r.backend, r.size): r.gb_per_s for r in results if r.op == "device copy"}
    for r in ordered:
        copy = copies.get((r.backend, r.size))
        table.add_row(r.op, r.size, r.backend, r.dtype, f"{r.timing.median_s * 1e6:,.1f} µs",
                      f"±{r.timing.spread_s / r.timing.median_s * 50:.0f}%", format_rate(r.items_per_s),
                      f"{r.gb_per_s:,.1f}", "-" if copy is None or r.op == "device copy" else f"{r.gb_per_s / copy:.0%}")
    console.print(table)
    from softgrad.bench.ops import sgd_floor_s

    for backend in backend_order:
        floor = sgd_floor_s(results, backend)
        sgd = next((r for r in results if r.backend == backend and r.op.startswith("sgd_step")), None)
        if floor is not None and sgd is not None:
            console.print(f"sgd_step on {backend}: {sgd.timing.median_s * 1e6:,.0f} µs per update; its memory traffic "
                          f"({sgd.bytes_moved / 1e6:.1f} MB: parameters, gradients and buffers read, parameters and "
                          f"buffers written) at {backend}'s copy rate allows {floor * 1e6:,.0f} µs "
                          f"({floor / sgd.timing.median_s:.0%} of the way there)", highlight=False)


def render_training(records, chosen, anchors: list[str], console: Console) -> None:
    cases = sorted({r.case for r in records}, key=lambda k: (k[2] != "sgd", k[0] != "mlp", k[1]))
    for model, batch_size, optimizer in cases:
        label = "MLP 784-512-256-128-64-10" if model == "mlp" else "softmax regression"
        trained = "" if optimizer == "sgd" else ", Adam (lr 1e-3)"
        table = Table(title=f"training throughput: {label}, batch {batch_size}{trained}")
        columns = ["backend", "samples/s", "spread", *[f"× {a.removeprefix('anchor:')}" for a in anchors],
                   "% own ceiling", "% best ceiling", "60k-sample epoch", "accuracy", "peak memory",
                   "first 2 steps"]
        for column in columns:
            table.add_column(column, justify="left" if column == "backend" else "right", no_wrap=column == "backend")
        case = [r for r in records if r.case == (model, batch_size, optimizer)]
        for r in sorted(case, key=lambda r: -r.samples_per_s):
            name = r.backend + (" ★" if chosen.get((model, batch_size)) is r else "")
            table.add_row(
                name, f"{r.samples_per_s:,.0f}", f"±{r.spread * 50:.0f}%",
                *[f"{r.ratios[a]:.2f}" if a in r.ratios else "-" for a in anchors],
                _percent(r.ceiling_fraction), _percent(r.best_ceiling_fraction),
                f"{60_000 / r.samples_per_s:.2f} s",
                "-" if r.accuracy is None else f"{r.accuracy:.2%}",
                "-" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 2**20:,.1f} MiB",
                "-" if r.warmup_s is None else f"{r.warmup_s * 1e3:,.0f} ms",
            )
        console.print(table)


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    return f"{fraction:.0%}" + (" (!)" if fraction > 1 else "")


def render_ceilings(ceilings: dict, console: Console, isolated: bool = False) -> None:
    """One line per library: the samples/s its step's matmuls alone allow, per network and batch size."""
    where = ("timed between the training blocks, in the process that trains on it" if isolated
             else "in a process of its own")
    for name, cases in ceilings.items():
        if isinstance(cases, str):
            console.print(f"[dim]{escape(cases)}[/dim]")
            continue
        measured = [c for c in cases if "error" not in c]
        if measured:
            console.print(f"matmul ceiling of {name} (a step's matmuls alone, {where}): " + ", ".join(
                f"{'-'.join(map(str, c['widths']))} batch {c['batch_size']} ({c['products']} products): "
                f"{c['samples_per_s']:,.0f} samples/s ({c['gflops']:.0f} GFLOP/s)" for c in measured), highlight=False)
        for c in cases:
            if "error" in c:
                console.print(f"[dim]{escape(c['error'])} ({'-'.join(map(str, c['widths']))} batch "
                              f"{c['batch_size']})[/dim]")


def render_detail(console: Console, op_results: list[OpResult], records, decided, ceilings: dict,
                  isolated: bool) -> None:
    """--wide's detail, after the default report: every op column, the training tables, the ceilings."""
    console.print("[bold]detail (--wide)[/bold]")
    if op_results:
        render_ops(op_results, console)
    if not records:
        return
    anchors = sorted({r.backend for r in records if r.backend.startswith("anchor:")})
    render_training(records, {k: v.winner for k, v in decided.items() if not v.too_close}, anchors, console)
    render_ceilings(ceilings, console, isolated)
    console.print("% own ceiling: samples/s over what the step's matmuls alone allow on the row's own "
                  "library (anchors: torch's, scikit-learn's NumPy); % best ceiling: over the fastest "
                  "library's on the device", highlight=False)
    if any((r.ceiling_fraction or 0) > 1 or (r.best_ceiling_fraction or 0) > 1 for r in records):
        console.print("(!) above 100% of a ceiling: the ceiling was measured while the machine was busy; "
                      "rerun the bench on an idle machine", highlight=False)
    for model in dict.fromkeys(m for m, _ in sorted(decided)):
        console.print(f"[bold]recommendation[/bold] (★) for {model}: " + "; ".join(
            f"batch {batch}: {escape(v.describe())}" for (m, batch), v in sorted(decided.items())
            if m == model), highlight=False)
