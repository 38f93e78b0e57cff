"""Training throughput: every contender, interleaved repeats, medians, ratios within one run."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from softgrad.bench.contenders import MODELS, widths


@dataclass
class TrainingRecord:
    backend: str
    model: str
    batch_size: int
    samples_per_s: float  # median over the repeats
    spread: float  # (max - min) / median of the repeats' samples/s
    flops_per_sample: float
    accuracy: float | None = None  # test accuracy after one epoch
    on_gpu: bool = False  # read against the GPU's own matmul rate
    peak_memory_bytes: int | None = None
    ratios: dict[str, float] = field(default_factory=dict)  # samples/s over each anchor's
    roofline_fraction: float | None = None  # achieved FLOP/s over the machine's 2048^2 matmul rate
    # the step's own matmuls alone (bench.ceiling), in samples/s: of the library this row runs on, and
    # the best of any library on its device; and this row's samples/s over each
    ceiling_samples_per_s: float | None = None
    best_ceiling_samples_per_s: float | None = None
    ceiling_fraction: float | None = None
    best_ceiling_fraction: float | None = None
    optimizer: str = "sgd"  # "sgd" (the recommendation's rows) or "adam"
    warmup_s: float | None = None  # the first two steps: compilation (JAX's XLA) and first-call allocations
    widths: list[int] | None = None  # the network's widths, input first

    @property
    def case(self) -> tuple[str, int, str]:
        """What a ratio compares within: the same network, batch size and optimizer."""
        return self.model, self.batch_size, self.optimizer


# seconds between two contenders' blocks (see measure_training)
PAUSE_S = float(os.environ.get("SOFTGRAD_BENCH_PAUSE", "0.2"))


def training_flops_per_sample(layer_widths: list[int]) -> float:
    """Multiply-adds of one training step per sample, as FLOPs: forward x W (2 per weight),
    dW = x^T dy (2 per weight), dx = dy W^T (2 per weight, not for the first layer)."""
    weights = [a * b for a, b in zip(layer_widths, layer_widths[1:])]
    return 4.0 * sum(weights) + 2.0 * sum(weights[1:])


def steps_per_block(batch_size: int, quick: bool, samples: int | None = None) -> int:
    # enough samples per block that one block takes well over a millisecond on any device
    if samples is None:
        samples = 4096 if quick else 16384
    return max(4, samples // batch_size)


def measure_training(contenders: list, models: list[str], batch_sizes: list[int], data, *, repeats: int,
                     quick: bool, with_accuracy: bool = True, optimizer: str = "sgd",
                     progress: Callable[[str], None] = lambda _: None,
                     ceilings: dict[str, list[dict] | str] | None = None, block_samples: int | None = None,
                     on_case: Callable[[str, int, str], None] | None = None,
                     on_record: Callable[[TrainingRecord], None] | None = None,
                     block_seconds: float | None = None,
                     accuracy_samples: int | None = None) -> list[TrainingRecord]:
    """Every contender's training throughput in every (model, batch size), blocks interleaved.

    ``block_samples``: samples per timed block (default 16,384; 4,096 with ``quick``). ``on_case(model, batch
    size, optimizer)`` is called as a case starts and ``on_record(record)`` as each row is complete, so a
    caller can print them as they are measured (and keep them if the run is interrupted).
    ``block_seconds``: each contender's block is as many steps as take about that long (timed on 4 steps
    after the warm-up; at least 4, at most ``block_samples``' worth), so a slow contender or a busy machine
    does not stretch the run. ``accuracy_samples``: the accuracy epoch on that many training rows only
    (:func:`bench.contenders.accuracy_subset`).

    With ``ceilings`` (a dict, filled in place): contenders that run in a process of their own
    (:class:`bench.worker.IsolatedContender`) also time their library's matmul ceiling
    (:mod:`bench.ceiling`) after each repeat's training blocks, one process per library, so a row and its
    ceiling are measured in the same minutes by the same process.
    """
    records = []
    ceiling_of = _ceiling_processes(contenders) if ceilings is not None else {}
    failed: set[tuple[str, tuple[int, ...], int]] = set()  # (library, widths, batch size) whose ceiling failed
    for model in models:
        model_widths = widths(model, data)
        for batch_size in batch_sizes:
            if batch_size > len(data.y_train):
                continue
            shape = _Shape(model, model_widths, batch_size, optimizer)
            if on_case is not None:
                on_case(model, batch_size, optimizer)
            cases, warmups = _prepare(contenders, shape, data, progress)
            steps_of = _block_steps(cases, shape, steps_per_block(batch_size, quick, block_samples), block_seconds,
                                    progress)
            rates: dict[str, list[float]] = {name: [] for name in cases}
            for repeat in range(repeats):  # interleaved, so drift in the machine hits everyone alike
                for name, case in cases.items():
                    progress(f"{model} batch {batch_size}: {name} (repeat {repeat + 1}/{repeats})")
                    # Let the previous contender's worker threads go idle: OpenBLAS and OpenMP threads
                    # spin for a while after their last task and would steal cores from this block.
                    time.sleep(PAUSE_S)
                    rates[name].append(steps_of[name] * batch_size / case.timed(steps_of[name]))
                _time_ceilings(ceiling_of, shape, f"repeat {repeat + 1}/{repeats}", quick=quick, ceilings=ceilings,
                               failed=failed, progress=progress)
            for contender in contenders:
                case = cases[contender.name]
                record = _record(contender, shape, rates[contender.name], case.peak_memory(), warmups[contender.name])
                if with_accuracy:
                    progress(f"{model} batch {batch_size}: {contender.name}: one epoch for the accuracy")
                    record.accuracy = _accuracy(contender, shape, data, accuracy_samples)
                if case.release is not None:
                    case.release()
                records.append(record)
                if on_record is not None:
                    on_record(record)
    return records


def _ceiling_processes(contenders: list) -> dict[str, object]:
    """Library -> the first contender in a process of its own that runs on it, which times its ceiling."""
    ceiling_of: dict[str, object] = {}
    for contender in contenders:
        if hasattr(contender, "ceiling"):
            ceiling_of.setdefault(contender.library, contender)
    return ceiling_of


@dataclass(frozen=True)
class _Shape:
    """One training case: the network, its widths, the batch size and the optimizer."""

    model: str
    widths: list[int]
    batch_size: int
    optimizer: str


def _prepare(contenders: list, shape: _Shape, data, progress: Callable[[str], None]) -> tuple[dict, dict]:
    """Each contender's prepared case and the seconds of its first two steps (its warm-up: compilation,
    first-call allocations, kernel selection)."""
    cases, warmups = {}, {}
    for contender in contenders:
        progress(f"{shape.model} batch {shape.batch_size} {shape.optimizer}: preparing {contender.name}")
        case = contender.prepare(shape.model, shape.batch_size, data, shape.optimizer)
        warmups[contender.name] = case.timed(2)
        cases[contender.name] = case
    return cases, warmups


def _block_steps(cases: dict, shape: _Shape, steps: int, block_seconds: float | None,
                 progress: Callable[[str], None]) -> dict[str, int]:
    """Steps per timed block for each contender: ``steps``, or with ``block_seconds`` as many as take about
    that long at its pace over 4 steps (at least 4, at most ``steps``)."""
    steps_of = {name: steps for name in cases}
    if block_seconds:
        for name, case in cases.items():
            progress(f"{shape.model} batch {shape.batch_size}: sizing {name}'s blocks")
            step_s = max(case.timed(4) / 4, 1e-9)
            steps_of[name] = int(min(steps, max(4, round(block_seconds / step_s))))
    return steps_of


def _time_ceilings(ceiling_of: dict[str, object], shape: _Shape, repeat: str, *, quick: bool, ceilings: dict,
                   failed: set, progress: Callable[[str], None]) -> None:
    """One block of each library's matmul ceiling at ``shape``, timed in its contender's process, into
    ``ceilings``; a failure is recorded (in ``ceilings`` and ``failed``) for this case only."""
    for library, contender in ceiling_of.items():
        if (library, tuple(shape.widths), shape.batch_size) in failed:
            continue  # it failed in an earlier repeat: its reason stands
        progress(f"{shape.model} batch {shape.batch_size}: matmul ceiling of {library} in {contender.name}'s "
                 f"process ({repeat})")
        time.sleep(PAUSE_S)
        try:
            block = contender.ceiling(shape.widths, shape.batch_size, 0.03 if quick else 0.1)
        except RuntimeError as error:  # this case only: the library's other ceilings stand
            failed.add((library, tuple(shape.widths), shape.batch_size))
            add_ceiling_failure(ceilings, library, shape.widths, shape.batch_size, str(error))
            continue
        add_ceiling_block(ceilings, library, block)


def _record(contender, shape: _Shape, rates: list[float], peak_memory: int | None,
            warmup_s: float) -> TrainingRecord:
    """The row of ``contender`` at ``shape``: the median of its repeats' samples/s and their spread."""
    median = statistics.median(rates)
    record = TrainingRecord(contender.name, shape.model, shape.batch_size, median, (max(rates) - min(rates)) / median,
                            training_flops_per_sample(shape.widths), optimizer=shape.optimizer, widths=shape.widths)
    record.peak_memory_bytes = peak_memory
    record.warmup_s = warmup_s
    record.on_gpu = bool(getattr(contender, "on_gpu", False))
    return record


def _accuracy(contender, shape: _Shape, data, accuracy_samples: int | None) -> float | None:
    """The test accuracy after one epoch, on ``accuracy_samples`` training rows where given."""
    if not accuracy_samples:
        return contender.accuracy(shape.model, shape.batch_size, data, shape.optimizer)
    if hasattr(contender, "ceiling"):  # in a process of its own, which holds the data
        return contender.accuracy(shape.model, shape.batch_size, None, shape.optimizer, samples=accuracy_samples)
    from softgrad.bench.contenders import accuracy_subset

    return contender.accuracy(shape.model, shape.batch_size, accuracy_subset(data, accuracy_samples),
                              shape.optimizer)


def add_ceiling_failure(ceilings: dict[str, list[dict] | str], library: str, widths: list[int], batch_size: int,
                        reason: str) -> None:
    """Why one (widths, batch size) of ``library`` has no ceiling: an entry with ``error`` and no rate."""
    entries = ceilings.setdefault(library, [])
    if isinstance(entries, list):
        entries.append({"backend": library, "widths": list(widths), "batch_size": batch_size,
                        "error": f"the ceiling of {library} could not be measured: {reason}"})


def add_ceiling_block(ceilings: dict[str, list[dict] | str], library: str, block: dict) -> None:
    """One timed block of :func:`bench.ceiling.measure` (``repeats=1``) into ``ceilings[library]``: the
    entry for its (widths, batch size) keeps every block's seconds per step and reports their median."""
    from softgrad.bench.ceiling import product_flops

    entries = ceilings.setdefault(library, [])
    if isinstance(entries, str):
        return
    entry = next((e for e in entries if e["widths"] == list(block["widths"])
                  and e["batch_size"] == block["batch_size"] and "error" not in e), None)
    if entry is None:
        entry = {"backend": library, "widths": list(block["widths"]), "batch_size": block["batch_size"],
                 "products": block["products"], "on_gpu": bool(block.get("on_gpu")), "blocks_s": []}
        entries.append(entry)
    entry["blocks_s"].append(block["seconds_per_step"])
    median = statistics.median(entry["blocks_s"])
    entry.update(seconds_per_step=median, best_seconds_per_step=min(entry["blocks_s"]),
                 samples_per_s=entry["batch_size"] / median,
                 gflops=product_flops(entry["widths"], entry["batch_size"]) / median / 1e9)


def ceiling_library(backend: str) -> str:
    """The backend whose ceiling a row is read against: its own, or for an anchor the library it runs on."""
    from softgrad.bench.ceiling import ANCHOR_LIBRARY

    return ANCHOR_LIBRARY.get(backend, backend)


def add_ratios(records: list[TrainingRecord], matmul_gflops: dict[str, float],
               ceilings: dict[str, list[dict]] | None = None) -> None:
    """Each record's samples/s over every anchor's in the same case, over its device's matmul rate, and
    over the step's matmul ceiling (``bench.ceiling``): its own library's and the best on its device."""
    from softgrad.bench.roofline import roofline_for

    by_case: dict[tuple[str, tuple[int, ...], int], float] = {}
    on_gpu: dict[str, bool] = {}
    for backend, cases in (ceilings or {}).items():
        if isinstance(cases, list):
            for case in cases:
                if "samples_per_s" not in case:
                    continue  # this case's ceiling failed: its entry says why
                by_case[(backend, tuple(case["widths"]), case["batch_size"])] = case["samples_per_s"]
                on_gpu[backend] = bool(case.get("on_gpu", _on_gpu_name(backend)))

    for record in records:
        for other in records:
            if other.backend.startswith("anchor:") and other.case == record.case:
                record.ratios[other.backend] = record.samples_per_s / other.samples_per_s
        peak = roofline_for(record.on_gpu, matmul_gflops)
        if peak:
            record.roofline_fraction = record.samples_per_s * record.flops_per_sample / (peak * 1e9)
        if record.widths:
            key = (tuple(record.widths), record.batch_size)
            own = by_case.get((ceiling_library(record.backend), *key))
            same_device = [rate for (backend, *case), rate in by_case.items()
                           if tuple(case) == key and on_gpu[backend] == record.on_gpu]
            if own:
                record.ceiling_samples_per_s = own
                record.ceiling_fraction = record.samples_per_s / own
            if same_device:
                record.best_ceiling_samples_per_s = max(same_device)
                record.best_ceiling_fraction = record.samples_per_s / max(same_device)


def _on_gpu_name(backend: str) -> bool:
    """For a ceiling recorded without its device (older JSON): softgrad's own GPU backends by name."""
    return backend in ("cupy", "torch:cuda", "jax:gpu") or backend.endswith(":cuda")


def recommend(records: list[TrainingRecord], tolerance: float = 0.02) -> dict[tuple[str, int], TrainingRecord]:
    """For each (model, batch size): the fastest softgrad backend whose accuracy is within
    ``tolerance`` of the best softgrad accuracy in that case (a fast wrong backend is never chosen).
    Read from the SGD rows (fit's default optimizer); the Adam rows are there for their ratios."""
    chosen = {}
    records = [r for r in records if r.optimizer == "sgd"]
    for key in {(r.model, r.batch_size) for r in records}:
        ours = [r for r in records if (r.model, r.batch_size) == key and not r.backend.startswith("anchor:")]
        if not ours:
            continue
        best_accuracy = max((r.accuracy for r in ours if r.accuracy is not None), default=None)
        fair = [r for r in ours if best_accuracy is None or (r.accuracy or 0.0) >= best_accuracy - tolerance]
        chosen[key] = max(fair, key=lambda r: r.samples_per_s)
    return chosen


@dataclass(frozen=True)
class Verdict:
    """The recommendation for one (model, batch size): the winner, its margin over the runner-up, and
    whether the repeats' spread covers that margin (then it is too close to call)."""

    winner: TrainingRecord
    runner_up: TrainingRecord | None
    margin: float | None  # winner's samples/s over the runner-up's, minus 1
    too_close: bool

    def describe(self) -> str:
        w = self.winner
        if self.runner_up is None:
            return f"{w.backend} ({w.samples_per_s:,.0f} samples/s; the only one measured)"
        r = self.runner_up
        if self.too_close:
            return (f"too close to call: {w.backend} {w.samples_per_s:,.0f} and {r.backend} {r.samples_per_s:,.0f} "
                    f"samples/s are {self.margin:.0%} apart, within the repeats' spread "
                    f"(+-{w.spread * 50:.0f}%, +-{r.spread * 50:.0f}%)")
        return f"{w.backend}, {self.margin:+.0%} over {r.backend} ({w.samples_per_s:,.0f} against {r.samples_per_s:,.0f} samples/s)"


def verdicts(records: list[TrainingRecord], chosen: dict[tuple[str, int], TrainingRecord]) -> dict:
    """A :class:`Verdict` for each case :func:`recommend` chose in."""
    out = {}
    for key, winner in chosen.items():
        others = [r for r in records if r.case == winner.case and not r.backend.startswith("anchor:")
                  and r is not winner]
        runner = max(others, key=lambda r: r.samples_per_s, default=None)
        if runner is None:
            out[key] = Verdict(winner, None, None, False)
            continue
        margin = winner.samples_per_s / runner.samples_per_s - 1.0
        # the spread is (max - min) / median: the ranges of the repeats, roughly median +- spread / 2
        too_close = winner.samples_per_s * (1 - winner.spread / 2) <= runner.samples_per_s * (1 + runner.spread / 2)
        out[key] = Verdict(winner, runner, margin, too_close)
    return out


__all__ = ["MODELS", "TrainingRecord", "Verdict", "add_ceiling_block", "add_ceiling_failure", "add_ratios", "measure_training", "recommend",
           "verdicts"]
