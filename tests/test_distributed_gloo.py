"""softgrad.training.torch_communicator on real gloo: two processes (torch.multiprocessing) that meet
through a FileStore in tmp_path, so no ports are involved and parallel runs cannot collide.

The references are independent of the code under test: NumPy's own sums of what each rank sent, the buffers'
addresses read through each library, a one-process ``fit`` (no communicator), and the clock.
"""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("this torch has no torch.distributed", allow_module_level=True)

from softgrad.backends import available_backends  # noqa: E402

from tests import distributed_workers as workers  # noqa: E402

WORLD = 2


def _context():
    """torch.multiprocessing's forkserver where there is one: the server imports torch once (5 s of CPU on this
    machine), and every rank is forked from it, a fresh process that has not run any of pytest's code;
    spawn elsewhere, each rank importing torch itself."""
    if "forkserver" not in torch.multiprocessing.get_all_start_methods():
        return torch.multiprocessing.get_context("spawn")
    context = torch.multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch.distributed", "softgrad.training.torch_communicator",
                                    "softgrad.training.fitting", "softgrad.datasets", "tests.distributed_workers"])
    return context


def _run_ranks(folder: Path, worker, *args, victim: int | None = None, limit_s: float = 90.0) -> list[dict]:
    """Start WORLD ranks of ``worker`` and wait for each to write its result (a victim that hangs is killed
    once the others have answered); returns the results in rank order."""
    context = _context()
    ranks = [context.Process(target=worker, args=(rank, str(folder), WORLD, *args), daemon=True)
             for rank in range(WORLD)]
    for process in ranks:
        process.start()
    deadline = time.monotonic() + limit_s
    try:
        for rank, process in enumerate(ranks):
            if rank != victim:
                process.join(max(0.0, deadline - time.monotonic()))
                assert not process.is_alive(), f"rank {rank} still running after {limit_s} s"
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join()
    results = []
    for rank in range(WORLD):
        path = folder / f"result-{rank}.pkl"
        assert path.is_file(), f"rank {rank} wrote no result (exit code {ranks[rank].exitcode})"
        results.append(pickle.loads(path.read_bytes()))
    return results


def _no_error(result: dict) -> dict:
    assert "error" not in result or result["error"] is None, result.get("traceback", result)
    return result


def test_importing_the_module_imports_no_torch():
    code = ("import softgrad, softgrad.training.torch_communicator, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_without_torchruns_environment_it_says_how_to_launch(monkeypatch):
    from softgrad.backends import get_backend
    from softgrad.training.torch_communicator import TorchCommunicator

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun --nproc-per-node") as caught:
        TorchCommunicator.from_environment(get_backend("numpy"))
    assert "\n" not in str(caught.value) and "RANK" in str(caught.value)


def test_a_rank_alone_says_so_within_the_timeout(tmp_path):
    """Rank 0 of 2 whose partner never starts: one line, after the timeout (1 s here), not gloo's 30 minutes."""
    from softgrad.backends import get_backend
    from softgrad.training.communicator import DistributedError
    from softgrad.training.torch_communicator import TorchCommunicator

    store = torch.distributed.FileStore(str(tmp_path / "store"), WORLD)
    begun = time.monotonic()
    with pytest.raises(DistributedError) as caught:
        TorchCommunicator.from_store(get_backend("numpy"), store, 0, WORLD, timeout=timedelta(seconds=1))
    seconds = time.monotonic() - begun
    message = str(caught.value)
    assert "\n" not in message and message.startswith("rank 0 of 2: starting the process group (gloo) failed")
    assert "did every rank start?" in message and seconds < 10, (seconds, message)
    assert not torch.distributed.is_initialized()


def test_collectives_on_two_ranks(tmp_path):
    """all_reduce of float32 and float64 buckets of every CPU backend here, a broadcast of a dict (from rank
    0) and of a string (from rank 1), a barrier. Buckets of NumPy, torch and array-api-strict are summed in
    their own memory; JAX's (immutable) come back as new arrays."""
    status = available_backends()
    backends = [name for name in ("numpy", "torch", "array-api-strict", "jax") if status.get(name) == "available"]
    results = [_no_error(r) for r in _run_ranks(tmp_path, workers.collectives, backends)]
    base = {name: np.linspace(-3.0, 5.0, 1001).astype(name) for name in ("float32", "float64")}
    for rank, result in enumerate(results):
        assert (result["rank"], result["world_size"], result["engine"]) == (rank, WORLD, "gloo")
        for name in backends:
            for dtype, found in result[name].items():
                expected = base[dtype].astype(np.float64) * sum(range(1, WORLD + 1))  # 1 * base + 2 * base
                assert found["sum"].dtype == np.dtype(dtype)
                # the same float operations on each rank, in any order of two terms: exact
                np.testing.assert_array_equal(found["sum"], expected.astype(dtype))
                shared = name != "jax"
                assert found["same_object"] is shared and found["same_memory"] is shared, (name, dtype, found)
                if not shared:  # JAX's bucket itself is untouched
                    np.testing.assert_array_equal(found["bucket_after"], base[dtype] * (rank + 1))
        frozen = result["read-only"]  # not shared: summed in a copy, returned as a new array
        np.testing.assert_array_equal(frozen["sum"], base["float64"] * 3)
        assert not frozen["same_object"]
        np.testing.assert_array_equal(frozen["bucket_after"], base["float64"] * (rank + 1))
        sent = result["broadcast"]  # rank 0's dict on both ranks
        assert sorted(sent) == ["from", "settings", "weights"], sent
        assert sent["settings"] == {"lr": 0.05, "epochs": 3} and sent["from"] == 0
        np.testing.assert_array_equal(sent["weights"], np.arange(6.0).reshape(2, 3))
        assert result["broadcast_from_1"] == "from rank 1"
        assert result["after_barrier"]


def _fit_problem() -> dict:
    """37 rows in batches of 9: each global batch splits 5/4 between the ranks, and the last one (1 row)
    leaves rank 1 an empty shard; SGD with momentum, so every step's update builds on the last."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 5))
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(int) + (x[:, 2] > 0.8).astype(int)
    return {"x": x, "y": y, "widths": [5, 8, 3], "seed": 4,
            "settings": dict(epochs=3, batch_size=9, lr=0.1, lr_schedule="constant", momentum=0.9, seed=7)}


def test_two_ranks_fit_as_one_process_on_the_global_batch(tmp_path):
    from softgrad.datasets import from_arrays
    from softgrad.training.fitting import fit
    from softgrad.training.models import MLP

    if "communicator" not in inspect.signature(fit).parameters:
        pytest.skip("fit has no communicator yet")
    problem = _fit_problem()
    model = MLP(problem["widths"], seed=problem["seed"], dtype=np.float64)
    history = fit(model, from_arrays(problem["x"], problem["y"]), "numpy", log=None,
                  progress=False, **problem["settings"])
    reference = [np.array(model.be.to_numpy(p)) for p in model.params]
    results = [_no_error(r) for r in _run_ranks(tmp_path, workers.fit_ranks, problem)]
    largest = max(np.abs(got - want).max() for result in results
                  for got, want in zip(result["params"], reference, strict=True))
    print(f"\n2 ranks against 1 process: largest parameter difference {largest:.2e}, train_loss "
          f"{max(abs(g['train_loss'] - w['train_loss']) for r in results for g, w in zip(r['history'], history)):.2e}")
    for rank, result in enumerate(results):
        for got, want in zip(result["params"], reference, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"rank {rank}")
        assert len(result["history"]) == len(history)
        for got, want in zip(result["history"], history, strict=True):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=0, abs=1e-12), rank
            assert got["train_accuracy"] == want["train_accuracy"], rank
    # the ranks did share the work: one all-reduce per step (3 epochs of 5 batches), of one flat bucket holding
    # more than the 75 gradients, what each rank sent differs (its own shard), and both got the sum
    zero, one = results
    assert len(zero["sent"]) == len(one["sent"]) == 3 * 5
    for step, (mine, theirs) in enumerate(zip(zero["sent"], one["sent"], strict=True)):
        assert mine.ndim == 1 and mine.shape == theirs.shape and mine.size > 75, (step, mine.shape)
        assert not np.array_equal(mine, theirs), step
        np.testing.assert_array_equal(zero["summed"][step], mine + theirs)
        np.testing.assert_array_equal(one["summed"][step], mine + theirs)
    # and training did move the parameters: equal to the reference is not equal to the start
    start = MLP(problem["widths"], seed=problem["seed"], dtype=np.float64)
    assert max(np.abs(np.asarray(p) - q).max() for p, q in zip(start.params, reference, strict=True)) > 1e-3


@pytest.mark.parametrize("how, where, timeout_s, says", [
    ("exit", "allreduce", 20.0, "rank 0 of 2: the all-reduce of 1,000 float64 values failed"),
    ("hang", "allreduce", 3.0, "rank 0 of 2: the all-reduce of 1,000 float64 values failed"),
    ("hang", "barrier", 3.0, "rank 0 of 2: the barrier failed"),
], ids=["killed-at-allreduce", "hung-at-allreduce", "hung-at-barrier"])
def test_a_dead_or_hung_rank_makes_the_other_raise_one_line_within_the_timeout(tmp_path, how, where, timeout_s,
                                                                               says):
    """Rank 1 is killed (SIGKILL, as kill -9) or stops answering at the third all-reduce or barrier; rank 0
    raises DistributedError, one line naming rank 0 and the operation, before the timeout has passed (a dead
    rank: at once). At a barrier, gloo's monitored barrier names the rank that did not come."""
    survivor, victim = _run_ranks(tmp_path, workers.killed, 1, how, where, timeout_s, victim=1)
    assert victim == {"victim": True}
    assert survivor["error"] == "DistributedError", survivor
    message = survivor["message"]
    assert "\n" not in message and message.startswith(says), message
    assert survivor["step"] == 3
    assert survivor["seconds"] < timeout_s + 2.0, survivor  # gloo's own timeout, plus slack for a loaded machine
    if how == "hang":
        assert survivor["seconds"] > timeout_s * 0.8, survivor  # it did wait for the hung rank, as it should
    else:
        assert survivor["seconds"] < timeout_s / 2, survivor  # a dead rank's closed socket is noticed at once
    if where == "barrier":
        assert "Ranks 1 failed to pass monitoredBarrier" in message, message
    print(f"\n{how} at the {where}: rank 0 raised after {survivor['seconds']:.2f} s (timeout {timeout_s:g} s): "
          f"{message}")
