"""The tutorial runs' report: markdown and JSON of every part, and one PNG of the curves like d2l's Animator.

Each run's table puts softgrad (numpy) beside torch autograd epoch by epoch; the CIFAR-10 run adds the
per-class table and the tutorial's published 61%. Data with altered pixels is named by its folder
(``cifar10-jpeg``, ``fashion-mnist-approx``), never as the official test set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from softgrad.bench.tutorial_recipes import RECIPES

SIDE_LABEL = {"softgrad": "softgrad (numpy)", "torch": "torch autograd"}
ALTERED = {"cifar10-jpeg": "JPEG-recompressed CIFAR-10 (not the official pixels)",
           "fashion-mnist-approx": "Fashion-MNIST reconstructed to within 2 grey levels (not the official pixels)"}


def by_run(parts: list[dict]) -> dict[str, dict[str, dict]]:
    """``{run: {side: part}}`` in the recipes' order."""
    out: dict[str, dict[str, dict]] = {}
    for part in parts:
        out.setdefault(part["run"], {})[part["side"]] = part
    return {name: out[name] for name in RECIPES if name in out}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _epoch_table(sides: dict[str, dict]) -> list[str]:
    names = [s for s in ("softgrad", "torch") if s in sides]
    head = ["epoch"] + [f"{SIDE_LABEL[s]} {what}" for s in names for what in ("loss", "train acc", "test acc", "s")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    epochs = max(len(sides[s]["history"]) for s in names)
    for e in range(epochs):
        cells = [str(e + 1)]
        for s in names:
            h = sides[s]["history"]
            r = h[e] if e < len(h) else {}
            cells += [f"{r['train_loss']:.4f}" if r else "-", _pct(r.get("train_accuracy")),
                      _pct(r.get("test_accuracy")), f"{r['seconds']:.1f}" if r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _per_class_table(sides: dict[str, dict]) -> list[str]:
    names = [s for s in ("softgrad", "torch") if s in sides]
    classes = sides[names[0]]["classes"]
    lines = ["| class | " + " | ".join(SIDE_LABEL[s] for s in names) + " |", "|---|" + "---|" * len(names)]
    for k, name in enumerate(classes):
        lines.append(f"| {name} | " + " | ".join(_pct(sides[s]["per_class"][k]) for s in names) + " |")
    return lines


def run_section(name: str, sides: dict[str, dict]) -> list[str]:
    """The markdown of one run: the recipe, the final figures side by side, the epochs, per-class for CIFAR."""
    recipe, any_part = RECIPES[name], next(iter(sides.values()))
    data = any_part["data"]
    lines = [f"## {recipe.title} — data: `{data}`", ""]
    if data in ALTERED:
        lines += [f"`{data}`: {ALTERED[data]}. Real training results on all of its images, not official "
                  "test-set figures.", ""]
    epochs = "/".join(str(n) for n in sorted({len(p["history"]) for p in sides.values()}))
    lines += [f"{any_part['train_rows']:,} training rows, {any_part['test_rows']:,} test rows; {epochs} "
              f"epochs (the recipe: {recipe.epochs}), batch {recipe.batch_size}, SGD lr {recipe.lr}"
              + (f" momentum {recipe.momentum}" if recipe.momentum else "") + f"; initial weights: {recipe.init} "
              f"(drawn once from seed {any_part['recipe'].get('seed', 0)}, the same on both sides); the same batch "
              "order on both sides.", "",
              f"Published: {recipe.published}.", ""]
    lines += ["| side | final test accuracy | wall time (train + test, all epochs) | training samples/s "
              "(median epoch) |", "|---|---|---|---|"]
    for side in ("softgrad", "torch"):
        if side in sides:
            p = sides[side]
            rates = sorted(r["samples_per_s"] for r in p["history"])
            lines.append(f"| {SIDE_LABEL[side]} | {_pct(p['history'][-1]['test_accuracy'])} | {p['wall_s']:.0f} s | "
                         f"{rates[len(rates) // 2]:,.0f} |")
    if {"softgrad", "torch"} <= sides.keys():
        gap = sides["softgrad"]["history"][-1]["test_accuracy"] - sides["torch"]["history"][-1]["test_accuracy"]
        lines += ["", f"softgrad minus torch, final test accuracy: {gap * 100:+.2f} points."]
    lines += ["", *_epoch_table(sides), ""]
    if name == "cifar":
        lines += ["Per-class test accuracy after the last epoch:", "", *_per_class_table(sides), ""]
    return lines


def render_markdown(parts: list[dict], png_name: str, notes: list[str] = ()) -> str:
    lines = ["# The tutorials' runs: softgrad (numpy) beside torch autograd", "",
             "Written by `python -m bench.tutorials report`; each side trained by `python -m bench.tutorials run`. "
             "Both sides train on the same float32 arrays, from the same initial weights, visiting the batches "
             "in the same order, with the same hyperparameters; the epoch's train loss and accuracy are running "
             "means over its batches as they train (d2l's `train_epoch_ch3`), the test accuracy is measured "
             "after the epoch.", "", f"![curves]({png_name})", ""]
    for name, sides in by_run(parts).items():
        lines += run_section(name, sides)
    threads = sorted({str(p.get("threads_asked") or "the libraries' own") for p in parts})
    loads = ", ".join(f"{p['run']}/{p['side']} {p['machine']['load_1min']:.1f}" for p in parts)
    lines += ["## How these were run", "", f"{parts[0]['machine']['cpus']} CPUs shared with other work; threads per "
              f"side: {', '.join(threads)} (torch's and NumPy's BLAS alike); torch "
              f"{next((p['version'] for p in parts if 'version' in p), '?')}; the BLAS threadpoolctl saw, per "
              "part, is in the JSON. 1-minute load average as each part started: " + loads + ". Wall times are "
              "of a shared machine: read the accuracies, not the seconds.", ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + ("\n" if notes else "")


def plot(parts: list[dict], path: Path) -> None:
    """One figure, a panel per run: train loss, train accuracy and test accuracy per epoch (d2l's Animator's
    three curves); softgrad solid, torch dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = by_run(parts)
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.0), squeeze=False)
    colours = {"train_loss": "tab:blue", "train_accuracy": "tab:purple", "test_accuracy": "tab:green"}
    names = {"train_loss": "train loss", "train_accuracy": "train acc", "test_accuracy": "test acc"}
    for ax, (name, sides) in zip(axes[0], runs.items()):
        for side, style in (("softgrad", "-"), ("torch", "--")):
            if side not in sides:
                continue
            history = sides[side]["history"]
            epochs = [r["epoch"] for r in history]
            for key, colour in colours.items():
                ax.plot(epochs, [r[key] for r in history], style, color=colour,
                        label=f"{names[key]} ({'softgrad' if side == 'softgrad' else 'torch'})")
        data = next(iter(sides.values()))["data"]
        ax.set_title(f"{RECIPES[name].title}\n{data.split(' (')[0]}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    from softgrad.numerics.files import atomic_write

    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def write_report(parts: list[dict], out: Path, notes: list[str] = ()) -> None:
    """``out``.md, ``out``.json (every part as run) and ``out``.png, each written atomically."""
    from softgrad.numerics.files import atomic_write_text

    png = out.with_suffix(".png")
    plot(parts, png)
    payload: dict[str, Any] = {"runs": by_run(parts), "notes": list(notes)}
    atomic_write_text(out.with_suffix(".json"), json.dumps(payload, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), render_markdown(parts, png.name, notes) + "\n")
