"""softgrad train --distributed at the command line, without a process group: what it refuses before any
work (no torchrun environment, no --out, a bad --dist-timeout, --backend auto, a malformed fault hook), its
help, and the pieces the ranks use to start together and the test hook that kills one. The real runs are
tests/test_torchrun.py's (torchrun) and tests/test_distributed_gloo.py's (gloo in two processes)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from softgrad.commands.train import main
from softgrad.commands.train_distributed import (
    FAULT_VARIABLE,
    TORCHRUN_VARIABLES,
    Fault,
    FaultyCommunicator,
    StartGate,
    on_rank_zero,
)
from softgrad.training.communicator import SingleProcess

TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


def _refused(capsys, argv: list[str]) -> str:
    """The one line ``softgrad train argv`` refuses with (exit status 2)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in (*TORCHRUN_VARIABLES, FAULT_VARIABLE, "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_env(monkeypatch, no_torchrun):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)


def test_without_torchrun_it_says_how_to_launch(capsys, no_torchrun, tmp_path, monkeypatch):
    line = _refused(capsys, ["--distributed", "--out", str(tmp_path / "run"), "--dataset", "synthetic"])
    assert "torchrun --nproc-per-node K -m softgrad train --distributed --out RUN" in line
    assert all(name in line for name in TORCHRUN_VARIABLES)
    monkeypatch.setenv("RANK", "0")  # one set is not enough: the line names those missing
    line = _refused(capsys, ["--distributed", "--out", str(tmp_path / "run")])
    assert "and WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set" in line
    assert not (tmp_path / "run").exists()


def test_the_refusal_imports_no_torch(tmp_path, no_torchrun):
    code = ("import sys; from softgrad.commands.train import main; "
            "status = main(['--distributed', '--dataset', 'synthetic']); print(status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "torchrun --nproc-per-node" in done.stderr


def test_distributed_needs_out(capsys, torchrun_env):
    line = _refused(capsys, ["--distributed", "--dataset", "synthetic"])
    assert line.startswith("softgrad train: --distributed needs --out") and "--max-restarts" in line


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "inf"])
def test_dist_timeout_must_be_positive(capsys, torchrun_env, tmp_path, minutes):
    line = _refused(capsys, ["--distributed", "--out", str(tmp_path / "run"), f"--dist-timeout={minutes}"])
    assert "--dist-timeout must be a number of minutes above 0" in line


def test_dist_timeout_is_a_number_and_only_with_distributed(capsys, no_torchrun):
    with pytest.raises(SystemExit) as exit:
        main(["--distributed", "--dist-timeout", "soon"])
    assert exit.value.code == 2
    assert "--dist-timeout: invalid float value: 'soon'" in capsys.readouterr().err
    line = _refused(capsys, ["--dist-timeout", "3", "--dataset", "synthetic"])
    assert "--dist-timeout is for --distributed runs" in line


def test_backend_auto_is_refused(capsys, torchrun_env, tmp_path):
    line = _refused(capsys, ["--distributed", "--out", str(tmp_path / "run"), "--backend", "auto"])
    assert "--backend auto" in line and "name the backend" in line


def test_a_malformed_fault_hook_is_one_line(capsys, torchrun_env, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "rank=1,epoch=two")
    line = _refused(capsys, ["--distributed", "--out", str(tmp_path / "run")])
    assert f"{FAULT_VARIABLE}='rank=1,epoch=two'" in line and "rank=R,epoch=E,step=S" in line


def test_help_names_the_flags_and_the_global_batch(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--distributed" in text and "--dist-timeout MINUTES" in text
    assert "with --distributed the global batch, shared out among the ranks (not per rank)" in text
    assert "torchrun --nproc-per-node K -m softgrad train --distributed --out RUN" in text
    assert "(default 5)" in text


def test_the_fault_hook_names_a_rank_a_step_and_a_round():
    fault = Fault.from_environment({FAULT_VARIABLE: "rank=1, epoch=2, step=3"})
    assert fault == Fault(rank=1, epoch=2, step=3, restart=0)
    assert Fault.from_environment({}) is None
    assert fault.applies(1, {}) and fault.applies(1, {"TORCHELASTIC_RESTART_COUNT": "0"})
    assert not fault.applies(0, {}) and not fault.applies(1, {"TORCHELASTIC_RESTART_COUNT": "1"})
    later = Fault.from_environment({FAULT_VARIABLE: "rank=0,epoch=1,step=1,restart=1"})
    assert later.applies(0, {"TORCHELASTIC_RESTART_COUNT": "1"})
    for bad in ("rank=1", "rank=1,epoch=2,step=3,when=4", "1,2,3"):
        with pytest.raises(ValueError, match=FAULT_VARIABLE):
            Fault.from_environment({FAULT_VARIABLE: bad})


def test_the_fault_exits_hard_at_its_step():
    """In a child, 4 steps an epoch: the hook lets epoch 1 and the first two steps of epoch 2 through, then the
    process ends with status 1 at once (no exception, no clean-up: the line after the third never prints)."""
    code = """
import numpy as np
from softgrad.backends import get_backend
from softgrad.commands.train_distributed import Fault, FaultyCommunicator
from softgrad.training.communicator import SingleProcess
comm = FaultyCommunicator(SingleProcess(), Fault(rank=0, epoch=2, step=3))
be = get_backend("numpy")
comm.allreduce_sum(be, np.zeros(1))  # before arm(): not counted (the start gate's)
comm.arm(4)
for epoch in (1, 2):
    for step in range(1, 5):
        comm.allreduce_sum(be, np.zeros(2))
        print(epoch, step, flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout.split("\n")[:-1] == ["1 1", "1 2", "1 3", "1 4", "2 1", "2 2"]
    assert done.stderr == ""


class ThreadRanks:
    """k simulated ranks in threads of this process: broadcast and all-reduce through shared slots and a
    barrier (the test's own engine, so the ranks' agreement is tested without a process group)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.slots: list = [None] * world_size
        self.wall = threading.Barrier(world_size, timeout=10)

    def rank(self, rank: int) -> ThreadRank:
        return ThreadRank(self, rank)


class ThreadRank:
    def __init__(self, ranks: ThreadRanks, rank: int) -> None:
        self.ranks, self.rank, self.world_size = ranks, rank, ranks.world_size

    def _exchange(self, value):
        self.ranks.slots[self.rank] = value
        self.ranks.wall.wait()
        values = list(self.ranks.slots)
        self.ranks.wall.wait()
        return values

    def allreduce_sum(self, be, bucket):
        return np.sum(self._exchange(np.array(bucket)), axis=0)

    def broadcast(self, value, src=0):
        return self._exchange(value)[src]

    def barrier(self):
        self._exchange(None)


def _on_ranks(world_size: int, work) -> list:
    """``work(communicator)`` on each simulated rank; what each returned or raised."""
    ranks, results = ThreadRanks(world_size), [None] * world_size

    def one(rank: int) -> None:
        try:
            results[rank] = work(ranks.rank(rank))
        except Exception as error:  # noqa: BLE001 - the test reads it
            results[rank] = error

    threads = [threading.Thread(target=one, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_rank_zero_decides_and_its_error_stops_every_rank():
    assert _on_ranks(3, lambda c: on_rank_zero(c, lambda: ("settings", c.rank))) == [("settings", 0)] * 3

    def refused():
        raise FileNotFoundError("--data x.npz: no such file")

    results = _on_ranks(3, lambda c: on_rank_zero(c, refused))
    assert type(results[0]) is FileNotFoundError and str(results[0]) == "--data x.npz: no such file"
    for error in results[1:]:
        assert type(error) is ValueError
        assert str(error) == "rank 0 stopped before training: --data x.npz: no such file"


def test_the_start_gate_stops_the_ready_ranks_when_one_failed():
    def work(communicator):
        gate = StartGate(communicator)
        if communicator.rank == 1:
            gate.fail()
            gate.fail()  # once met, a second call does not meet again
            return "failed"
        gate.ready()
        return "trained"

    results = _on_ranks(3, work)
    assert results[1] == "failed"
    for rank in (0, 2):
        assert isinstance(results[rank], ValueError) and "another rank stopped before training" in str(results[rank])
    assert _on_ranks(2, lambda c: StartGate(c).ready()) == [None, None]


def test_one_process_is_its_own_gate():
    StartGate(SingleProcess()).ready()
    assert on_rank_zero(SingleProcess(), lambda: 7) == 7
    assert FaultyCommunicator(SingleProcess(), Fault(1, 1, 1)).world_size == 1


def test_the_distributed_bench_keeps_earlier_results_and_checks_its_flags(tmp_path, capsys):
    from softgrad.__main__ import main as softgrad_main

    kept = tmp_path / "earlier.json"
    kept.write_text("{}")
    assert softgrad_main(["bench", "--distributed", "--json", str(kept)]) == 2
    assert capsys.readouterr().err.strip() == (f"softgrad bench --distributed: {kept} exists: give a new path "
                                               "(results are never written over)")
    assert kept.read_text() == "{}"
    assert softgrad_main(["bench", "--distributed", "--repeats", "0"]) == 2
    assert "--repeats, --rows and --batch-size must be at least 1" in capsys.readouterr().err
    assert softgrad_main(["bench", "--distributed", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: softgrad bench --distributed") and "--markdown PATH" in text


def test_a_rank_started_with_other_flags_is_named():
    from softgrad.commands.train import _check_same_flags
    from softgrad.commands.train_flags import build_parser, checked_flags

    def flags(*argv):
        return checked_flags(build_parser().parse_args(["--distributed", "--out", "run", *argv]))

    _check_same_flags(1, flags("--epochs", "3", "--quiet"), flags("--epochs", "3"))  # --quiet is no setting
    with pytest.raises(ValueError) as refused:
        _check_same_flags(1, flags("--epochs", "3", "--lr", "0.1"), flags("--epochs", "2"))
    assert str(refused.value) == ("rank 1 was started with other flags than rank 0 (--epochs 3 here, 2 on rank 0; "
                                  "--lr 0.1 here, not given on rank 0): start every rank with the same command line")
