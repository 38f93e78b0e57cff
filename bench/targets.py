"""The GPU targets, read from one ``python -m bench --json`` file: ``python -m bench.targets FILE``.

Each target is a ratio within that one run:

- the CuPy backend's MLP training throughput over the idiomatic PyTorch CUDA
  loop's (``anchor:torch-autograd:cuda``), at batch 256 and 1024: at least 1;
- the fused cross-entropy forward plus gradient on 65,536 x 1,000 float32
  logits over the device-to-device copy of the same logits: at least 60%;
- one epoch of the MLP over 60,000 MNIST-sized samples: under one second.

It prints one line per target and whether the run met it, and the same for
``torch:cuda`` beside CuPy; the exit status is 0 whatever the verdicts (a
report, not a test), 2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GPU_BACKENDS = ("cupy", "torch:cuda")
LOOP = "anchor:torch-autograd:cuda"
BANDWIDTH_SIZE = "65536 x 1000"


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def report(results: dict) -> list[str]:
    """The target lines for one bench JSON (see the module docstring)."""
    records = {(r["backend"], r["model"], r["batch_size"]): r for r in results.get("records", [])}
    ops = {(o["backend"], o["op"], o["size"], o["dtype"]): o for o in results.get("ops", [])}
    machine = results.get("machine", {})
    lines = [f"GPU targets, {machine.get('gpu') or 'no GPU'}, {machine.get('date', '?')}:"]
    for backend in GPU_BACKENDS:
        for batch in (256, 1024):
            ours, loop = records.get((backend, "mlp", batch)), records.get((LOOP, "mlp", batch))
            if ours is None or loop is None:
                lines.append(f"  {backend} MLP batch {batch} vs the PyTorch CUDA loop: not measured")
                continue
            ratio = ours["samples_per_s"] / loop["samples_per_s"]
            lines.append(f"  {backend} MLP batch {batch}: {ours['samples_per_s']:,.0f} samples/s = {ratio:.2f}x "
                         f"the PyTorch CUDA loop's {loop['samples_per_s']:,.0f} (target >= 1.00x): "
                         f"{_verdict(ratio >= 1.0)}")
        fused = ops.get((backend, "cross_entropy + grad", BANDWIDTH_SIZE, "float32"))
        copy = ops.get((backend, "device copy", BANDWIDTH_SIZE, "float32"))
        if fused is None or copy is None:
            lines.append(f"  {backend} cross_entropy + grad {BANDWIDTH_SIZE} vs device copy: not measured")
        else:
            share = fused["gb_per_s"] / copy["gb_per_s"]
            lines.append(f"  {backend} cross_entropy + grad {BANDWIDTH_SIZE} float32: {fused['gb_per_s']:,.0f} GB/s "
                         f"= {share:.0%} of the device copy's {copy['gb_per_s']:,.0f} GB/s (target >= 60%): "
                         f"{_verdict(share >= 0.6)}")
        epochs = [(batch, 60_000 / r["samples_per_s"]) for (b, model, batch), r in sorted(records.items())
                  if b == backend and model == "mlp"]
        if not epochs:
            lines.append(f"  {backend} MLP 60,000-sample epoch: not measured")
        for batch, seconds in epochs:
            lines.append(f"  {backend} MLP 60,000-sample epoch at batch {batch}: {seconds:.2f} s "
                         f"(target < 1 s): {_verdict(seconds < 1.0)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a JSON file written by python -m bench --json")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as error:
        print(f"bench.targets: cannot read {args.results}: {error}", file=sys.stderr)
        return 2
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
