"""``python -m bench.tutorials``: the tutorials' runs (issue 25), softgrad beside torch autograd, same data.

Three runs (:mod:`softgrad.bench.tutorial_recipes`): LeNet on the shipped MNIST subset, PyTorch's CIFAR-10
tutorial network on ``cifar10-jpeg`` and d2l's softmax regression on ``fashion-mnist-approx``. Each run has
two sides, ``torch`` (the autograd reference) and ``softgrad`` (``softgrad.fit`` on the numpy backend), on
the same arrays, initial weights, batch order and hyperparameters. They take minutes each, so each side is
its own command, which writes its part (``<run>-<side>.json``) into the ``--parts`` folder:

    python -m bench.tutorials run --run lenet --side torch --root ../shared/data
    python -m bench.tutorials run --run all --side both --root ../shared/data     # everything, in turn

and ``report`` gathers the parts found into ``--out``.md, .json and .png (the curves, like d2l's Animator:
softgrad solid, torch dashed):

    python -m bench.tutorials report --out bench/results/tutorials-2026-12-02

Outputs are written atomically and never over an existing file without ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from softgrad.bench.tutorial_recipes import RECIPES, Recipe
from softgrad.commands.cli import OneLineErrorParser, run_main
from softgrad.numerics.files import atomic_write_text, check_writable

SIDES = ("torch", "softgrad")
DEFAULT_PARTS = Path("bench/results/tutorials-parts")


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="python -m bench.tutorials",
                                description="The tutorials' runs, softgrad (numpy) beside torch autograd.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one run's side(s), writing <parts>/<run>-<side>.json")
    run.add_argument("--run", choices=[*RECIPES, "all"], required=True)
    run.add_argument("--side", choices=[*SIDES, "both"], default="both")
    run.add_argument("--root", default="../shared/data", help="the folder holding cifar10-jpeg/ and "
                     "fashion-mnist-approx/ (default ../shared/data)")
    run.add_argument("--parts", type=Path, default=DEFAULT_PARTS, help=f"where the parts go (default {DEFAULT_PARTS})")
    run.add_argument("--epochs", type=int, help="fewer epochs than the recipe's (a quick check; the report "
                     "says so)")
    run.add_argument("--seed", type=int, help="another seed than the recipe's 0, for both the initial weights and "
                     "the batch order (a second sample of a run's float32 spread)")
    run.add_argument("--train-rows", type=int, help="the first N training rows only (a quick check)")
    run.add_argument("--threads", type=int, help="threads for torch and NumPy's BLAS alike (default: the "
                     "libraries' own); on a machine shared with other work, 1 avoids the threads' waits for "
                     "each other")
    run.add_argument("--overwrite", action="store_true", help="replace existing parts")
    report = sub.add_parser("report", help="gather the parts into OUT.md, OUT.json and OUT.png")
    report.add_argument("--parts", type=Path, default=DEFAULT_PARTS)
    report.add_argument("--out", type=Path, default=Path(f"bench/results/tutorials-{date.today().isoformat()}"))
    report.add_argument("--overwrite", action="store_true", help="replace existing OUT.* files")
    report.add_argument("--note", action="append", default=[], help="a line for the report's 'How these were "
                        "run' (how the parts were scheduled, say); repeatable")
    return parser


def _load_data(recipe: Recipe, root: Path, train_rows: int | None):
    from dataclasses import replace

    from softgrad.bench import tutorial_data

    loader = {"mnist": lambda: tutorial_data.mnist_subset(),
              "cifar10-jpeg": lambda: tutorial_data.cifar10_jpeg(root),
              "fashion-mnist-approx": lambda: tutorial_data.fashion_mnist_approx(root)}[recipe.dataset]
    data = loader()
    if train_rows:
        data = replace(data, x_train=data.x_train[:train_rows], y_train=data.y_train[:train_rows])
    return data


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPUs, load, the BLAS threadpoolctl sees."""
    from threadpoolctl import threadpool_info

    blas = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} x{p.get('num_threads')}"
            for p in threadpool_info() if p.get("user_api") == "blas"]
    return {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0], "python": platform.python_version(),
            "blas": blas, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def _limited_threads(threads: int | None):
    """torch's and the BLAS's threads held to ``threads`` (None: as they are)."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return threadpool_limits(threads)


def _part(recipe: Recipe, side: str, data, log, threads: int | None = None) -> dict[str, Any]:
    with _limited_threads(threads):
        return _train_part(recipe, side, data, log) | {"threads_asked": threads}


def _train_part(recipe: Recipe, side: str, data, log) -> dict[str, Any]:
    started = time.perf_counter()
    if side == "torch":
        from softgrad.bench.tutorial_torch import run_torch

        result = run_torch(recipe, data, log=log)
    else:
        from softgrad.bench.tutorial_softgrad import run_softgrad

        result = run_softgrad(recipe, data, log=log)
    return {"run": recipe.name, "side": side, "recipe": recipe.__dict__, "data": data.label,
            "train_rows": len(data.y_train), "test_rows": len(data.y_test), "classes": list(data.classes),
            "wall_s": time.perf_counter() - started, "machine": machine(), **result}


def run_command(args) -> int:
    from dataclasses import replace

    names = list(RECIPES) if args.run == "all" else [args.run]
    sides = list(SIDES) if args.side == "both" else [args.side]
    targets = [(name, side, args.parts / f"{name}-{side}.json") for name in names for side in sides]
    for *_, path in targets:  # every output checked before minutes of training
        check_writable(path, "--parts")
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists: pass --overwrite to replace it")
    for name, side, path in targets:
        recipe = RECIPES[name] if args.epochs is None else replace(RECIPES[name], epochs=args.epochs)
        recipe = recipe if args.seed is None else replace(recipe, seed=args.seed)
        data = _load_data(recipe, Path(args.root), args.train_rows)
        part = _part(recipe, side, data, log=lambda line: print(line, flush=True), threads=args.threads)
        atomic_write_text(path, json.dumps(part, indent=1) + "\n")
        print(f"wrote {path}", flush=True)
    return 0


def report_command(args) -> int:
    from softgrad.bench.tutorial_report import write_report

    parts = [json.loads(p.read_text()) for p in sorted(args.parts.glob("*.json"))]
    if not parts:
        raise FileNotFoundError(f"no parts in {args.parts}: run `python -m bench.tutorials run` first")
    outputs = [args.out.with_suffix(s) for s in (".md", ".json", ".png")]
    for path in outputs:
        check_writable(path, "--out")
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists: pass --overwrite to replace it")
    write_report(parts, args.out, args.note)
    print("wrote " + ", ".join(map(str, outputs)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seed", None) is not None and args.seed < 0:
        build_parser().error("--seed must be at least 0")
    for flag in ("epochs", "train_rows", "threads"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            build_parser().error(f"--{flag.replace('_', '-')} must be at least 1")
    return run_command(args) if args.command == "run" else report_command(args)


if __name__ == "__main__":
    sys.exit(run_main("python -m bench.tutorials", main))
