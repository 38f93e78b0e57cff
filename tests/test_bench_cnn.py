"""The bench's CNN row (bench.cnn, bench.cnn_contenders, bench.cnn_ceiling): what it counts and how it reports,
on tiny sizes; the figures asserted are ratios and shares computed from the same run, never a timing."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from softgrad.bench import cnn, cnn_ceiling  # noqa: E402
from softgrad.bench.cnn_contenders import (  # noqa: E402
    ANCHOR_NAME,
    MNISTRows,
    SoftgradCNNContender,
    TorchCNNContender,
    lenet,
)


def test_the_gemm_ceiling_counts_the_flops_torch_counts_for_a_lenet_training_step():
    # torch's own FLOP counter over forward and backward (no input gradient for the first conv, as ours)
    from softgrad.bench.tutorial_recipes import RECIPES, torch_network
    from torch.utils.flop_counter import FlopCounterMode

    net = torch_network(RECIPES["lenet"], (1, 28, 28), 10)
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert cnn_ceiling.product_flops(cnn_ceiling.step_products(3)) == counter.get_total_flops()


def test_the_anchor_is_the_same_network_from_the_same_weights():
    # the torch loop's network against softgrad's numpy LeNet: the same logits on the same MNIST rows
    data = MNISTRows(16).load()
    with torch.no_grad():
        expected = TorchCNNContender.network()(torch.from_numpy(data.x_train.reshape(-1, 1, 28, 28))).numpy()
    logits, _ = lenet().forward(data.x_train)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
    anchor = TorchCNNContender().prepare("lenet", 8, data)
    anchor.run(2)  # and its loop trains (cycling through the two batches)


def test_a_run_reports_every_contender_with_ratios_and_the_gemm_share_from_the_same_run(tmp_path):
    data = MNISTRows(48).load()
    contenders = [SoftgradCNNContender("numpy"), TorchCNNContender()]

    class InProcess:  # the worker's interface (prepare(model, batch)) on the in-process contenders
        def __init__(self, contender):
            self.name, self._contender = contender.name, contender

        def prepare(self, model, batch_size):
            return self._contender.prepare(model, batch_size, data)

    ceilings = []

    def gemm_ceiling(batch):
        ceilings.append(cnn_ceiling.measure("numpy", batch, repeats=1, min_block_s=0.001))
        return ceilings[-1]

    rows = cnn.measure_run([InProcess(c) for c in contenders], [4, 8], repeats=2, block_seconds=0.001,
                           gemm_ceiling=gemm_ceiling, progress=lambda _: None)
    assert [(r.contender, r.batch_size) for r in rows] == [("numpy", 4), (ANCHOR_NAME, 4), ("numpy", 8),
                                                           (ANCHOR_NAME, 8)]
    for batch in (4, 8):
        mine = {r.contender: r for r in rows if r.batch_size == batch}
        assert all(len(r.samples_per_s) == 2 and min(r.samples_per_s) > 0 for r in mine.values())
        assert mine[ANCHOR_NAME].ratio == 1.0
        assert mine["numpy"].ratio == pytest.approx(statistics.median(mine["numpy"].samples_per_s)
                                                    / statistics.median(mine[ANCHOR_NAME].samples_per_s))
        gemm = mine["numpy"].gemm
        assert len(gemm["ceilings"]) == 2 and {c["batch_size"] for c in gemm["ceilings"]} == {batch}
        assert gemm["gemm_share_of_step"] == pytest.approx(
            mine["numpy"].median / statistics.median(c["samples_per_s"] for c in gemm["ceilings"]))
        assert gemm["flops_per_sample"] == cnn_ceiling.product_flops(cnn_ceiling.step_products(batch)) / batch
    shares = cnn.gemm_shares(rows[0].median, rows[0].gemm["ceilings"], roofline_gflops=10.0)
    assert shares["gemm_share_of_roofline"] == pytest.approx(shares["gemm_gflops"] / 10.0)

    # medians over runs: each (contender, batch)'s median of the runs' medians, and the table shows them all
    other = [cnn.CNNRow(r.contender, r.batch_size, [2 * s for s in r.samples_per_s], r.ratio, r.gemm) for r in rows]
    medians = cnn.medians_of_runs([rows, other, rows])
    assert {(m["contender"], m["batch_size"]) for m in medians} == {(r.contender, r.batch_size) for r in rows}
    for m in medians:
        same = [r for r in rows if (r.contender, r.batch_size) == (m["contender"], m["batch_size"])][0]
        assert m["runs"] == 3 and m["samples_per_s"] == pytest.approx(same.median)
    table = cnn.render(medians, [rows, other, rows])
    assert table.count("\n") == len(medians) + 1 and "1.00x" in table

    # --from-json renders a saved run's table again, measuring nothing
    import json
    from dataclasses import asdict

    saved, out = tmp_path / "run.json", tmp_path / "run.md"
    saved.write_text(json.dumps({"per_run": [[asdict(r) for r in rows]]}))
    assert cnn.main(["--from-json", str(saved), "--markdown", str(out)]) == 0
    assert out.read_text() == cnn.render(cnn.medians_of_runs([rows]), [rows]) + "\n"


def test_the_command_refuses_an_existing_result_file_and_bad_sizes_in_one_line(tmp_path, capsys):
    from softgrad.bench.__main__ import main

    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    for argv in (["--cnn", "--json", str(kept)], ["--cnn", "--repeats", "0"], ["--cnn", "--batch-size", "0"],
                 ["--cnn", "--from-json", str(tmp_path / "missing.json")], ["--cnn", "--from-json", str(kept)]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("python -m bench --cnn")
    assert kept.read_text() == "{}"
