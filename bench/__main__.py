"""``python -m bench``: which backend is fastest for my network on this machine, measured.

By default a short sweep (about a minute on 2 cores): the MLP at batch 64 and
256 with SGD, every available backend beside the PyTorch autograd loop, each
in a process of its own; a line per contender as it is measured, then the
recommendation and tables that fit 100 columns. ``--full`` runs the complete
sweep (both networks, batch 64, 256 and 1024, SGD and Adam, the op benchmarks,
scikit-learn, the matmul ceilings); ``--wide`` prints the detail. Exit status
2, with one line, when the backend asked for is unavailable; 130 after Ctrl-C,
with what was measured so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.console import Console
from rich.markup import escape
from softgrad import datasets
from softgrad.backends import backend_names, get_backend
from softgrad.bench.detail import render_detail
from softgrad.bench.ops import OpResult, measure_ops
from softgrad.bench.report import (
    model_label,
    recommendation_lines,
    render_cases,
    render_ops_narrow,
    render_summary,
    short_name,
    stream_line,
)
from softgrad.bench.sweep import (
    ADAM_BATCH_SIZES,
    BATCH_SIZES,
    DEFAULT_BATCH_SIZES,
    choose_backends,
    chosen_models,
    contender_processes,
    default_batch_sizes,
    measure_ceilings,
    run_training,
    sigint_ignored,
    training_cases,  # noqa: F401  (imported from here: bench's tests, python -m bench's callers)
)
from softgrad.bench.worker import WorkerError
from softgrad.commands.cli import OneLineErrorParser
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.training.models import MODELS

DEFAULT_BLOCK_SAMPLES = 8192  # samples per timed block in the default sweep at most (--full: 16,384; --quick: 4,096)
DEFAULT_BLOCK_SECONDS = 0.25  # the default sweep's blocks: about this long each, however slow the contender
DEFAULT_ACCURACY_SAMPLES = 4096  # the default sweep's accuracy check: an epoch on this many training rows


# the name usage and errors give: `softgrad bench` sets it when it runs this command
PROG_NAME = "python -m bench"


def build_parser() -> argparse.ArgumentParser:
    """The bench's flags, named as the user called it (``PROG_NAME``, read when called)."""
    parser = OneLineErrorParser(
        prog=PROG_NAME,
        description="Which backend is fastest for your network on this machine: by default the MLP at batch 64 "
        "and 256 (SGD) on every available backend beside the PyTorch autograd loop, about a minute on 2 cores; "
        "--full for the complete sweep, --wide for the detail. Medians of interleaved repeats; the device is "
        "synchronised before every clock read. Ctrl-C stops and reports what was measured.",
    )
    parser.add_argument("--full", action="store_true",
                        help="the complete sweep: both models, batch 64, 256 and 1024, SGD and Adam, the op "
                        "benchmarks, the scikit-learn anchor, the matmul ceilings, 5 repeats (minutes)")
    parser.add_argument("--wide", action="store_true",
                        help="also print the detail (ceilings, %% of ceiling, spreads, peak memory, first steps, "
                        "every op column) in tables wider than 100 columns; the JSON always has it")
    parser.add_argument("--backend", default="all",
                        help=f"a backend name ({', '.join(backend_names())}) or 'all' (default: all available)")
    parser.add_argument("--model", choices=[*MODELS, "all"], default=None,
                        help="softmax regression, the 784-512-256-128-64-10 MLP, or both (default: mlp; "
                        "--full: all)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None, metavar="N",
                        help=f"training batch sizes (default: {' '.join(map(str, DEFAULT_BATCH_SIZES))}; --full: "
                        f"{' '.join(map(str, BATCH_SIZES))}, Adam {' '.join(map(str, ADAM_BATCH_SIZES))})")
    parser.add_argument("--optimizer", nargs="+", choices=["sgd", "adam"], default=None,
                        help="the optimizers to train with: SGD (Nesterov momentum, the recommendation's rows) "
                        "and Adam (lr 1e-3; against torch.optim.Adam and scikit-learn's adam) (default: sgd; "
                        "--full: both)")
    parser.add_argument("--dataset", choices=list(datasets.NAMES), default="mnist",
                        help="training data (default: mnist, the subset shipped with softgrad)")
    parser.add_argument("--root", help="folder of the full data sets (default $SOFTGRAD_DATA or "
                        "~/.cache/softgrad/data); MNIST without one is the shipped subset")
    parser.add_argument("--download", action="store_true", help="download missing data files with torchvision")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="floating-point type of the op benchmarks (training runs in float32)")
    parser.add_argument("--quick", action="store_true", help="shorter blocks and fewer op sizes")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per case (default: 3; --full: 5; --quick: 3)")
    parser.add_argument("--anchors", action=argparse.BooleanOptionalAction, default=None,
                        help="the anchors: the PyTorch autograd loop and scikit-learn's MLPClassifier (default: "
                        "the PyTorch loop; --full: both; --no-anchors: none)")
    parser.add_argument("--ops", action=argparse.BooleanOptionalAction, default=None,
                        help="the op benchmarks (default: with --full only)")
    parser.add_argument("--no-training", dest="training", action="store_false", help="skip the training benchmarks")
    parser.add_argument("--same-process", action="store_true",
                        help="train every contender in this process (faster to start; but one library's idle "
                        "threads spinning slow another's blocks) and time the matmul ceilings beforehand; by "
                        "default each contender trains in a process of its own, which also times its library's "
                        "ceiling between its blocks")
    parser.add_argument("--large-vocab", action="store_true",
                        help="also the large-vocabulary table (python -m bench.large_vocab): linear_cross_entropy"
                        "_and_grad per backend (numpy, torch, jax with --backend all) beside torch's "
                        "linear_cross_entropy, dense and chunked; a few minutes, seconds with --quick")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--distributed", action="store_true",
                        help="instead, the data-parallel table (python -m bench.distributed): samples/s of the MLP "
                        "for 1 process of 2 threads, 1 rank and 2 gloo ranks of 1 thread, and the all-reduce's "
                        "share of a step; its flags: --batch-size, --repeats, --rows, --json, --markdown")
    parser.add_argument("--cnn", action="store_true",
                        help="instead, the CNN row (python -m bench.cnn): LeNet on MNIST-shaped data at batch 64 and "
                        "256, softgrad numpy and torch against the idiomatic torch loop (nn.Conv2d, autograd, "
                        "torch.optim.SGD), and the im2col GEMMs' share of numpy's step; its flags: --batch-size, "
                        "--backend, --repeats, --runs, --json, --markdown")
    from softgrad.bench.large_vocab import add_shape_arguments

    add_shape_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, the sweep they leave open resolved (:func:`resolve_sweep`), each checked: a usage error
    (exit status 2, one line) before anything is measured."""
    from softgrad.bench.large_vocab import check_shape_arguments

    parser = build_parser()
    args = parser.parse_args(argv)
    check_shape_arguments(parser, args)
    resolve_sweep(args)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.batch_size and min(args.batch_size) < 1:
        parser.error("--batch-size must be at least 1")
    if args.training and args.dataset in datasets.REGRESSION_NAMES:
        # the training tables measure classifiers (accuracy, the 10-class MLP); regressors have their own bench
        classifiers = ", ".join(n for n in datasets.NAMES if n not in datasets.REGRESSION_NAMES)
        parser.error(f"--dataset {args.dataset} is a regression data set; the training benchmarks train "
                     f"classifiers ({classifiers}); python -m bench.regression benches softgrad's regressors "
                     "against scikit-learn's on diabetes, and --no-training runs the op benchmarks alone")
    return args


def resolve_sweep(args: argparse.Namespace) -> None:
    """The default sweep's choices, or --full's, where a flag left them open."""
    full = args.full
    if args.model is None:
        args.model = "all" if full else "mlp"
    if args.optimizer is None:
        args.optimizer = ["sgd", "adam"] if full else ["sgd"]
    if args.repeats is None:
        args.repeats = 3 if args.quick or not full else 5
    if args.ops is None:
        args.ops = full
    args.sklearn = bool(args.anchors) or (args.anchors is None and full)  # scikit-learn's anchor
    args.anchors = args.anchors is not False  # the PyTorch loop
    # the matmul ceilings and the roofline: detail, measured by --full and for --wide (or --same-process's table)
    args.ceilings = full or args.wide
    args.block_samples = None if full or args.quick else DEFAULT_BLOCK_SAMPLES
    args.block_seconds = None if full else DEFAULT_BLOCK_SECONDS
    args.accuracy_samples = None if full else DEFAULT_ACCURACY_SAMPLES


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in given:  # the data-parallel table: bench.distributed's own flags
        from softgrad.bench import distributed

        own, distributed.PROG_NAME = distributed.PROG_NAME, f"{PROG_NAME} --distributed"
        try:
            return distributed.main([arg for arg in given if arg != "--distributed"])
        finally:
            distributed.PROG_NAME = own
    if "--cnn" in given:  # the CNN row: bench.cnn's own flags
        from softgrad.bench import cnn
        from softgrad.commands.cli import run_main

        own, cnn.PROG_NAME = cnn.PROG_NAME, f"{PROG_NAME} --cnn"
        try:
            return run_main(cnn.PROG_NAME, cnn.main, [arg for arg in given if arg != "--cnn"])
        finally:
            cnn.PROG_NAME = own
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (python -m bench | head): the workers are closed; quietly
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (datasets.DatasetError, OSError) as error:  # data files; a --json path that cannot be written
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:  # a contender's own process failed: it says which and why
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before anything was measured (while loading or parsing): nothing to report
        print("bench: interrupted", file=sys.stderr)
        return 130


def make_console(wide: bool) -> Console:
    """The terminal's width on a terminal; to a file or a pipe 100 columns (200 with --wide). Each line is
    written and flushed as it is printed, so a pipe shows every result as it is measured."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)
    return Console(width=None if sys.stdout.isatty() else (200 if wide else 100))


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    # this process and every contender's may hold the same GPU: none takes 75% of its memory up front, as
    # XLA would (set before any backend loads JAX; bench.worker does the same in each worker)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.json:
        from softgrad.numerics.files import writable_target

        writable_target(args.json)  # before minutes of measuring, not after
    try:
        names, unavailable = choose_backends(args.backend)
    except BackendUnavailableError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    # the training data before anything is measured: a missing or damaged data set (or a failed --download)
    # is named in one line now, not after minutes of op benchmarks (main reports the DatasetError)
    data = datasets.load(args.dataset, root=args.root, download=args.download) if args.training else None
    console = make_console(args.wide)
    payload = print_header(console, args, unavailable)
    if args.training or args.ops:
        console.print(describe_sweep(args, data, names), highlight=False)
    measured = Measured()
    interrupted = measure(args, console, names, data, measured, payload)
    # after a Ctrl-C, a second one does not cut the report short
    with sigint_ignored() if interrupted else contextlib.nullcontext():
        return report(args, console, payload, measured, unavailable, interrupted=interrupted,
                      elapsed_s=time.perf_counter() - started)


def print_header(console: Console, args, unavailable: dict) -> dict:
    """The machine, its versions and NumPy's BLAS, in two lines (a third if the BLAS kernel was forced);
    the JSON payload they start."""
    from softgrad.bench.blas_kernel import forced_kernel_warning
    from softgrad.numerics.machine import machine_header

    header = machine_header()
    console.print(f"[bold]softgrad bench[/bold] on {header['cpu']} ({header['cpu_count']} CPUs"
                  f"{', GPU ' + header['gpu'] if header['gpu'] else ''}); "
                  + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if k in ("numpy", "torch", "scikit-learn")))
    blas = [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} kernel, {b.get('num_threads')} threads"
            for b in header["blas"] if b.get("user_api") == "blas"]
    console.print("NumPy's BLAS (threadpoolctl): " + ("; ".join(blas) or "not reported (threadpoolctl is not installed)"),
                  highlight=False)
    warning = forced_kernel_warning()
    if warning:
        console.print(f"[yellow]{escape(warning)}[/yellow]")
    return {"machine": header, "unavailable": unavailable, "blas_warning": warning,
            "sweep": "full" if args.full else "default"}


@dataclass
class Measured:
    """What the sections have measured so far: filled as they go, so that a Ctrl-C reports what there is."""

    op_results: list[OpResult] = field(default_factory=list)
    training_records: list = field(default_factory=list)
    large_vocab_rows: list = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # matmul GFLOP/s per device (bench.roofline)
    ceilings: dict = field(default_factory=dict)  # matmul ceilings per library (bench.ceiling)


def measure(args, console: Console, names: list[str], data, measured: Measured, payload: dict) -> bool:
    """Every section the arguments ask for, in order, into ``measured``; whether Ctrl-C stopped it."""
    status = console.status("measuring...") if console.is_terminal else contextlib.nullcontext()
    try:
        with status as spinner, contender_processes(args, names, _progress(spinner)) as workers:
            progress = _progress(spinner)
            if (args.training and args.ceilings) or args.large_vocab:
                measure_roofline(args, console, progress, measured, payload)
            if args.ops:
                measure_op_section(args, console, measured, names=names, workers=workers, progress=progress)
            if args.training:
                measure_training_section(args, console, measured, names=names, workers=workers, progress=progress,
                                         data=data, payload=payload)
            if args.large_vocab:
                from softgrad.bench.large_vocab import REPEATS, run_section

                # "all": the large-vocabulary table's own default set (numpy, torch, jax), each with its reason
                measured.large_vocab_rows, payload["large_vocab"] = run_section(
                    args, None if args.backend == "all" else [args.backend], 2 if args.quick else REPEATS,
                    measured.rates, progress)
    except KeyboardInterrupt:
        return True
    return False


def measure_roofline(args, console: Console, progress, measured: Measured, payload: dict) -> None:
    """The machine's matmul rate per device, which the ceilings and the large-vocabulary table read against."""
    from softgrad.bench.roofline import matmul_gflops

    progress("matmul roofline")
    measured.rates.update(matmul_gflops(1024 if args.quick else 2048))
    payload["matmul_gflops"] = measured.rates
    console.print("matmul roofline (float32): "
                  + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in measured.rates.items()))


def measure_op_section(args, console: Console, measured: Measured, *, names: list[str], workers, progress) -> None:
    """The op benchmarks of each backend, in its worker's process where it has one; a line per backend."""
    for name in names:
        worker = next((w for w in workers if w.name == name), None)
        if worker is not None:
            progress(f"op throughput of {name} (in its own process)")
            results = worker.ops(args.dtype, args.quick, args.repeats)
        else:
            results = measure_ops(get_backend(name), np.dtype(args.dtype), quick=args.quick, repeats=args.repeats,
                                  progress=progress)
        measured.op_results += results
        console.print(describe_ops(name, results), highlight=False)


def measure_training_section(args, console: Console, measured: Measured, *, names: list[str], workers, progress,
                             data, payload: dict) -> None:
    """The training rows, a line per contender as it is measured (the ceilings first with --same-process)."""
    if args.same_process and args.ceilings:
        measured.ceilings.update(measure_ceilings(args, names, progress, data))
    payload["isolated"] = not args.same_process
    width = max(len("torch-autograd"), *(len(short_name(n)) for n in [*names, *(w.name for w in workers)]))

    def on_case(model: str, batch_size: int, optimizer: str) -> None:
        console.print(f"{model} batch {batch_size}, {optimizer}: {args.repeats} repeat"
                      f"{'s' if args.repeats > 1 else ''} (samples/s, spread, {accuracy_note(args)})",
                      highlight=False)

    def on_record(record) -> None:
        measured.training_records.append(record)
        console.print(escape(stream_line(record, width)), highlight=False)

    run_training(args, names, progress, ceilings=measured.ceilings if args.ceilings else None, workers=workers,
                 data=data, on_case=on_case, on_record=on_record)


def accuracy_note(args) -> str:
    if args.accuracy_samples:
        return (f"test accuracy after an epoch of {args.accuracy_samples:,} training rows, on "
                f"{args.accuracy_samples // 2:,} test rows")
    return "test accuracy after one epoch"


def _progress(spinner):
    """The spinner's text on a terminal; nothing elsewhere (a pipe gets the result lines alone)."""
    return spinner.update if spinner is not None else (lambda _: None)


def describe_sweep(args, data, names: list[str]) -> str:
    """What is about to be measured, in a sentence, and how to get more."""
    parts = []
    if args.training:
        from softgrad.bench.contenders import widths

        shapes = " and ".join(model_label(m, widths(m, data)) for m in chosen_models(args))
        sizes = args.batch_size or default_batch_sizes(args)
        contenders = [*names, *(["the PyTorch autograd loop"] if args.anchors else []),
                      *(["scikit-learn"] if args.sklearn else [])]
        parts.append(f"{shapes}, {' and '.join(o.upper() if o == 'sgd' else 'Adam' for o in args.optimizer)}, "
                     f"batch {', '.join(map(str, sizes))}, {args.repeats} repeat{'s' if args.repeats > 1 else ''}: "
                     f"{', '.join(contenders)}")
    if args.ops:
        parts.append("the op benchmarks")
    more = "" if args.full else "\n(--full: every model, batch size, optimizer, op and anchor; --wide: the detail)"
    return "sweep: " + "; ".join(parts) + more


def describe_ops(name: str, results: list[OpResult]) -> str:
    """One line per backend as its op benchmarks finish: the largest cross-entropy case."""
    ce = [r for r in results if r.op.startswith("cross_entropy")]
    largest = ce[-1] if ce else (results[-1] if results else None)
    if largest is None:
        return f"  ops {name}: nothing measured"
    return (f"  ops {name}: {len(results)} cases; {largest.op} {largest.size}: "
            f"{largest.timing.median_s * 1e6:,.1f} µs per call")


def report(args, console: Console, payload: dict, measured: Measured, unavailable: dict, *, interrupted: bool,
           elapsed_s: float) -> int:
    """The recommendation first, then the tables (and with --wide the detail), then the JSON; the exit status."""
    from softgrad.bench.training import add_ratios, recommend, verdicts

    records, op_results = measured.training_records, measured.op_results
    payload["interrupted"] = interrupted
    payload["elapsed_s"] = round(elapsed_s, 1)
    if records:
        add_ratios(records, measured.rates, measured.ceilings if args.ceilings else None)
    chosen = recommend(records)  # the verdicts, once: the summary, the detail and the JSON read them
    decided = verdicts(records, chosen)
    console.print()
    if interrupted:
        console.print(f"[bold red]interrupted[/bold red] after {elapsed_s:,.0f} s: what was measured so far "
                      f"({len(records)} training rows, {len(op_results)} op cases)", highlight=False)
    else:
        console.print(f"measured in {elapsed_s:,.0f} s", highlight=False)
    lines = recommendation_lines(records, decided)
    payload["recommendation_text"] = lines
    for line in lines:
        console.print(f"[bold]recommendation:[/bold] {escape(line)}", highlight=False)
    if records:
        render_summary(records, decided, console, repeats=args.repeats)
        render_cases(records, console)
        console.print(f"accuracy: {accuracy_note(args)}", highlight=False)
    if op_results:
        render_ops_narrow(op_results, console)
    if args.wide:
        render_detail(console, op_results, records, decided, measured.ceilings, payload.get("isolated", False))
    if measured.large_vocab_rows:
        from softgrad.bench.large_vocab import render as render_large_vocab

        render_large_vocab(measured.large_vocab_rows, console, measured.rates)
    for name, reason in unavailable.items():
        console.print(f"[dim]{escape(name)}: unavailable: {escape(reason)}[/dim]")
    if args.json:
        write_json(args.json, payload, measured, chosen, decided)
        console.print(f"wrote {args.json}")
    if args.full and not args.wide and records:
        console.print("[dim]--wide: ceilings, % of ceiling, spreads, peak memory and every op column[/dim]")
    return 130 if interrupted else 0


def write_json(path: str, payload: dict, measured: Measured, chosen: dict, decided: dict) -> None:
    """Every figure, the recommendation and its verdicts, to ``path`` (written whole or not at all)."""
    from softgrad.bench.ops import sgd_floor_s
    from softgrad.numerics.files import atomic_write_text

    op_results = measured.op_results
    payload["ceilings"] = measured.ceilings
    payload["ops"] = [dict(asdict(r), items_per_s=r.items_per_s, gb_per_s=r.gb_per_s) for r in op_results]
    payload["sgd_floor_s"] = {b: sgd_floor_s(op_results, b) for b in dict.fromkeys(r.backend for r in op_results)}
    payload["records"] = [asdict(r) for r in measured.training_records]
    payload["recommendation"] = [{"model": m, "batch_size": b, "backend": r.backend}
                                 for (m, b), r in sorted(chosen.items())]
    payload["verdicts"] = [
        {"model": m, "batch_size": b, "backend": v.winner.backend, "too_close": v.too_close, "margin": v.margin,
         "runner_up": None if v.runner_up is None else v.runner_up.backend}
        for (m, b), v in sorted(decided.items())]
    atomic_write_text(path, json.dumps(payload, indent=2))


if __name__ == "__main__":
    sys.exit(main())
