"""``python -m bench`` end to end: the table, the JSON, and the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends import available_backends

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_bench_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "results" / "ops.json"
    result = run_bench("--backend", "numpy", "--quick", "--repeats", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "softgrad op throughput" in result.stdout
    for op in ("softmax", "log_softmax", "cross_entropy + grad", "sgd_step"):
        assert op in result.stdout
    records = json.loads(out.read_text())["records"]
    assert {r["op"] for r in records} == {"softmax", "log_softmax", "cross_entropy + grad", "sgd_step (momentum)"}
    assert all(r["backend"] == "numpy" and r["items_per_s"] > 0 for r in records)
    assert not list(out.parent.glob(".bench-*"))  # the temporary file was renamed into place


@pytest.mark.parametrize("name", ["cupy", "torch:cuda", "no-such-backend"])
def test_unavailable_backend_exits_2_with_one_line(name):
    if available_backends().get(name) == "available":
        pytest.skip(f"{name} is available here")
    result = run_bench("--backend", name)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: ") and "Traceback" not in result.stderr
