"""The bench's data checks (softgrad.bench): missing or unreadable data and regression data sets are refused in one
line before anything is measured."""

from __future__ import annotations

import pytest

BENCH_FAST = ["--backend", "numpy", "--quick", "--model", "linear", "--batch-size", "256", "--repeats", "1"]


@pytest.fixture
def bench_main(monkeypatch):
    """bench's main, with its measuring replaced by a failure: a refusal must come before any of it."""
    import softgrad.bench.__main__ as bench_cli

    def measuring(*args, **kwargs):
        raise AssertionError("the bench started measuring before it refused")

    monkeypatch.setattr(bench_cli, "contender_processes", measuring)
    monkeypatch.setattr(bench_cli, "measure_ops", measuring)
    return bench_cli.main


def _idx_folder(folder, garbage: bool):
    folder.mkdir()
    if garbage:  # the four file names, holding no IDX data
        for stem in ("train", "t10k"):
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                (folder / f"{stem}-{kind}").write_bytes(b"garbage, not IDX")
    return folder


@pytest.mark.parametrize("dataset, garbage, expected", [
    ("fashion-mnist", False, "fashion-mnist: the data files are missing"),
    ("mnist", False, "mnist: the data files are missing"),
    ("fashion-mnist", True, "is not an IDX file"),
])
@pytest.mark.parametrize("ops", [True, False])
def test_bench_names_missing_data_before_it_measures(bench_main, tmp_path, capsys, dataset, garbage, expected, ops):
    root = _idx_folder(tmp_path / "root", garbage)
    assert bench_main([*BENCH_FAST, "--dataset", dataset, "--root", str(root), *([] if ops else ["--no-ops"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("bench: ") and expected in captured.err


@pytest.mark.parametrize("dataset", ["diabetes", "toy-regression"])
@pytest.mark.parametrize("ops", [True, False])
def test_bench_refuses_a_regression_data_set_in_one_line(bench_main, capsys, dataset, ops):
    with pytest.raises(SystemExit) as exit_:
        bench_main([*BENCH_FAST, "--dataset", dataset, *([] if ops else ["--no-ops"])])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"--dataset {dataset} is a regression data set" in captured.err and "bench.regression" in captured.err
