"""The large-vocabulary table as the terminal shows it: one table per vocabulary size, its notes, and what
each column means."""

from __future__ import annotations

from softgrad.bench.large_vocab_row import CUDA_ALLOCATOR, TORCH_CHUNK, LargeVocabRow, MiB


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f} MiB"


def _ratio(row: LargeVocabRow, key: str) -> str:
    return f"{row.ratios[key]:.2f}" if key in row.ratios else "-"


def render(rows: list[LargeVocabRow], console, matmul_gflops: dict[str, float] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table
    from softgrad.bench.roofline import roofline_for

    on_gpu = bool(rows) and rows[0].device == "cuda"
    peak = roofline_for(on_gpu, matmul_gflops or {})
    for vocab in dict.fromkeys(r.vocab for r in rows):
        shape = [r for r in rows if r.vocab == vocab]
        n, d = shape[0].tokens, shape[0].hidden
        table = Table(title=f"large vocabulary: loss + d input, d W, d b; N = {n:,} tokens, d = {d:,}, "
                      f"V = {vocab:,}, float32{' on CUDA' if on_gpu else ''}, class-index targets ({shape[0].flops / 1e9:,.0f} GFLOP a call)")
        columns = ["contender", "time / call", "spread", "calls", "GFLOP/s", "% peak", "peak extra", "later call",
                   "tracemalloc", "t ÷ chunked", "t ÷ dense", "mem ÷ chunked", "chunk rows"]
        for column in columns:
            table.add_column(column, justify="left" if column == "contender" else "right", no_wrap=True)
        notes = []
        for r in shape:
            if r.status != "ok":
                table.add_row(r.contender, r.status, *["-"] * (len(columns) - 2))
                notes.append(f"{r.contender}: {r.status}: {r.reason}")
                continue
            if r.cold:
                notes.append(f"{r.contender}: cold: the first call's time (it took {r.first_call_s:.1f} s, so no "
                             "timed call fit the --budget)")
            if r.memory_method and (on_gpu or not r.memory_method.startswith("VmHWM")):
                notes.append(f"{r.contender}: memory by {r.memory_method}")
            table.add_row(
                r.contender, f"{r.median_s:,.3f} s",
                f"±{r.spread_s / r.median_s * 50:.0f}%" if len(r.times_s) > 1 else "-",
                f"{len(r.times_s)}{' (cold)' if r.cold else ''}", f"{r.gflops:,.1f}",
                "-" if r.roofline_fraction is None else f"{r.roofline_fraction:.0%}",
                _mib(r.peak_extra_bytes), _mib(r.later_peak_extra_bytes), _mib(r.tracemalloc_peak_bytes),
                _ratio(r, "time_vs_chunked"), _ratio(r, "time_vs_dense"), _ratio(r, "memory_vs_chunked"),
                "-" if r.chunk_rows is None else f"{r.chunk_rows:,}")
        console.print(table)
        measured = [r for r in shape if r.status == "ok"]
        differ = [r.contender for r in measured if r.agrees is False]
        if measured:
            agreement = ("no torch row to compare with" if all(r.agrees is None for r in measured) else
                         f"loss or gradient norms DIFFER from torch's: {', '.join(differ)}" if differ else
                         "every contender's loss and gradient norms agree with torch's within 1e-3")
            notes.append(f"loss {measured[0].loss:.6f} ({measured[0].contender}); {agreement}")
        for note in notes:
            console.print(f"  [dim]{escape(note)}[/dim]", highlight=False)
    console.print(_footnote(on_gpu, peak), highlight=False)


def _footnote(on_gpu: bool, peak: float | None) -> str:
    """What the columns mean, below the tables: how memory was read on this device, what the ratios and the
    % of peak divide by, and what torch's two paths are."""
    return (
        ("peak extra: the GPU memory of the first forward+backward at this shape, in a fresh process, by the "
         "method each row's note names (" + CUDA_ALLOCATOR + " for torch's paths and torch:cuda; the backend's "
         "own be.peak_memory() for the others, as it reports it); later call: the same for the first timed call "
         "(torch's allocator only); mem ÷ chunked is only taken between rows measured the same way. t ÷ chunked, "
         if on_gpu else
         "peak extra: the RSS high-water mark of the first forward+backward at this shape, in a fresh process, "
         "minus the RSS once the inputs exist (the gradients count: d W alone is V x d x 4 bytes); later call: the "
         "same for the first timed call; tracemalloc: NumPy's own peak in that first call. t ÷ chunked, ")
        + "t ÷ dense: time per call over torch chunked's, torch dense's; mem ÷ chunked: peak extra over torch "
        "chunked's. % peak: 6 N V d flops per call over the "
        + (("GPU's" if on_gpu else "machine's") + " float32 matmul rate" + (" (not measured: no %)" if on_gpu else "") if peak is None
           else f"{peak:,.1f} GFLOP/s float32 matmul roofline" + (" of the GPU" if on_gpu else ""))
        + f". torch chunked: F.linear_cross_entropy(..., options=LinearCrossEntropyOptions(batch_chunk_size="
        f"{TORCH_CHUNK})); torch dense: options=None; both with autograd's backward().")
