"""``python -m bench``: which backend to train on, measured.

Op throughput and training throughput of every available backend, beside
idiomatic PyTorch and scikit-learn on the same data, network and batch size,
and the machine's matmul rate; then a recommendation per model and batch
size. Exit status 2, with one line, when the backend asked for is unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from softgrad import datasets
from softgrad.backends import available_backends, backend_names, get_backend
from softgrad.base.errors import BackendUnavailableError
from softgrad.bench.ops import OpResult, measure_ops
from softgrad.bench.worker import WorkerError
from softgrad.training.cli import OneLineErrorParser
from softgrad.training.models import MODELS

BATCH_SIZES = [64, 256, 1024]
ADAM_BATCH_SIZES = [256]  # one size: Adam's rows compare the optimizer step, the SGD rows cover the sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="python -m bench",
        description="Measure softgrad's backends (ops and training throughput, accuracy, memory) beside "
        "idiomatic PyTorch and scikit-learn, and recommend the backend to train on. Medians of "
        "interleaved repeats; the device is synchronised before every clock read.",
    )
    parser.add_argument("--backend", default="all",
                        help=f"a backend name ({', '.join(backend_names())}) or 'all' (default: all available)")
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all",
                        help="softmax regression, the 784-512-256-128-64-10 MLP, or both (default: all)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None, metavar="N",
                        help=f"training batch sizes (default: {' '.join(map(str, BATCH_SIZES))}; Adam: "
                        f"{' '.join(map(str, ADAM_BATCH_SIZES))})")
    parser.add_argument("--optimizer", nargs="+", choices=["sgd", "adam"], default=["sgd", "adam"],
                        help="the optimizers to train with: SGD (Nesterov momentum, the recommendation's rows) "
                        "and Adam (lr 1e-3; against torch.optim.Adam and scikit-learn's adam) (default: both)")
    parser.add_argument("--dataset", choices=list(datasets.NAMES), default="mnist",
                        help="training data (default: mnist, the subset shipped with softgrad)")
    parser.add_argument("--root", help="folder of the full data sets (default $SOFTGRAD_DATA or "
                        "~/.cache/softgrad/data); MNIST without one is the shipped subset")
    parser.add_argument("--download", action="store_true", help="download missing data files with torchvision")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="floating-point type of the op benchmarks (training runs in float32)")
    parser.add_argument("--quick", action="store_true", help="shorter blocks and fewer sizes: under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default: 5, quick: 3)")
    parser.add_argument("--no-anchors", dest="anchors", action="store_false",
                        help="skip the PyTorch and scikit-learn anchors")
    parser.add_argument("--no-ops", dest="ops", action="store_false", help="skip the op benchmarks")
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
    from softgrad.bench.large_vocab import add_shape_arguments, check_shape_arguments

    add_shape_arguments(parser)
    args = parser.parse_args(argv)
    check_shape_arguments(parser, args)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
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
                   "% own ceiling", "% best ceiling", "60k-sample epoch", "accuracy (1 epoch)", "peak memory",
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


def choose_backends(requested: str) -> tuple[list[str], dict[str, str]]:
    """The backends to measure and, for the table's foot, those that cannot run here."""
    if requested == "all":
        status = available_backends()
        return ([n for n, s in status.items() if s == "available"],
                {n: s for n, s in status.items() if s != "available"})
    get_backend(requested)  # raises BackendUnavailableError with the reason
    return [requested], {}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (datasets.DatasetError, OSError) as error:  # data files; a --json path that cannot be written
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:  # a contender's own process failed: it says which and why
        print(error, file=sys.stderr)
        return 1


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # this process and every contender's may hold the same GPU: none takes 75% of its memory up front, as
    # XLA would (set before any backend loads JAX; bench.worker does the same in each worker)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.json:
        from softgrad.base.files import writable_target

        writable_target(args.json)  # before minutes of measuring, not after
    try:
        names, unavailable = choose_backends(args.backend)
    except BackendUnavailableError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    # the training data before anything is measured: a missing or damaged data set (or a failed --download)
    # is named in one line now, not after minutes of op benchmarks (main reports the DatasetError)
    data = datasets.load(args.dataset, root=args.root, download=args.download) if args.training else None
    # a table wider than a pipe's default 80 columns, so redirected output stays readable
    console = Console(width=None if sys.stdout.isatty() else 200)
    from softgrad.base.machine import machine_header
    from softgrad.bench.roofline import matmul_gflops

    header = machine_header()
    console.print(f"[bold]softgrad bench[/bold] on {header['cpu']} ({header['cpu_count']} CPUs"
                  f"{', GPU ' + header['gpu'] if header['gpu'] else ''}); "
                  + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if k in ("numpy", "torch", "scikit-learn")))
    blas = [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} kernel, {b.get('num_threads')} threads"
            for b in header["blas"] if b.get("user_api") == "blas"]
    console.print("NumPy's BLAS (threadpoolctl): " + ("; ".join(blas) or "not reported (threadpoolctl is not installed)"),
                  highlight=False)
    from softgrad.bench.blas_kernel import forced_kernel_warning

    warning = forced_kernel_warning()
    if warning:
        console.print(f"[yellow]{escape(warning)}[/yellow]")
    payload: dict = {"machine": header, "unavailable": unavailable, "blas_warning": warning}
    op_results: list[OpResult] = []
    training_records = []
    chosen: dict = {}
    large_vocab_rows = []
    with console.status("measuring...") as status, contender_processes(args, names, status.update) as workers:
        progress = status.update
        if args.training or args.large_vocab:
            progress("matmul roofline")
            rates = matmul_gflops(1024 if args.quick else 2048)
            payload["matmul_gflops"] = rates
            console.print("matmul roofline (float32): " + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in rates.items()))
        if args.ops:
            for name in names:
                worker = next((w for w in workers if w.name == name), None)
                if worker is not None:
                    progress(f"op throughput of {name} (in its own process)")
                    op_results += worker.ops(args.dtype, args.quick, args.repeats)
                else:
                    op_results += measure_ops(get_backend(name), np.dtype(args.dtype), quick=args.quick,
                                              repeats=args.repeats, progress=progress)
        if args.training:
            ceilings = measure_ceilings(args, names, progress, data) if args.same_process else {}
            training_records, chosen = run_training(args, names, progress, rates, ceilings, workers, data)
            payload["ceilings"] = ceilings
            payload["isolated"] = not args.same_process
        if args.large_vocab:
            from softgrad.bench.large_vocab import REPEATS, run_section

            # "all": the large-vocabulary table's own default set (numpy, torch, jax), each with its reason
            large_vocab_rows, payload["large_vocab"] = run_section(
                args, None if args.backend == "all" else [args.backend], 2 if args.quick else REPEATS, rates,
                progress)
    if op_results:
        render_ops(op_results, console)
    if training_records:
        anchors = sorted({r.backend for r in training_records if r.backend.startswith("anchor:")})
        from softgrad.bench.training import verdicts

        decided = verdicts(training_records, chosen)
        render_training(training_records, {k: v.winner for k, v in decided.items() if not v.too_close}, anchors,
                        console)
        render_ceilings(payload.get("ceilings", {}), console, payload.get("isolated", False))
        console.print("% own ceiling: samples/s over what the step's matmuls alone allow on the row's own library "
                      "(anchors: torch's, scikit-learn's NumPy); % best ceiling: over the fastest library's on the "
                      "device", highlight=False)
        if any((r.ceiling_fraction or 0) > 1 or (r.best_ceiling_fraction or 0) > 1 for r in training_records):
            console.print("(!) above 100% of a ceiling: the ceiling was measured while the machine was busy; rerun "
                          "the bench on an idle machine", highlight=False)
        for model in dict.fromkeys(m for m, _ in sorted(decided)):
            console.print(f"[bold]recommendation[/bold] (★) for {model}: " + "; ".join(
                f"batch {batch}: {escape(v.describe())}" for (m, batch), v in sorted(decided.items()) if m == model),
                highlight=False)
    if large_vocab_rows:
        from softgrad.bench.large_vocab import render as render_large_vocab

        render_large_vocab(large_vocab_rows, console, rates)
    for name, reason in unavailable.items():
        console.print(f"[dim]{escape(name)}: unavailable: {escape(reason)}[/dim]")
    if args.json:
        from softgrad.base.files import atomic_write_text

        payload["ops"] = [dict(asdict(r), items_per_s=r.items_per_s, gb_per_s=r.gb_per_s) for r in op_results]
        from softgrad.bench.ops import sgd_floor_s

        payload["sgd_floor_s"] = {b: sgd_floor_s(op_results, b) for b in dict.fromkeys(r.backend for r in op_results)}
        payload["records"] = [asdict(r) for r in training_records]
        from softgrad.bench.training import verdicts

        payload["recommendation"] = [{"model": m, "batch_size": b, "backend": r.backend}
                                     for (m, b), r in sorted(chosen.items())]
        payload["verdicts"] = [
            {"model": m, "batch_size": b, "backend": v.winner.backend, "too_close": v.too_close, "margin": v.margin,
             "runner_up": None if v.runner_up is None else v.runner_up.backend}
            for (m, b), v in sorted(verdicts(training_records, chosen).items())]
        atomic_write_text(args.json, json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return 0


def training_cases(args) -> list[tuple[str, int, str]]:
    """(model, batch size, optimizer) of every training row the arguments ask for."""
    models = sorted(MODELS, key=lambda m: m != "mlp") if args.model == "all" else [args.model]  # the MLP first
    cases = []
    for optimizer in args.optimizer:
        sizes = (args.batch_size or BATCH_SIZES) if optimizer == "sgd" or args.batch_size else ADAM_BATCH_SIZES
        cases += [(model, size, optimizer) for model in models for size in sizes]
    return cases


def measure_ceilings(args, names: list[str], progress, data=None) -> dict[str, list[dict] | str]:
    """Each backend's matmul ceiling at every (network, batch size) the training rows use, and the ceilings
    of the libraries the anchors run on (torch, NumPy), each in a process of its own (bench.ceiling)."""
    from softgrad.bench.ceiling import measure_in_subprocess
    from softgrad.bench.contenders import widths

    if data is None:
        data = datasets.load(args.dataset, root=args.root, download=args.download)
    cases = sorted({(tuple(widths(model, data)), size) for model, size, _ in training_cases(args)})
    libraries = list(names)
    if args.anchors:  # the libraries the anchors run on: NumPy (scikit-learn), torch, torch on CUDA
        status = available_backends()
        wanted = ["numpy", "torch"] + (["torch:cuda"] if any(get_backend(n).on_gpu for n in names) else [])
        libraries += [n for n in wanted if n not in libraries and status.get(n) == "available"]
    ceilings: dict[str, list[dict] | str] = {}
    for name in libraries:
        progress(f"matmul ceiling of {name} at the networks' own shapes (in a process of its own)")
        ceilings[name] = measure_in_subprocess(name, cases, repeats=args.repeats, quick=args.quick)
    return ceilings


def contender_specs(args, names: list[str]) -> list[tuple[str, str | None]]:
    """``(kind, argument)`` of every training contender (bench.worker.make_contender): the softgrad backends,
    then the anchors that are installed (torch's autograd loop, on CUDA too beside a GPU backend; scikit-learn)."""
    specs: list[tuple[str, str | None]] = [("softgrad", name) for name in names]
    if args.anchors:
        try:  # an anchor whose library is missing or broken is left out, as a backend is
            import torch
        except Exception:  # noqa: BLE001
            torch = None
        if torch is not None:
            specs.append(("torch-autograd", "cpu"))
            if torch.cuda.is_available() and any(get_backend(n).on_gpu for n in names):
                specs.append(("torch-autograd", "cuda"))
        try:
            import sklearn.neural_network  # noqa: F401
        except Exception:  # noqa: BLE001
            pass
        else:
            specs.append(("sklearn", None))
    return specs


@contextlib.contextmanager
def contender_processes(args, names: list[str], progress):
    """A process of its own per contender (bench.worker), for the op and training benchmarks; none with
    --same-process or when neither runs. Closed on the way out, whatever happened."""
    from softgrad.bench.worker import DataSpec, start_workers

    workers = []
    if not args.same_process and (args.ops or args.training):
        specs = contender_specs(args, names) if args.training else [("softgrad", name) for name in names]
        workers = start_workers(specs, DataSpec(args.dataset, args.root, args.download), progress)
    try:
        yield workers
    finally:
        for worker in workers:
            worker.close()


def run_training(args, names: list[str], progress, matmul_rates: dict[str, float], ceilings=None, workers=(),
                 data=None):
    """Every training row, by ``workers`` (bench.worker: a process per contender, which fills ``ceilings``
    with its library's matmul ceiling as it goes) or, with none, by contenders in this process."""
    from softgrad.bench.training import add_ratios, measure_training, recommend

    if data is None:
        progress(f"loading {args.dataset}")
        data = datasets.load(args.dataset, root=args.root, download=args.download)
    if workers:
        contenders, shared = list(workers), ceilings
    else:
        from softgrad.bench.worker import make_contender

        contenders, shared = [make_contender(kind, argument) for kind, argument in contender_specs(args, names)], None
    models = sorted(MODELS, key=lambda m: m != "mlp") if args.model == "all" else [args.model]  # the MLP first
    batch_sizes = args.batch_size or BATCH_SIZES
    records = []
    for optimizer in args.optimizer:
        sizes = batch_sizes if optimizer == "sgd" or args.batch_size else ADAM_BATCH_SIZES
        records += measure_training(contenders, models, sizes, data, repeats=args.repeats, quick=args.quick,
                                    optimizer=optimizer, progress=progress, ceilings=shared)
    add_ratios(records, matmul_rates, ceilings)
    return records, recommend(records)


if __name__ == "__main__":
    sys.exit(main())
