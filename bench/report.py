"""What ``python -m bench`` prints by default: a line per contender as it is measured, then the
recommendation and tables that fit 100 columns (nothing essential cut at 80). The wide detail (ceilings,
% of ceiling, spreads, peak memory, first steps, op rates) is ``--wide``'s, in ``bench.__main__``."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

TORCH_LOOP = "anchor:torch-autograd"


def narrow_table() -> Table:
    """A table without vertical rules, so the default sweep's tables fit 80 columns. Its title is printed
    as a line of its own: a title of a narrow table would wrap to the table's width."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def print_table(console: Console, title: str, table: Table, note: str | None = None) -> None:
    console.print(f"[bold]{escape(title)}[/bold]", highlight=False)
    console.print(table)
    if note:
        console.print(escape(note), highlight=False)


def model_label(model: str, widths: Sequence[int] | None) -> str:
    shape = "-".join(map(str, widths)) if widths else ""
    name = "MLP" if model == "mlp" else "softmax regression" if model == "linear" else model
    return f"{name} {shape}".strip()


def short_name(backend: str) -> str:
    """A contender as the tables name it: the anchors without their prefix (``torch-autograd``, ``sklearn``)."""
    return backend.removeprefix("anchor:")


def stream_line(record, name_width: int = 16) -> str:
    """One contender's result, printed as soon as it is measured (under 80 columns)."""
    accuracy = "" if record.accuracy is None else f"  {record.accuracy:6.1%}"
    return (f"  {record.model} batch {record.batch_size:<4} {record.optimizer:<4} "
            f"{short_name(record.backend):<{name_width}} {record.samples_per_s:>9,.0f} samples/s"
            f" {f'±{record.spread * 50:.0f}%':>5}{accuracy}")


def loop_for(record, records) -> object | None:
    """The PyTorch autograd loop's row in ``record``'s case, on its device (CUDA beside a GPU row)."""
    name = TORCH_LOOP + (":cuda" if record.on_gpu else "")
    return next((r for r in records if r.backend == name and r.case == record.case), None)


def _times(record, records) -> str | None:
    loop = loop_for(record, records)
    return None if loop is None else f"{record.samples_per_s / loop.samples_per_s:.2f}x"


def recommendation_lines(records, decided) -> list[str]:
    """One line per network: the fastest softgrad backend here and its speed over the PyTorch loop."""
    lines = []
    for model in dict.fromkeys(m for m, _ in sorted(decided)):
        verdicts = [(batch, v) for (m, batch), v in sorted(decided.items()) if m == model]
        label = model_label(model, verdicts[0][1].winner.widths)
        winners = {v.winner.backend for _, v in verdicts}
        if len(winners) == 1 and not any(v.too_close for _, v in verdicts):
            (winner,) = winners
            times = [(batch, _times(v.winner, records)) for batch, v in verdicts]
            if all(t for _, t in times):
                (b0, t0), *rest = times
                against = f", {t0} the PyTorch autograd loop at batch {b0}" + "".join(
                    f", {t} at batch {b}" for b, t in rest)
            else:
                against = " at batch " + ", ".join(str(b) for b, _ in verdicts)
            lines.append(f"fastest here for {label} (SGD): {winner}{against}")
            continue
        parts = []
        for batch, v in verdicts:
            if v.too_close:
                parts.append(f"batch {batch}: {v.winner.backend} or {v.runner_up.backend}, too close to call "
                             f"({v.margin:.0%} apart, within the spread)")
            else:
                t = _times(v.winner, records)
                parts.append(f"batch {batch}: {v.winner.backend}" + (f" ({t} the PyTorch loop)" if t else ""))
        lines.append(f"fastest here for {label} (SGD): " + "; ".join(parts))
    return lines


def render_summary(records, decided, console: Console, *, repeats: int) -> None:
    """Per network and optimizer: samples/s of every contender at every batch size, and each over the
    PyTorch loop; ★ marks the recommended backend (where it is not too close to call)."""
    stars = {(v.winner.backend, key) for key, v in decided.items() if not v.too_close}
    groups = dict.fromkeys((r.model, r.optimizer) for r in records)
    for model, optimizer in sorted(groups, key=lambda k: (k[1] != "sgd", k[0] != "mlp")):
        rows = [r for r in records if (r.model, r.optimizer) == (model, optimizer)]
        sizes = sorted({r.batch_size for r in rows})
        label = model_label(model, rows[0].widths)
        trained = "SGD" if optimizer == "sgd" else "Adam (lr 1e-3)"
        has_loop = any(r.backend.startswith(TORCH_LOOP) for r in rows)
        table = narrow_table()
        table.add_column("contender", no_wrap=True)
        for size in sizes:
            table.add_column(f"batch {size}", justify="right", no_wrap=True)
            if has_loop:
                table.add_column("× loop", justify="right", no_wrap=True)
        first = {r.backend: r.samples_per_s for r in rows if r.batch_size == sizes[0]}
        for name in sorted(dict.fromkeys(r.backend for r in rows), key=lambda n: -first.get(n, 0.0)):
            cells = [escape(short_name(name))]
            for size in sizes:
                row = next((r for r in rows if r.backend == name and r.batch_size == size), None)
                if row is None:
                    cells += ["-", "-"] if has_loop else ["-"]
                    continue
                star = " ★" if optimizer == "sgd" and (name, (model, size)) in stars else ""
                cells.append(f"{row.samples_per_s:,.0f}{star}")
                if has_loop:
                    cells.append(_times(row, records) or "-")
            table.add_row(*cells)
        print_table(console, f"{label}, {trained}: samples/s, median of {repeats}", table,
                    "★ recommended; × loop: over the PyTorch autograd loop's samples/s" if has_loop
                    else "★ recommended")


def render_cases(records, console: Console) -> None:
    """Per case: each contender's samples/s, its ratio to every anchor (× loop: the PyTorch autograd loop),
    a 60,000-sample epoch and the test accuracy after one epoch on the training data."""
    anchors = sorted({r.backend for r in records if r.backend.startswith("anchor:")})
    cases = sorted({r.case for r in records}, key=lambda k: (k[2] != "sgd", k[0] != "mlp", k[1]))
    for model, batch_size, optimizer in cases:
        case = [r for r in records if r.case == (model, batch_size, optimizer)]
        trained = "SGD" if optimizer == "sgd" else "Adam"
        table = narrow_table()
        table.add_column("contender", no_wrap=True)
        ratio_names = ["× loop" if a == TORCH_LOOP else f"× {short_name(a).replace('torch-autograd', 'loop')}"
                       for a in anchors]
        for column in ("samples/s", *ratio_names, "60k epoch", "accuracy"):
            table.add_column(column, justify="right", no_wrap=True)
        for r in sorted(case, key=lambda r: -r.samples_per_s):
            table.add_row(escape(short_name(r.backend)), f"{r.samples_per_s:,.0f}",
                          *[f"{r.ratios[a]:.2f}" if a in r.ratios else "-" for a in anchors],
                          f"{60_000 / r.samples_per_s:.2f} s", "-" if r.accuracy is None else f"{r.accuracy:.2%}")
        print_table(console, f"{model_label(model, case[0].widths)}, batch {batch_size}, {trained}", table)


def render_ops_narrow(results, console: Console) -> None:
    """Op timings, one row per (op, size, backend): time per call and GB/s (``--wide``: every column)."""
    table = narrow_table()
    table.add_column("op", overflow="fold")
    table.add_column("size", justify="right", overflow="fold")
    table.add_column("backend", no_wrap=True)
    table.add_column("time / call", justify="right", no_wrap=True)
    table.add_column("GB/s", justify="right", no_wrap=True)
    op_order, size_order, backend_order = {}, {}, {}
    for r in results:
        op_order.setdefault(r.op, len(op_order))
        size_order.setdefault(r.size, len(size_order))
        backend_order.setdefault(r.backend, len(backend_order))
    for r in sorted(results, key=lambda r: (op_order[r.op], size_order[r.size], backend_order[r.backend])):
        table.add_row(r.op, r.size, escape(r.backend), f"{r.timing.median_s * 1e6:,.1f} µs", f"{r.gb_per_s:,.1f}")
    print_table(console, "op time per call (median of repeats)", table)


__all__ = ["model_label", "recommendation_lines", "render_cases", "render_ops_narrow", "render_summary",
           "stream_line"]
