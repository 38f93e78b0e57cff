"""``python -m bench`` end to end, and the pieces its figures rest on."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from softgrad.backends import available_backends
from softgrad.bench.training import TrainingRecord, add_ratios, recommend, training_flops_per_sample

from tests import in_process

ROOT = Path(__file__).resolve().parents[1]
# scikit-learn is an optional anchor (the GPU machines do not have it): expect it only where it is
ANCHORS = {"anchor:torch-autograd"} | ({"anchor:sklearn"} if importlib.util.find_spec("sklearn") else set())


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def bench_here(*args: str) -> in_process.Finished:
    """``python -m bench ARGS`` as its ``main`` in this process: for the refusals, which need no new interpreter
    (each one imported NumPy, torch and JAX again); the runs above keep ``python -m bench`` itself."""
    from softgrad.bench.__main__ import main

    with mock.patch.dict(os.environ):  # the bench sets XLA_PYTHON_CLIENT_PREALLOCATE for its own process
        return in_process.run(main, *args)


def test_bench_prints_the_tables_and_writes_json(tmp_path):
    out = tmp_path / "results" / "bench.json"
    # --full: the op benchmarks, Adam, scikit-learn and the ceilings; --wide: the tables of the detail
    result = run_bench("--full", "--wide", "--backend", "numpy", "--quick", "--repeats", "1", "--model", "linear",
                       "--batch-size", "256", "--json", str(out))
    assert result.returncode == 0, result.stderr
    for text in ("op throughput", "cross_entropy + grad", "sgd_step", "training throughput: softmax regression, "
                 "batch 256", "softmax regression, batch 256, Adam (lr 1e-3)", *ANCHORS, "recommendation",
                 "matmul roofline"):
        assert text in result.stdout, text
    payload = json.loads(out.read_text())
    assert {"cpu", "cpu_count", "blas", "versions", "gpu"} <= set(payload["machine"])
    assert {r["op"] for r in payload["ops"]} == {"softmax", "log_softmax", "cross_entropy + grad",
                                                 "sgd_step (momentum)", "device copy"}
    assert "its memory traffic" in result.stdout and payload["sgd_floor_s"]["numpy"] > 0
    # every contender trained in a process of its own, which timed its library's matmul ceiling between
    # its blocks: numpy's, and torch's for the autograd anchor; one block per repeat and optimizer
    assert payload["isolated"] is True
    assert "matmul ceiling of numpy (a step's matmuls alone, timed between the training blocks" in result.stdout
    assert "% own ceiling" in result.stdout and "NumPy's BLAS (threadpoolctl)" in result.stdout
    assert {"numpy", "torch"} <= set(payload["ceilings"])
    (numpy_ceiling,) = payload["ceilings"]["numpy"]
    assert numpy_ceiling["widths"] == [784, 10] and numpy_ceiling["batch_size"] == 256
    assert numpy_ceiling["products"] == 2 and len(numpy_ceiling["blocks_s"]) == 2
    assert numpy_ceiling["samples_per_s"] == pytest.approx(256 / numpy_ceiling["seconds_per_step"])
    for r in payload["records"]:
        assert r["ceiling_fraction"] == pytest.approx(r["samples_per_s"] / r["ceiling_samples_per_s"])
        assert r["best_ceiling_samples_per_s"] >= r["ceiling_samples_per_s"]
    backends = {r["backend"] for r in payload["records"]}
    assert backends == {"numpy"} | ANCHORS
    for record in payload["records"]:
        assert record["model"] == "linear" and record["batch_size"] == 256 and record["samples_per_s"] > 0
        assert 0.5 < record["accuracy"] <= 1.0  # a short run on real MNIST learns something
    assert {(r["backend"], r["optimizer"]) for r in payload["records"]} == {
        (b, o) for b in {"numpy"} | ANCHORS for o in ("sgd", "adam")}
    for numpy_record in (r for r in payload["records"] if r["backend"] == "numpy"):
        assert set(numpy_record["ratios"]) == ANCHORS  # each against the anchors with the same optimizer
    assert payload["recommendation"] == [{"model": "linear", "batch_size": 256, "backend": "numpy"}]
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


@pytest.mark.parametrize("name", ["cupy", "torch:cuda", "no-such-backend"])
def test_unavailable_backend_exits_2_with_one_line(name):
    if available_backends().get(name) == "available":
        pytest.skip(f"{name} is available here")
    result = bench_here("--backend", name)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: ") and "Traceback" not in result.stderr


def test_training_flops_count_every_multiply_add():
    # 3 -> 4 -> 2: forward 2*(12+8), weight gradients 2*(12+8), input gradient of layer 2 only 2*8
    assert training_flops_per_sample([3, 4, 2]) == 2 * 20 + 2 * 20 + 2 * 8


def record(backend, rate, accuracy, model="mlp", batch=64):
    return TrainingRecord(backend, model, batch, rate, 0.0, 1e6, accuracy=accuracy)


def test_ratios_and_roofline_are_taken_within_one_case():
    records = [record("numpy", 300.0, 0.9), record("anchor:sklearn", 200.0, 0.9),
               record("anchor:sklearn", 50.0, 0.9, batch=256)]
    add_ratios(records, matmul_gflops={"numpy": 1.0, "torch": 0.5})
    assert records[0].ratios == {"anchor:sklearn": 1.5}
    assert records[0].roofline_fraction == pytest.approx(300 * 1e6 / 1e9)


def test_recommendation_never_picks_a_fast_wrong_backend():
    records = [record("numpy", 100.0, 0.95), record("torch", 500.0, 0.50), record("cupy", 200.0, 0.94),
               record("anchor:torch-autograd", 900.0, 0.95)]
    assert recommend(records)[("mlp", 64)].backend == "cupy"


def test_gpu_targets_are_ratios_within_one_run():
    from softgrad.bench.targets import LOOP, report

    def mlp(backend, batch, samples_per_s):
        return dict(backend=backend, model="mlp", batch_size=batch, samples_per_s=samples_per_s)

    def op(name, gb_per_s):
        return dict(backend="cupy", op=name, size="65536 x 1000", dtype="float32", gb_per_s=gb_per_s)

    results = {"machine": {"gpu": "NVIDIA H100", "date": "2026-11-23"},
               "records": [mlp("cupy", 256, 300_000), mlp(LOOP, 256, 200_000),
                           mlp("cupy", 1024, 900_000), mlp(LOOP, 1024, 1_000_000), mlp("cupy", 64, 50_000)],
               "ops": [op("cross_entropy + grad", 2000.0), op("device copy", 2500.0)]}
    lines = report(results)
    assert lines[0] == "GPU targets, NVIDIA H100, 2026-11-23:"
    assert ("  cupy MLP batch 256: 300,000 samples/s = 1.50x the PyTorch CUDA loop's 200,000 "
            "(target >= 1.00x): met") in lines
    assert ("  cupy MLP batch 1024: 900,000 samples/s = 0.90x the PyTorch CUDA loop's 1,000,000 "
            "(target >= 1.00x): MISSED") in lines
    assert ("  cupy cross_entropy + grad 65536 x 1000 float32: 2,000 GB/s = 80% of the device copy's "
            "2,500 GB/s (target >= 60%): met") in lines
    assert "  cupy MLP 60,000-sample epoch at batch 64: 1.20 s (target < 1 s): MISSED" in lines
    assert "  cupy MLP 60,000-sample epoch at batch 256: 0.20 s (target < 1 s): met" in lines
    assert "  torch:cuda MLP batch 256 vs the PyTorch CUDA loop: not measured" in lines


def test_gpu_targets_cli_says_when_it_cannot_read_the_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "softgrad.bench.targets", str(tmp_path / "missing.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_the_recommendation_gives_its_margin_or_says_it_is_too_close_to_call():
    from softgrad.bench.training import verdicts

    def rec(backend, rate, spread):
        r = record(backend, rate, 0.9)
        r.spread = spread
        return r

    clear = [rec("numpy", 100.0, 0.04), rec("torch", 130.0, 0.04), rec("anchor:sklearn", 500.0, 0.0)]
    close = [rec("numpy", 100.0, 0.30), rec("torch", 110.0, 0.30)]
    for records, too_close in ((clear, False), (close, True)):
        verdict = verdicts(records, recommend(records))[("mlp", 64)]
        assert verdict.winner.backend == "torch" and verdict.runner_up.backend == "numpy"
        assert verdict.too_close is too_close
    assert verdicts(clear, recommend(clear))[("mlp", 64)].describe().startswith("torch, +30% over numpy")
    assert verdicts(close, recommend(close))[("mlp", 64)].describe().startswith("too close to call: torch 110")


def test_bench_names_data_it_cannot_read_and_paths_it_cannot_write(tmp_path):
    result = bench_here("--dataset", "fashion-mnist", "--root", str(tmp_path), "--no-ops", "--quick")
    assert result.returncode == 2 and "fashion-mnist" in result.stderr and "--download" in result.stderr
    assert "Traceback" not in result.stderr and "--download" in bench_here("--help").stdout
    result = bench_here("--json", str(tmp_path), "--no-ops", "--no-training")
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_install_hints_keep_their_brackets():
    # CuPy hidden from the import system: its reason carries the hint pip install 'softgrad[cupy]'
    code = ("import sys; sys.modules['cupy'] = None\n"
            "from softgrad.bench.__main__ import main\n"
            "sys.exit(main(['--backend', 'all', '--no-ops', '--no-training']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pip install 'softgrad[cupy]'" in " ".join(result.stdout.split())


def test_large_vocab_table_at_tiny_shapes(tmp_path):
    import math

    from softgrad.bench.large_vocab import dense_bytes

    out = tmp_path / "large-vocab.json"
    # a cap between the two shapes' dense logits: the torch reference path runs at V 2048, is skipped at 8192
    cap_gib = (dense_bytes(512, 2048) + dense_bytes(512, 8192)) / 2 / 2**30
    result = run_bench("--no-ops", "--no-training", "--large-vocab", "--quick", "--backend", "numpy",
                       "--vocab", "2048", "8192", "--memory-cap", f"{cap_gib:.6f}", "--json", str(out))
    assert result.returncode == 0, result.stderr
    for text in ("large vocabulary", "V = 2,048", "V = 8,192", "softgrad numpy", "torch chunked", "torch dense",
                 "t ÷ chunked", "memory cap"):
        assert text in result.stdout, text
    rows = json.loads(out.read_text())["large_vocab"]["rows"]
    assert [(r["contender"], r["vocab"]) for r in rows] == [
        (c, v) for v in (2048, 8192) for c in ("softgrad numpy", "torch chunked", "torch dense")]
    has_torch = importlib.util.find_spec("torch") is not None
    for r in rows:
        expected = "ok" if r["kind"] == "softgrad" or (has_torch and not (r["kind"] == "torch-dense"
                                                                           and r["vocab"] == 8192)) else "skipped"
        assert r["status"] == expected, r
        if r["status"] == "skipped":
            assert r["reason"]
            continue
        assert r["tokens"] == 512 and r["hidden"] == 64 and r["flops"] == 6 * 512 * 64 * r["vocab"]
        assert r["median_s"] > 0 and r["gflops"] > 0 and len(r["times_s"]) >= 1
        assert r["peak_extra_bytes"] > 0 and math.isfinite(r["loss"])
        assert r["threads"]["threadpoolctl"] is not None
    numpy_rows = [r for r in rows if r["contender"] == "softgrad numpy"]
    assert all(r["tracemalloc_peak_bytes"] > 0 for r in numpy_rows)
    if has_torch:
        small, large = numpy_rows
        assert set(small["ratios"]) == {"time_vs_chunked", "time_vs_dense", "memory_vs_chunked"}
        assert set(large["ratios"]) == {"time_vs_chunked", "memory_vs_chunked"}  # no dense row at V 8192
        for r in numpy_rows:
            assert all(math.isfinite(x) and x > 0 for x in r["ratios"].values()), r["ratios"]
            assert r["agrees"] is True  # the same loss and gradients as torch's


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available(),
                    reason="a CUDA device is here: --device cuda would run")
def test_large_vocab_device_cuda_without_a_gpu_exits_2_with_one_line():
    from softgrad.bench.large_vocab import main

    result = in_process.run(main, "--device", "cuda", "--quick")  # refused before anything is measured
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_ceiling_times_exactly_the_matmuls_a_step_needs():
    from softgrad.bench.ceiling import measure, product_flops, step_products

    widths = [784, 512, 256, 128, 64, 10]
    assert len(step_products(widths, 64)) == 14  # 5 forward, 5 weight gradients, 4 input gradients
    for batch in (1, 64, 1024):  # the same count as the FLOPs the bench reads its rows with
        assert product_flops(widths, batch) == training_flops_per_sample(widths) * batch
    result = measure("numpy", [6, 5, 3], 4, repeats=2, min_block_s=0.001)
    assert result["products"] == 5 and result["samples_per_s"] == pytest.approx(4 / result["seconds_per_step"])
    assert result["best_seconds_per_step"] <= result["seconds_per_step"]


def test_same_process_trains_here_and_times_the_ceilings_beforehand(tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench("--backend", "numpy", "--quick", "--repeats", "1", "--model", "linear", "--batch-size", "128",
                       "--optimizer", "sgd", "--no-ops", "--no-anchors", "--same-process", "--wide", "--json", str(out))
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["isolated"] is False
    assert "matmul ceiling of numpy (a step's matmuls alone, in a process of its own)" in result.stdout
    (row,) = payload["records"]
    assert row["backend"] == "numpy" and row["ceiling_fraction"] == pytest.approx(
        row["samples_per_s"] / payload["ceilings"]["numpy"][0]["samples_per_s"])


def test_ceiling_blocks_are_merged_into_their_median():
    from softgrad.bench.training import add_ceiling_block, add_ceiling_failure

    ceilings: dict = {"jax": "the ceiling of jax could not be measured: boom"}
    for seconds in (0.004, 0.001, 0.002):
        add_ceiling_block(ceilings, "numpy", {"backend": "numpy", "widths": [3, 4, 2], "batch_size": 8,
                                              "products": 3, "seconds_per_step": seconds, "on_gpu": False})
    add_ceiling_block(ceilings, "numpy", {"backend": "numpy", "widths": [3, 2], "batch_size": 8, "products": 2,
                                          "seconds_per_step": 0.5})
    add_ceiling_block(ceilings, "jax", {"backend": "jax", "widths": [3, 2], "batch_size": 8, "products": 2,
                                        "seconds_per_step": 0.5})
    first, second = ceilings["numpy"]
    assert first["blocks_s"] == [0.004, 0.001, 0.002] and first["seconds_per_step"] == 0.002
    assert first["best_seconds_per_step"] == 0.001 and first["samples_per_s"] == pytest.approx(4000)
    assert first["gflops"] == pytest.approx(2 * 8 * (3 * 4 + 4 * 2 + 3 * 4 + 4 * 2 + 4 * 2) / 0.002 / 1e9)
    assert second["blocks_s"] == [0.5]
    assert ceilings["jax"].startswith("the ceiling of jax could not")  # a reason stands
    # one case failing leaves the library's others, and rows of that case have no own ceiling
    add_ceiling_failure(ceilings, "numpy", [3, 4, 2], 64, "out of memory")
    add_ceiling_block(ceilings, "numpy", {"backend": "numpy", "widths": [3, 4, 2], "batch_size": 64,
                                          "products": 3, "seconds_per_step": 0.1})  # never merged into the error
    failure = ceilings["numpy"][2]
    assert failure["error"] == "the ceiling of numpy could not be measured: out of memory"
    assert "samples_per_s" not in failure and len(ceilings["numpy"]) == 4
    rows = [record("numpy", 300.0, 0.9), record("numpy", 300.0, 0.9)]
    rows[0].widths, rows[1].widths, rows[1].batch_size = [3, 4, 2], [3, 4, 2], 8
    ceilings["numpy"].pop()  # the block above, at batch 64, that stands beside the failure
    add_ratios(rows, {"numpy": 1.0}, ceilings)
    assert rows[0].ceiling_fraction is None and rows[1].ceiling_fraction == pytest.approx(300 / 4000)


def test_a_contender_in_its_own_process_trains_times_its_ceiling_and_names_its_failures():
    from softgrad.bench.worker import DataSpec, IsolatedContender, WorkerError

    def ours():
        return [p for p in multiprocessing.active_children() if p.name.startswith("softgrad-bench")]

    with pytest.raises(WorkerError, match="no-such-backend"):
        IsolatedContender("softgrad", "no-such-backend", DataSpec())
    assert not ours()  # the worker that could not start is gone
    worker = IsolatedContender("softgrad", "numpy", DataSpec())
    try:
        assert (worker.name, worker.on_gpu, worker.library) == ("numpy", False, "numpy")
        case = worker.prepare("linear", 64, None, "sgd")
        os.kill(worker._process.pid, signal.SIGINT)  # Ctrl-C reaches the group: the bench's process decides
        assert case.timed(3) > 0 and case.peak_memory() > 0
        block = worker.ceiling([784, 10], 64, 0.001)
        assert block["products"] == 2 and block["calls"] >= 1 and block["samples_per_s"] > 0
        with pytest.raises(WorkerError, match="numpy: .*mlp-huge"):
            worker.prepare("mlp-huge", 64, None, "sgd")  # an error in the worker comes back named; it goes on
        case.release()
        assert 0.0 < worker.accuracy("linear", 2048, None, "sgd") <= 1.0
        worker._process.kill()
        worker._process.join()
        with pytest.raises(WorkerError, match="the process measuring numpy ended"):
            worker.prepare("linear", 64, None, "sgd")
    finally:
        worker.close()
    assert not ours()


def test_rows_are_read_against_their_own_librarys_ceiling_and_the_best():
    def ceiling(rate):
        return [{"widths": [3, 4, 2], "batch_size": 64, "samples_per_s": rate}]

    records = [record("numpy", 300.0, 0.9), record("anchor:sklearn", 150.0, 0.9),
               record("anchor:torch-autograd", 100.0, 0.9), record("jax", 50.0, 0.9)]
    for r in records:
        r.widths = [3, 4, 2]
    add_ratios(records, {"numpy": 1.0}, {"numpy": ceiling(400.0), "torch": ceiling(500.0),
                                         "jax": "the ceiling of jax could not be measured: boom"})
    numpy_row, sklearn_row, torch_row, jax_row = records
    assert numpy_row.ceiling_fraction == pytest.approx(0.75) and numpy_row.best_ceiling_fraction == pytest.approx(0.6)
    assert sklearn_row.ceiling_fraction == pytest.approx(150 / 400)  # scikit-learn runs on NumPy's BLAS
    assert torch_row.ceiling_fraction == pytest.approx(100 / 500)
    assert jax_row.ceiling_fraction is None and jax_row.best_ceiling_fraction == pytest.approx(50 / 500)


@pytest.mark.parametrize("core, flags, warns", [
    ("Haswell", {"avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}, True),
    ("haswell", {"avx", "avx2", "fma"}, False),  # AVX2 is all this CPU has: nothing is held back
    ("SkylakeX", {"avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}, False),
    ("Sandybridge", {"avx", "avx2", "fma"}, True),
    ("", {"avx", "avx2", "fma", "avx512f"}, False),
    ("NoSuchCore", {"avx", "avx2", "fma"}, False),
])
def test_the_bench_warns_when_openblas_coretype_holds_the_cpu_back(core, flags, warns):
    from softgrad.bench.blas_kernel import forced_kernel_warning

    environ = {"OPENBLAS_CORETYPE": core, "OPENBLAS_L2_SIZE": "1048576"} if core else {}
    warning = forced_kernel_warning(environ, flags)
    assert (warning is not None) == warns
    if warns:
        assert warning.count("\n") == 0 and f"OPENBLAS_CORETYPE={core}" in warning and "OPENBLAS_L2_SIZE" in warning


def test_the_sgd_floor_is_its_bytes_at_the_copy_rate():
    from softgrad.bench.ops import OpResult, sgd_floor_s
    from softgrad.bench.timing import Timing

    sgd = OpResult("numpy", "sgd_step (momentum)", "10 params", "float32", Timing(1e-3, 0.0, 1), 10, 5_000_000)
    copy = OpResult("numpy", "device copy", "10 params", "float32", Timing(1e-4, 0.0, 1), 10, 2_000_000)  # 20 GB/s
    assert sgd_floor_s([sgd, copy], "numpy") == pytest.approx(5_000_000 / 20e9)
    assert sgd_floor_s([sgd], "numpy") is None


def test_cpu_targets_are_medians_of_ratios_within_each_run(tmp_path):
    from softgrad.bench.cpu_targets import main, report

    def run(numpy_fraction, numpy_rate, sklearn_rate, ce_numpy, ce_torch):
        records = [{"backend": "numpy", "model": "mlp", "batch_size": 64, "optimizer": "sgd",
                    "samples_per_s": numpy_rate, "ceiling_fraction": numpy_fraction,
                    "best_ceiling_fraction": numpy_fraction * 0.9},
                   {"backend": "anchor:sklearn", "model": "mlp", "batch_size": 64, "optimizer": "sgd",
                    "samples_per_s": sklearn_rate}]
        ops = [{"backend": b, "op": "cross_entropy + grad", "size": "8192 x 1000", "dtype": "float32",
                "timing": {"median_s": t}} for b, t in (("numpy", ce_numpy), ("torch", ce_torch))]
        return {"records": records, "ops": ops}

    runs = [run(0.50, 100.0, 90.0, 3.0, 1.0), run(0.70, 130.0, 100.0, 1.2, 1.0), run(0.65, 125.0, 100.0, 1.4, 1.0)]
    lines = report(runs)
    own = next(line for line in lines if line.startswith("  numpy MLP batch 64"))
    assert "median 65%" in own and "(50%, 70%, 65%)" in own and own.endswith(": met")
    best = next(line for line in lines if "fastest softgrad backend, batch 64" in line)
    assert "(45%, 63%, 59%)" in best and best.endswith("MISSED")
    ce = next(line for line in lines if "cross_entropy + grad" in line)
    assert "median 1.40" in ce and ce.endswith(": met")
    peer = next(line for line in lines if "numpy over sklearn, batch 64" in line)
    assert "median 1.25" in peer and peer.endswith(": met")
    assert any(line.endswith("torch MLP batch 64, % of its own ceiling (target >= 80%): not measured") for line in lines)
    assert main([str(tmp_path / "missing.json")]) == 2
