"""``python -m bench.large_vocab``: a large-vocabulary head's loss and gradients, softgrad beside PyTorch.

One forward plus backward of ``cross_entropy(input @ W.T + b, target)`` (the
mean loss and the gradients of ``input``, ``W`` and ``b``; class-index
targets, float32) by

- softgrad's ``be.linear_cross_entropy_and_grad`` on each backend asked for
  (numpy, torch and jax by default; a backend that cannot run is listed with
  its reason), chunked at its default 32 MiB working-memory budget;
- ``torch.nn.functional.linear_cross_entropy`` on its reference path
  (``options=None``: the N x V logits are materialised) with autograd's
  ``.backward()``;
- the same on PyTorch's chunked path,
  ``options=LinearCrossEntropyOptions(batch_chunk_size=512)``.

Every (contender, shape) runs in a fresh subprocess, so that its memory
figure sees every allocation and nothing another contender left behind. The
child first runs one call at a small shape (1,024 tokens and classes at
most), so that what a first call imports or starts lazily (torch's chunked
path imports some 900 modules, ~160 MiB) is not counted; then it builds its
inputs, reads its resident set size (RSS), resets the kernel's high-water
mark (``/proc/self/clear_refs``), runs one forward plus backward, and
reports the high-water mark minus that baseline ("peak extra": the first
call at this shape, allocator growth and JAX's compilation for it
included); then it resets the mark again and times further calls, the first
of which gives the "later call" figure (against the same baseline, so what
the first call left allocated counts too). The numpy backend also reports
tracemalloc's peak of the first call (NumPy's own allocations only). The
gradients count as extra memory for every contender (``d W`` is as large as
``W``).

Time: wall-clock seconds per call (the device is synchronised and the loss
read back), the median of up to ``--repeats`` calls after the first; a
contender gets only as many as fit ``--budget`` seconds at its first call's
pace, and where even one does not, the first call is the time (marked
"cold"). The FLOP rate counts the three matmuls of each chunk (``6 N V d``
flops per forward plus backward) and is read against the machine's matmul
rate (``bench.roofline``). The torch reference path is skipped where its
``3 N V`` floats of logits (the logits, their log-softmax, their gradient)
would pass the memory cap (60% of the memory available at the start, or
``--memory-cap``).

``--device cuda``: the softgrad backends are the GPU ones (``torch:cuda``,
``cupy``, ``jax:gpu``; one that cannot run is listed with its reason), torch's
two paths run on CUDA tensors, each call is synchronised, and the roofline is
the GPU's matmul rate. Peak extra memory is then the device allocator's: for
torch's paths and ``torch:cuda``, ``torch.cuda.max_memory_allocated()`` after
``reset_peak_memory_stats()``, minus ``memory_allocated()`` once the inputs
exist; for the other backends, ``be.peak_memory(call)`` as the backend reports
it (CuPy: its pool's bytes, inputs included; None where the backend keeps no
count). The table's notes say which method each row used, and the memory
ratio is only taken between rows measured the same way. The memory cap on
the dense path is then 60% of the GPU's free memory.

The parts: :mod:`bench.large_vocab_row` (a row, the shared settings),
:mod:`bench.large_vocab_child` (the measuring child),
:mod:`bench.large_vocab_runs` (the parent: contenders, subprocesses, ratios),
:mod:`bench.large_vocab_table` (the table); this module is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from softgrad.bench.large_vocab_child import measure_child
from softgrad.bench.large_vocab_row import RESULT_MARK, LargeVocabRow
from softgrad.bench.large_vocab_runs import (
    BUDGET_S,
    DEFAULT_BACKENDS,
    GPU_BACKENDS,
    MEMORY_SHARE,
    REPEATS,
    add_ratios,
    cuda_missing,
    dense_bytes,
    measure,
    memory_cap,
    payload_for,
)
from softgrad.bench.large_vocab_table import render

TOKENS, HIDDEN, VOCABS = 4096, 512, [32_768, 131_072]
QUICK_TOKENS, QUICK_HIDDEN, QUICK_VOCABS = 512, 64, [4096, 16_384]
DEVICES = ("cpu", "cuda")


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``python -m bench --large-vocab`` shares with ``python -m bench.large_vocab``."""
    group = parser.add_argument_group("large vocabulary")
    group.add_argument("--tokens", type=int, default=None, metavar="N",
                       help=f"tokens (rows of the input) (default: {TOKENS:,}; quick: {QUICK_TOKENS})")
    group.add_argument("--hidden", type=int, default=None, metavar="D",
                       help=f"hidden size d (default: {HIDDEN}; quick: {QUICK_HIDDEN})")
    group.add_argument("--vocab", type=int, nargs="+", default=None, metavar="V",
                       help=f"vocabulary sizes, one table each (default: {' '.join(map(str, VOCABS))}; quick: "
                       f"{' '.join(map(str, QUICK_VOCABS))})")
    group.add_argument("--memory-cap", type=float, default=None, metavar="GIB",
                       help=f"GiB the torch reference path's logits may take before it is skipped (default: "
                       f"{MEMORY_SHARE * 100:.0f}%% of the memory available)")
    group.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                       help=f"seconds of timed calls per contender and shape after the first call (default: "
                       f"{BUDGET_S:g}; quick: no limit)")
    group.add_argument("--no-dense", dest="dense", action="store_false",
                       help="leave out the torch reference path (options=None)")


def check_shape_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("tokens", "hidden"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.vocab is not None and min(args.vocab) < 1:
        parser.error("--vocab must be at least 1")
    if args.memory_cap is not None and args.memory_cap <= 0:
        parser.error("--memory-cap must be positive")
    if args.budget is not None and args.budget < 0:
        parser.error("--budget must be at least 0")


def run_section(args: argparse.Namespace, backends: list[str] | None, repeats: int, matmul_gflops: dict,
                progress) -> tuple[list[LargeVocabRow], dict]:
    """Measure the table for parsed arguments (both command lines); the rows and their JSON."""
    quick = getattr(args, "quick", False)
    tokens = args.tokens or (QUICK_TOKENS if quick else TOKENS)
    hidden = args.hidden or (QUICK_HIDDEN if quick else HIDDEN)
    vocabs = args.vocab or (QUICK_VOCABS if quick else VOCABS)
    budget = args.budget if args.budget is not None else (None if quick else BUDGET_S)
    device = getattr(args, "device", "cpu")  # python -m bench --large-vocab: the CPU
    cap, source = memory_cap(args.memory_cap, device)
    rows = measure(tokens, hidden, vocabs, backends, repeats=repeats, budget_s=budget, cap_bytes=cap,
                   cap_source=source, dense=args.dense, progress=progress, device=device)
    add_ratios(rows, matmul_gflops)
    payload = payload_for(rows, cap, source)
    payload["device"] = device
    return rows, payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.large_vocab",
        description="Forward+backward of a large-vocabulary linear cross-entropy: softgrad's "
        "linear_cross_entropy_and_grad per backend beside torch.nn.functional.linear_cross_entropy (dense and "
        "chunked). Time and peak extra memory (RSS, each contender in its own process).")
    parser.add_argument("--backend", nargs="+", default=None, metavar="NAME",
                        help=f"softgrad backends (default: {' '.join(DEFAULT_BACKENDS)}, those that run here; "
                        f"with --device cuda: {' '.join(GPU_BACKENDS)})")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where every contender runs: cpu (peak extra host RSS) or cuda (the GPU backends and "
                        "torch on CUDA tensors; the device allocator's peak) (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small shapes (N {QUICK_TOKENS}, d {QUICK_HIDDEN}, V "
                        f"{' '.join(map(str, QUICK_VOCABS))}): seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls after the first (default: {REPEATS}; quick: 2)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    add_shape_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else REPEATS
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    check_shape_arguments(parser, args)
    return args


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(RESULT_MARK + json.dumps(measure_child(json.loads(args.child))), flush=True)
        return 0
    if args.device == "cuda":
        missing = cuda_missing()
        if missing is not None:
            print(f"bench.large_vocab: --device cuda: {missing}", file=sys.stderr)
            return 2
    from rich.console import Console
    from softgrad.bench.roofline import matmul_gflops
    from softgrad.numerics.machine import machine_header

    try:
        if args.json:
            from softgrad.numerics.files import writable_target

            writable_target(args.json)  # before minutes of measuring, not after
    except OSError as error:
        print(f"bench.large_vocab: {error}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 170)
    header = machine_header()
    console.print(f"[bold]softgrad bench: large vocabulary[/bold] on {header['cpu']} ({header['cpu_count']} CPUs); "
                  + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if k in ("numpy", "torch", "jax"))
                  + (f"; device: {_cuda_name()}" if args.device == "cuda" else ""))
    started = time.perf_counter()
    with console.status("measuring...") as status:
        status.update("matmul roofline")
        rates = matmul_gflops(1024 if args.quick else 2048)
        console.print("matmul roofline (float32): " + ", ".join(f"{k} {v:,.1f} GFLOP/s" for k, v in rates.items()))
        rows, section = run_section(args, args.backend, args.repeats, rates, status.update)
    render(rows, console, rates)
    console.print(f"measured in {time.perf_counter() - started:,.0f} s", highlight=False)
    if args.json:
        from softgrad.numerics.files import atomic_write_text

        try:
            atomic_write_text(args.json, json.dumps({"machine": header, "matmul_gflops": rates,
                                                     "large_vocab": section}, indent=2))
        except OSError as error:
            print(f"bench.large_vocab: {error}", file=sys.stderr)
            return 2
        console.print(f"wrote {args.json}")
    return 0



# what python -m bench --large-vocab and the tests import from here
__all__ = ["REPEATS", "LargeVocabRow", "add_shape_arguments", "check_shape_arguments", "dense_bytes", "main",
           "measure", "parse_args", "render", "run_section"]


if __name__ == "__main__":
    sys.exit(main())
