"""What a bench run measures, and with what: the backends, the training cases (network, batch size, optimizer),
the contenders and the processes they run in, and the training rows themselves (``bench.training`` times them)."""

from __future__ import annotations

import contextlib
import signal

from softgrad import datasets
from softgrad.backends import available_backends, get_backend
from softgrad.training.models import MODELS

BATCH_SIZES = [64, 256, 1024]  # --full's
DEFAULT_BATCH_SIZES = [64, 256]  # the default sweep's
ADAM_BATCH_SIZES = [256]  # one size: Adam's rows compare the optimizer step, the SGD rows cover the sizes


def default_batch_sizes(args) -> list[int]:
    return BATCH_SIZES if args.full else DEFAULT_BATCH_SIZES


def choose_backends(requested: str) -> tuple[list[str], dict[str, str]]:
    """The backends to measure and, for the table's foot, those that cannot run here."""
    if requested == "all":
        status = available_backends()
        return ([n for n, s in status.items() if s == "available"],
                {n: s for n, s in status.items() if s != "available"})
    get_backend(requested)  # raises BackendUnavailableError with the reason
    return [requested], {}


def chosen_models(args) -> list[str]:
    """The networks the arguments ask for, the MLP first."""
    return sorted(MODELS, key=lambda m: m != "mlp") if args.model == "all" else [args.model]


def batch_sizes(args, optimizer: str) -> list[int]:
    """The batch sizes ``optimizer`` trains at: those given, else the sweep's (Adam: one size)."""
    return (args.batch_size or default_batch_sizes(args)) if optimizer == "sgd" or args.batch_size \
        else ADAM_BATCH_SIZES


def training_cases(args) -> list[tuple[str, int, str]]:
    """(model, batch size, optimizer) of every training row the arguments ask for."""
    return [(model, size, optimizer) for optimizer in args.optimizer for model in chosen_models(args)
            for size in batch_sizes(args, optimizer)]


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
    if getattr(args, "sklearn", True):
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
        with sigint_ignored():  # a second Ctrl-C while they close leaves none behind
            for worker in workers:
                worker.close()


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored inside (in the main thread; elsewhere nothing changes), restored after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_training(args, names: list[str], progress, *, ceilings=None, workers=(), data=None, on_case=None,
                 on_record=None) -> list:
    """Every training row, by ``workers`` (bench.worker: a process per contender, which fills ``ceilings``
    with its library's matmul ceiling as it goes) or, with none, by contenders in this process. The ratios
    and the verdicts are the report's, taken once over every row measured."""
    from softgrad.bench.training import measure_training

    if data is None:
        progress(f"loading {args.dataset}")
        data = datasets.load(args.dataset, root=args.root, download=args.download)
    if workers:
        contenders, shared = list(workers), ceilings
    else:
        from softgrad.bench.worker import make_contender

        contenders, shared = [make_contender(kind, argument) for kind, argument in contender_specs(args, names)], None
    records = []
    for optimizer in args.optimizer:
        records += measure_training(contenders, chosen_models(args), batch_sizes(args, optimizer), data, repeats=args.repeats, quick=args.quick,
                                    optimizer=optimizer, progress=progress, ceilings=shared,
                                    block_samples=getattr(args, "block_samples", None), on_case=on_case,
                                    on_record=on_record, block_seconds=getattr(args, "block_seconds", None),
                                    accuracy_samples=getattr(args, "accuracy_samples", None))
    return records
