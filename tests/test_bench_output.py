"""What ``python -m bench`` prints: the default sweep, tables that fit 100 columns (nothing essential cut at
80), result lines that stream through a pipe, and Ctrl-C that reports what was measured."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from softgrad.bench.ops import OpResult
from softgrad.bench.timing import Timing
from softgrad.bench.training import TrainingRecord, add_ratios, recommend, verdicts

ROOT = Path(__file__).resolve().parents[1]
MLP = [784, 512, 256, 128, 64, 10]
# samples/s per contender and batch size: what the tables must show, digit for digit
RATES = {"numpy": (29_564, 41_250, 52_003), "torch": (22_549, 38_120, 61_877), "jax": (7_684, 20_415, 44_930),
         "array-api-strict": (8_425, 17_002, 23_118), "anchor:torch-autograd": (17_436, 30_000, 40_001),
         "anchor:sklearn": (18_332, 25_511, 30_070)}
SIZES = (64, 256, 1024)


def sweep(optimizers=("sgd", "adam")) -> list[TrainingRecord]:
    records = []
    for optimizer in optimizers:
        for name, rates in RATES.items():
            for size, rate in zip(SIZES, rates):
                r = TrainingRecord(name, "mlp", size, float(rate), 0.04, 1e6, accuracy=0.9472, optimizer=optimizer,
                                   widths=MLP)
                records.append(r)
    return records


def render(width: int, records, ops=()) -> str:
    from softgrad.bench.report import recommendation_lines, render_cases, render_ops_narrow, render_summary

    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    decided = verdicts(records, recommend(records))
    for line in recommendation_lines(records, decided):
        console.print(line)
    render_summary(records, decided, console, repeats=3)
    render_cases(records, console)
    if ops:
        render_ops_narrow(list(ops), console)
    return console.export_text()


def test_the_default_sweep_is_short_and_full_is_todays_complete_one():
    from softgrad.bench.__main__ import parse_args, training_cases

    default = parse_args([])
    assert training_cases(default) == [("mlp", 64, "sgd"), ("mlp", 256, "sgd")]
    assert (default.ops, default.anchors, default.sklearn, default.repeats, default.ceilings) == (
        False, True, False, 3, False)
    full = parse_args(["--full"])
    assert sorted(training_cases(full)) == sorted(
        [(m, b, "sgd") for m in ("mlp", "linear") for b in SIZES] + [(m, 256, "adam") for m in ("mlp", "linear")])
    assert (full.ops, full.anchors, full.sklearn, full.repeats, full.ceilings) == (True, True, True, 5, True)
    # the flags a user knows keep their meaning on either sweep
    assert parse_args(["--no-anchors"]).anchors is False and parse_args(["--no-anchors"]).sklearn is False
    assert parse_args(["--ops"]).ops is True and parse_args(["--full", "--no-ops"]).ops is False
    assert parse_args(["--anchors"]).sklearn is True
    assert training_cases(parse_args(["--model", "linear", "--batch-size", "32"])) == [("linear", 32, "sgd")]


@pytest.mark.parametrize("width", [100, 80])
def test_tables_fit_the_width_and_keep_every_figure(width):
    records = sweep()
    add_ratios(records, {})
    ops = [OpResult(b, "cross_entropy + grad", "8192 x 1000", "float32", Timing(12_453.5e-6, 0.0, 3), 8192, 65_568_000)
           for b in ("numpy", "array-api-strict", "torch")]
    text = render(width, records, ops)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, max(lines, key=len)
    assert "…" not in text  # no cell cut short, at 80 columns either
    # at 80 columns nothing essential is cut: every contender, every samples/s, every ratio to the loop
    for name, rates in RATES.items():
        assert name.removeprefix("anchor:") in text
        for rate, loop in zip(rates, RATES["anchor:torch-autograd"]):
            assert f"{rate:,}" in text
            assert f"{rate / loop:.2f}x" in text
    assert "12,453.5 µs" in text and text.count("cross_entropy") >= 3
    # first the recommendation (wrapped at 80, never cut): numpy at 64 and 256, torch at 1024
    words = " ".join(text.split())
    assert words.startswith("fastest here for MLP 784-512-256-128-64-10 (SGD): batch 64: numpy (1.70x the PyTorch "
                            "loop); batch 256: numpy (1.38x the PyTorch loop); batch 1024: torch (1.55x the PyTorch loop)")


def test_the_recommendation_is_one_line_when_one_backend_wins_everywhere():
    from softgrad.bench.report import recommendation_lines, stream_line

    records = [r for r in sweep(("sgd",)) if r.backend in ("numpy", "jax", "anchor:torch-autograd")]
    line, = recommendation_lines(records, verdicts(records, recommend(records)))
    assert line == ("fastest here for MLP 784-512-256-128-64-10 (SGD): numpy, 1.70x the PyTorch autograd loop at "
                    "batch 64, 1.38x at batch 256, 1.30x at batch 1024")
    assert all(len(stream_line(r, len('torch-autograd:cuda'))) <= 80 for r in records)
    assert "29,564 samples/s" in stream_line(records[0])


def test_results_stream_through_a_pipe_and_ctrl_c_reports_what_was_measured(tmp_path):
    out = tmp_path / "bench.json"
    # many small cases, so the run is still going when the first result arrives
    command = [sys.executable, "-m", "bench", "--backend", "numpy", "--no-anchors", "--quick", "--repeats", "1",
               "--batch-size", "32", "64", "128", "256", "512", "1024", "2048", "--json", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 240
        for line in process.stdout:  # line by line, as the bench writes them
            seen.append(line)
            if line.startswith("  mlp batch 32"):
                break
            assert time.monotonic() < deadline, seen
        assert seen and seen[-1].startswith("  mlp batch 32"), "".join(seen)
        assert process.poll() is None  # the line came through the pipe before the end: it streamed
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (rest, err)
    assert "interrupted" in rest and "Traceback" not in rest + err, (rest, err)
    assert "fastest here for MLP 784-512-256-128-64-10 (SGD)" in " ".join(rest.split())  # what was measured
    payload = json.loads(out.read_text())
    assert payload["interrupted"] is True
    measured = [(r["backend"], r["batch_size"]) for r in payload["records"]]
    assert measured[0] == ("numpy", 32) and len(measured) < 7  # the sweep did not finish
    assert payload["recommendation"][0] == {"model": "mlp", "batch_size": 32, "backend": "numpy"}
