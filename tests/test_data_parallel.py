"""fit on k ranks (simulated: threads, tests/simulated_ranks.py) equals fit in one process on the global batch.

The references are independent of the distributed code: one process's fit (the single-process path, itself
held to torch's autograd by test_training and the loss tests), and torch's autograd on the full batch with
torch.nn.functional.cross_entropy (weight, ignore_index, label_smoothing, mean) and torch.optim.SGD.
"""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
from softgrad import datasets
from softgrad.numerics.losses import Loss, get_loss
from softgrad.training import MLP, StopTraining, TrainingDivergedError, fit
from softgrad.training.communicator import DistributedError, SingleProcess

from tests.conftest import CUPY_ON_CPU, get_backend
from tests.simulated_ranks import SimulatedRank, run_ranks

N_TRAIN, FEATURES, CLASSES = 23, 5, 3
BATCH = 5  # 23 rows: batches 5, 5, 5, 5, 3; on 4 ranks the last gives rank 3 nothing, on 2 and 3 uneven shares


def class_data(n: int = N_TRAIN, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset("toy", rng.normal(size=(n, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, n),
                            rng.normal(size=(7, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 7),
                            tuple("abc"), "toy")


def value_data(outputs: int = 2) -> datasets.Dataset:
    rng = np.random.default_rng(1)
    return datasets.Dataset("toy-values", rng.normal(size=(N_TRAIN, FEATURES)).astype(np.float32),
                            rng.normal(size=(N_TRAIN, outputs)).astype(np.float32),
                            rng.normal(size=(6, FEATURES)).astype(np.float32),
                            rng.normal(size=(6, outputs)).astype(np.float32), (), "toy", task="regression")


def binary_data() -> datasets.Dataset:
    rng = np.random.default_rng(2)
    return datasets.Dataset("toy-binary", rng.normal(size=(N_TRAIN, FEATURES)).astype(np.float32),
                            rng.integers(0, 2, N_TRAIN), rng.normal(size=(6, FEATURES)).astype(np.float32),
                            rng.integers(0, 2, 6), ("no", "yes"), "toy")


# (data, outputs, fit's arguments): every loss option, and SGD with momentum and Adam
CASES = {
    "ce-weight-ignore-smoothing-sgd": (class_data, CLASSES, dict(
        loss_options={"weight": [0.5, 2.0, 1.25], "ignore_index": 1, "label_smoothing": 0.1},
        momentum=0.9, nesterov=True)),
    "ce-adam": (class_data, CLASSES, dict(optimizer="adam", lr=0.01)),
    "nll-weight": (class_data, CLASSES, dict(loss="nll_loss", loss_options={"weight": [1.0, 0.25, 3.0]})),
    "chunked-head-weight": (class_data, CLASSES, dict(chunked_head=True, loss_options={"weight": [0.5, 2.0, 1.0]})),
    "mse-adam": (value_data, 2, dict(loss="mse", optimizer="adam", lr=0.01)),
    "l1": (value_data, 2, dict(loss="l1")),
    "smooth-l1": (value_data, 2, dict(loss="smooth_l1", loss_options={"beta": 0.5})),
    "huber": (value_data, 2, dict(loss="huber", loss_options={"delta": 0.7})),
    "bce-pos-weight": (binary_data, 1, dict(loss="bce_with_logits", loss_options={"pos_weight": [1.7]})),
}
#: the cases every backend runs (numpy runs them all)
ON_EVERY_BACKEND = ("ce-weight-ignore-smoothing-sgd", "mse-adam")


def train(comm, backend, dtype, data, outputs, *, epochs=2, model=None, **arguments):
    model = model if model is not None else MLP([FEATURES, 4, outputs], dtype=dtype, backend=backend, seed=3)
    history = fit(model, data, epochs=epochs, batch_size=BATCH, log=None, communicator=comm, **arguments)
    return model, history


def on_ranks(world_size: int, body) -> list:
    """``body(comm)`` on every rank; a rank's exception is raised here."""
    results = run_ranks(world_size, body)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def tolerance(dtype) -> dict:
    # float64: to 1e-12; float32: a few ulps of each step's update, over the steps of two epochs
    return dict(rtol=1e-12, atol=1e-13) if np.dtype(dtype) == np.float64 else dict(rtol=2e-5, atol=2e-6)


def assert_same_run(be, dtype, one, many) -> None:
    (model, history), results = one, many
    for other_model, other_history in results:
        for a, b in zip(model.params, other_model.params):
            np.testing.assert_allclose(np.asarray(be.to_numpy(b)), np.asarray(be.to_numpy(a)), **tolerance(dtype))
        for a, b in zip(history, other_history):
            for key, value in a.items():
                if key in ("seconds", "samples_per_s"):
                    continue
                if value is None or key in ("epoch", "train_accuracy", "test_accuracy", "lr"):
                    assert b[key] == value, key  # counts of rows: exact
                else:
                    assert b[key] == pytest.approx(value, rel=tolerance(dtype)["rtol"] * 10,
                                                   abs=tolerance(dtype)["atol"]), key
    first = results[0][1]
    assert all(h == first for _, h in results), "every rank returns rank 0's history"


def _backend(name):
    if name == CUPY_ON_CPU:
        from tests.cuda_on_cpu import cpu_cupy_backend

        return cpu_cupy_backend()
    return get_backend(name)


def check_case(be, dtype, case: str, worlds=(2, 3, 4)) -> None:
    make, outputs, arguments = CASES[case]
    data = make()
    one = train(None, be, dtype, data, outputs, **arguments)
    for world in worlds:
        many = on_ranks(world, lambda comm: train(comm, be, dtype, data, outputs, **arguments))
        assert_same_run(be, dtype, one, many)


def _compiled(be) -> bool:
    """JAX (XLA compiles anew for every shard's shape) and the CUDA kernels emulated on the CPU: slow here."""
    return be.name.startswith("jax") or "emulated" in str(getattr(be, "device", ""))


@pytest.mark.parametrize("case", ON_EVERY_BACKEND)
def test_k_ranks_equal_one_process_on_every_backend(be, dtype, case):
    """2, 3 and 4 ranks (uneven shards; on 4 ranks the last batch leaves one rank empty) give one process's
    parameters and history: class weights, ignore_index and label smoothing with SGD and momentum, and a
    regression with Adam. (JAX and the emulated CuPy kernels: the next test, in the slow tier.)"""
    if _compiled(be):
        pytest.skip("in test_k_ranks_equal_one_process_on_compiled_backends (slow tier)")
    check_case(be, dtype, case)


@pytest.mark.parametrize("case", ON_EVERY_BACKEND)
def test_k_ranks_equal_one_process_on_compiled_backends(be, dtype, case, monkeypatch):
    """The same on JAX and the CuPy backend with its kernels emulated on the CPU, with 4 ranks, whose shards
    are uneven (2, 1, 1, 1) and, in the last batch, empty (1, 1, 1, 0)."""
    if not _compiled(be):
        pytest.skip("in test_k_ranks_equal_one_process_on_every_backend")
    from tests import cuda_on_cpu

    # the emulated kernels share one C library's state: one launch at a time across the ranks' threads (a
    # GPU runs each rank's kernels on its own device)
    lock, launch = threading.Lock(), cuda_on_cpu.EmulatedKernel.__call__

    def one_at_a_time(self, *args):
        with lock:
            return launch(self, *args)

    monkeypatch.setattr(cuda_on_cpu.EmulatedKernel, "__call__", one_at_a_time)
    check_case(be, dtype, case, worlds=(4,))


@pytest.mark.parametrize("case", [c for c in CASES if c not in ON_EVERY_BACKEND])
def test_k_ranks_equal_one_process_for_every_loss(dtype, case):
    check_case(get_backend("numpy"), dtype, case)


def test_more_ranks_than_rows_and_a_rank_with_no_rows_at_all():
    """3 training rows on 4 ranks: rank 3 holds no row of any batch and contributes zeros."""
    data = class_data(n=3)
    one = train(None, "numpy", np.float64, data, CLASSES, epochs=3)
    many = on_ranks(4, lambda comm: train(comm, "numpy", np.float64, data, CLASSES, epochs=3))
    assert_same_run(get_backend("numpy"), np.float64, one, many)


def test_three_ranks_agree_with_torch_autograd_on_the_full_batch():
    """The 3-rank result against torch: cross_entropy with weight, ignore_index and label smoothing (mean over
    the global batch) and torch.optim.SGD with momentum, batch after batch of the (seed, epoch) permutation."""
    torch = pytest.importorskip("torch")
    data = class_data()
    options = {"weight": [0.5, 2.0, 1.25], "ignore_index": 1, "label_smoothing": 0.1}
    arguments = dict(loss_options=options, lr=0.1, lr_schedule="constant", momentum=0.9, nesterov=False,
                     weight_decay=0.0, seed=4)
    results = on_ranks(3, lambda comm: train(comm, "numpy", np.float64, data, CLASSES, **arguments))
    start = MLP([FEATURES, 4, CLASSES], dtype=np.float64, seed=3)
    params = [torch.tensor(p, requires_grad=True) for p in start.params]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    weight = torch.tensor(options["weight"], dtype=torch.float64)
    for epoch in (1, 2):
        order = np.random.default_rng([4, epoch]).permutation(N_TRAIN)
        x = torch.from_numpy(data.x_train[order].astype(np.float64))
        y = torch.from_numpy(data.y_train[order])
        for begin in range(0, N_TRAIN, BATCH):
            logits = torch.relu(x[begin:begin + BATCH] @ params[0] + params[1]) @ params[2] + params[3]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(logits, y[begin:begin + BATCH], weight=weight, ignore_index=1,
                                              label_smoothing=0.1).backward()
            optimizer.step()
    for model, _ in results:
        for ours, theirs in zip(model.params, params):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_one_rank_communicator_is_the_single_process_path():
    """A communicator of one rank takes the single-process path: the same bits as no communicator."""
    data = class_data()
    plain = train(None, "numpy", np.float32, data, CLASSES)
    single = train(SingleProcess(), "numpy", np.float32, data, CLASSES)
    for a, b in zip(plain[0].params, single[0].params):
        assert np.array_equal(a, b)


def test_ranks_started_with_different_settings_fail_at_the_start_in_one_line():
    data = class_data()
    results = run_ranks(3, lambda comm: train(comm, "numpy", np.float64, data, CLASSES,
                                              lr=0.1 if comm.rank != 2 else 0.2))
    for result in results:
        assert isinstance(result, DistributedError)
        message = str(result)
        assert "\n" not in message and "setting lr" in message and "rank 0" in message and "rank 2" in message
        assert "0.1" in message and "0.2" in message


def test_a_bad_start_on_rank_zero_is_every_ranks_error_in_one_line():
    """Rank 0 alone checks the loss's options on the data at the start: every rank raises its ValueError."""
    data = class_data()
    results = run_ranks(3, lambda comm: train(comm, "numpy", np.float64, data, CLASSES,
                                              loss_options={"weight": [1.0, 2.0]}))
    assert all(isinstance(r, ValueError) and "weight" in str(r) and "\n" not in str(r) for r in results), results
    assert len({str(r) for r in results}) == 1


def test_ranks_with_different_data_fail_at_the_start():
    results = run_ranks(2, lambda comm: train(comm, "numpy", np.float64, class_data(seed=comm.rank), CLASSES))
    for rank, result in enumerate(results):
        assert isinstance(result, DistributedError) and str(result).startswith(f"rank {rank}: at the start: ranks")
        assert "data x_test is" in str(result) and "on rank 1" in str(result)


def test_only_rank_zero_writes_logs_and_calls_back_and_its_stop_stops_every_rank(tmp_path):
    """Each rank is given its own folder: only rank 0's gets the checkpoint and metrics.jsonl; only rank 0 logs
    and runs the callbacks; a StopTraining raised on rank 0 after epoch 2 ends every rank's run there."""
    data = class_data()
    logs: dict[int, list] = {0: [], 1: [], 2: []}
    called: dict[int, list] = {0: [], 1: [], 2: []}

    def body(comm):
        def stop_after_two(record):
            called[comm.rank].append(record["epoch"])
            if record["epoch"] == 2:
                raise StopTraining

        model = MLP([FEATURES, 4, CLASSES], dtype=np.float64, seed=3)
        return fit(model, data, epochs=4, batch_size=BATCH, communicator=comm, log=logs[comm.rank].append,
                   checkpoint_path=tmp_path / f"rank{comm.rank}" / "model.npz", callbacks=[stop_after_two])

    histories = on_ranks(3, body)
    assert [len(h) for h in histories] == [2, 2, 2] and histories[1] == histories[0] == histories[2]
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == ["metrics.jsonl", "model.npz"]
    assert not (tmp_path / "rank1").exists() and not (tmp_path / "rank2").exists()
    lines = (tmp_path / "rank0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert called == {0: [1, 2], 1: [], 2: []}
    assert logs[1] == logs[2] == [] and any("epoch   2/4" in line for line in logs[0])


def test_a_three_rank_checkpoint_resumes_on_two_ranks_as_the_uninterrupted_run(tmp_path):
    data = class_data()
    arguments = dict(momentum=0.9, optimizer="sgd", loss_options={"label_smoothing": 0.05})
    uninterrupted = train(None, "numpy", np.float64, data, CLASSES, epochs=4, **arguments)
    path = tmp_path / "run" / "model.npz"

    def stop_at_two(record):
        return record["epoch"] == 2

    on_ranks(3, lambda comm: train(comm, "numpy", np.float64, data, CLASSES, epochs=4, checkpoint_path=path,
                                   callbacks=[stop_at_two], **arguments))
    # a fresh model with another seed on each rank: rank 0's checkpoint decides the parameters
    resumed = on_ranks(2, lambda comm: fit(MLP([FEATURES, 4, CLASSES], dtype=np.float64, seed=3), data,
                                           epochs=4, batch_size=BATCH, log=None, communicator=comm,
                                           resume=path, checkpoint_path=path,
                                           **arguments))
    assert all(len(h) == 4 for h in resumed)
    from softgrad.training import checkpoint

    final, _, history, _ = checkpoint.load(path)
    for a, b in zip(uninterrupted[0].params, final.params):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    assert [r["train_accuracy"] for r in history] == [r["train_accuracy"] for r in uninterrupted[1]]


def test_ranks_with_different_seeds_start_from_rank_zeros_parameters():
    data = class_data()
    one = train(None, "numpy", np.float64, data, CLASSES)
    many = on_ranks(2, lambda comm: train(comm, "numpy", np.float64, data, CLASSES, model=MLP(
        [FEATURES, 4, CLASSES], dtype=np.float64, seed=3 + comm.rank)))
    assert_same_run(get_backend("numpy"), np.float64, one, many)


def test_a_divergence_on_some_rank_stops_every_rank_with_the_same_line():
    data = class_data()
    results = run_ranks(3, lambda comm: train(comm, "numpy", np.float32, data, CLASSES, lr=1e30,
                                              lr_schedule="constant"))
    assert all(isinstance(r, TrainingDivergedError) for r in results), results
    assert len({str(r) for r in results}) == 1 and "training diverged at epoch" in str(results[0])


class FailingRank:
    """A rank whose engine fails at its third all-reduce, as gloo's does when a peer dies."""

    def __init__(self, comm: SimulatedRank) -> None:
        self.comm, self.rank, self.world_size = comm, comm.rank, comm.world_size

    def allreduce_sum(self, be, bucket):
        if self.rank == 1 and self.comm.allreduces == 2:
            raise DistributedError("[gloo] Connection closed by peer [127.0.0.1]:29500")
        return self.comm.allreduce_sum(be, bucket)

    def broadcast(self, value, src=0):
        return self.comm.broadcast(value, src)

    def barrier(self):
        self.comm.barrier()


def test_an_engine_failure_names_the_rank_epoch_step_and_checkpoint(tmp_path):
    data = class_data()
    path = tmp_path / "model.npz"
    results = run_ranks(2, lambda comm: train(FailingRank(comm), "numpy", np.float64, data, CLASSES,
                                              checkpoint_path=path))
    message = str(results[1])
    assert isinstance(results[1], DistributedError) and "\n" not in message
    assert message.startswith("rank 1: training stopped at epoch 1, step 3: [gloo] Connection closed")
    assert "no checkpoint to resume from yet" in message
    assert isinstance(results[0], DistributedError) and str(results[0]).startswith("rank 0: training stopped")


def test_a_failure_of_rank_zeros_epoch_end_stops_the_others_at_once_naming_it():
    """A callback (or a write) that fails on rank 0: rank 0 raises it, the others stop with one line naming it
    and the checkpoint to resume from, without waiting for a timeout."""
    data = class_data()

    def failing(record):
        if record["epoch"] == 2:
            raise OSError("No space left on device")

    def body(comm):
        model = MLP([FEATURES, 4, CLASSES], dtype=np.float64, seed=3)
        return fit(model, data, epochs=3, batch_size=BATCH, communicator=comm, log=None,
                   checkpoint_path=tmp / "model.npz", callbacks=[failing])

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        results = run_ranks(2, body)
    assert isinstance(results[0], OSError)
    message = str(results[1])
    assert isinstance(results[1], DistributedError) and "\n" not in message
    assert message.startswith("rank 1: training stopped after epoch 2: rank 0 failed: OSError: No space left")
    assert message.endswith(f"Resume from the last checkpoint, {tmp / 'model.npz'}.")


def test_a_loss_without_a_denominator_rule_is_refused_in_one_line(monkeypatch):
    """A plugin's loss: refused on several ranks until its rule is registered (a wrong denominator would train
    another loss silently)."""
    from softgrad.training import denominators

    plugin = Loss("plugin_cross_entropy", get_loss("cross_entropy").compute)
    with pytest.raises(ValueError, match=r"'plugin_cross_entropy'.*register_denominator\('plugin_cross_entropy'"):
        denominators.check_distributable(plugin, {})
    monkeypatch.setattr(denominators, "_RULES", dict(denominators._RULES))
    denominators.register_denominator(plugin, denominators.class_denominator)
    assert denominators.denominator_rule(plugin) is denominators.class_denominator


def test_a_per_element_regression_weight_is_refused_in_one_line():
    from softgrad.training.denominators import check_distributable

    with pytest.raises(ValueError, match="mse_loss's weight has one entry per element"):
        check_distributable("mse", {"weight": np.ones((4, 2))})
    with pytest.raises(ValueError, match=r"pos_weight: shape \(4, 2\)"):
        check_distributable("bce_with_logits", {"pos_weight": np.ones((4, 2))})
    check_distributable("bce_with_logits", {"pos_weight": np.ones((2,))})


def test_copies_of_one_model_are_independent():
    """The simulated ranks each own a model: the threads never share a parameter."""
    model = MLP([FEATURES, 4, CLASSES], dtype=np.float64)
    twin = copy.deepcopy(model)
    assert all(not np.shares_memory(a, b) for a, b in zip(model.params, twin.params))
