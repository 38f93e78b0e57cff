"""Backends from outside the repository: a distribution this repository has never seen, found through its
``softgrad.backends`` entry points, as NetworkX finds its backends.

The test writes a module and a ``*.dist-info/entry_points.txt`` into a folder, puts that folder on
``PYTHONPATH`` and runs the command lines a plugin author and a user run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from softgrad.backends import (
    BackendUnavailableError,
    available_backends,
    get_backend,
    register_backend,
    unregister_backend,
)
from softgrad.numerics.protocol import Backend

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A backend written outside softgrad: the shared array-API code bound to NumPy, as a plugin author writes it."""
import numpy as np

from softgrad.backends.array_api import ArrayAPIBackend


class OutsideBackend(ArrayAPIBackend):
    name = "outside"
    device = "cpu"

    def __init__(self):
        import array_api_compat.numpy

        self.xp = array_api_compat.numpy
        self.array_type = (np.ndarray, np.generic)

    def asarray(self, x, dtype=None):
        array = np.asarray(x, dtype=dtype)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"outside.asarray: dtype {array.dtype} is not supported")
        return array

    def to_numpy(self, x):
        return np.asarray(x)


class SubtlyWrongSoftmax(OutsideBackend):
    """Its softmax is sharpened by 0.1%: close, and wrong."""

    name = "subtly-wrong"

    def softmax(self, z, axis=-1):
        return super().softmax(z * 1.001, axis)


def not_a_backend():
    return object()
'''

ENTRY_POINTS = """
[softgrad.backends]
outside = outside_backend:OutsideBackend
subtly-wrong = outside_backend:SubtlyWrongSoftmax
missing-module = no_such_module_anywhere:Backend
not-a-backend = outside_backend:not_a_backend
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    (folder / "outside_backend.py").write_text(PLUGIN)
    dist = folder / "softgrad_outside-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: softgrad-outside\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS).lstrip())
    return folder


def run(site: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "SOFTGRAD_CACHE": str(site / "cache")}
    return subprocess.run([sys.executable, *args], cwd=site, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_an_outside_plugin_is_registered_and_a_broken_one_never_breaks_the_others(site):
    result = run(site, "-c", "import json; from softgrad.backends import available_backends; "
                             "print(json.dumps(available_backends()))")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["outside"] == "available" and status["subtly-wrong"] == "available"
    assert status["numpy"] == "available" and status["torch"] == "available"
    assert "its plugin failed to import" in status["missing-module"]
    assert "No module named 'no_such_module_anywhere'" in status["missing-module"]
    assert "does not implement the Backend protocol: it lacks" in status["not-a-backend"]


def test_the_conformance_kit_passes_the_outside_plugin(site, tmp_path):
    report = tmp_path / "report.json"
    result = run(site, "-m", "softgrad.backends.conformance", "outside", "--examples", "5", "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    from softgrad.backends.conformance import all_checks

    count = sum(len(check.dtypes) for check in all_checks())  # one result per check and dtype
    assert f"outside: all {count} checks passed" in result.stdout
    saved = json.loads(report.read_text())
    assert saved["passed"] is True and {r["op"] for r in saved["results"]} >= {"softmax", "cross_entropy", "sgd_step"}


def test_the_conformance_kit_fails_a_subtly_wrong_softmax_and_names_it(site):
    result = run(site, "-m", "softgrad.backends.conformance", "subtly-wrong", "--examples", "5")
    assert result.returncode == 1
    assert "FAILED softmax: softmax_rows_are_distributions (float32)" in result.stdout
    assert "checks failed, in softmax (float32)" in result.stdout
    # what softmax feeds is wrong too, and named: nothing else (its own cross-entropy is right)
    assert "cross_entropy (" not in result.stdout.split("checks failed, in")[1]


def test_the_conformance_kit_on_an_unknown_or_broken_backend_exits_2(site):
    for name, reason in (("no-such-backend", "unknown backend 'no-such-backend'"),
                         ("missing-module", "its plugin failed to import")):
        result = run(site, "-m", "softgrad.backends.conformance", name)
        assert result.returncode == 2 and reason in result.stderr and result.stdout == ""


def test_core_train_trains_on_the_outside_plugin(site):
    out = site / "run"
    result = run(site, "-m", "softgrad.commands.train", "--backend", "outside", "--dataset", "synthetic", "--model", "linear",
                 "--epochs", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["backend"] == "outside"
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["test_accuracy"] > 0.5  # the synthetic classes are separable; chance is 10%


def test_bench_all_measures_the_outside_plugin(site, tmp_path):
    report = tmp_path / "bench.json"
    result = run(site, "-m", "bench", "--backend", "all", "--quick", "--no-ops", "--no-anchors", "--model", "linear",
                 "--batch-size", "256", "--repeats", "1", "--json", str(report))
    assert result.returncode == 0, result.stderr
    measured = {r["backend"] for r in json.loads(report.read_text())["records"]}
    assert {"outside", "subtly-wrong", "numpy"} <= measured
    assert "missing-module: unavailable: backend 'missing-module': its plugin failed to import" in " ".join(
        result.stdout.split())


# ---- register_backend at run time ----------------------------------------------------------


class _Outside:
    pass


def test_register_backend_at_run_time():
    from softgrad.backends.numpy_backend import NumPyBackend

    class Renamed(NumPyBackend):
        name = "numpy-again"

    register_backend("numpy-again", Renamed)
    try:
        be = get_backend("numpy-again")
        assert isinstance(be, Backend) and be is get_backend("numpy-again")
        assert available_backends()["numpy-again"] == "available"
        with pytest.raises(ValueError, match="already registered"):
            register_backend("numpy-again", Renamed)
        register_backend("numpy-again", lambda: _Outside(), replace=True)
        with pytest.raises(BackendUnavailableError, match="does not implement the Backend protocol: it lacks"):
            get_backend("numpy-again")
    finally:
        unregister_backend("numpy-again")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'numpy-again'"):
        get_backend("numpy-again")


@pytest.mark.parametrize("name", ["", "auto", " padded"])
def test_names_that_cannot_be_registered(name):
    with pytest.raises(ValueError, match="cannot be a backend name"):
        register_backend(name, lambda: None)


def test_a_factory_that_raises_is_reported_not_raised():
    def broken():
        raise RuntimeError("the device is on fire")

    register_backend("on-fire", broken)
    try:
        assert "failed to start" in available_backends()["on-fire"]
        assert "RuntimeError: the device is on fire" in available_backends()["on-fire"]
        assert available_backends()["numpy"] == "available"
    finally:
        unregister_backend("on-fire")


class FromScratch:
    """A backend written to the protocol as it stood before ``on_gpu``, ``xp`` and ``peak_memory`` were
    declared: its own class, no shared code, every operation delegated by hand."""

    name = "from-scratch"
    device = "cpu"
    OPERATIONS = ("asarray", "to_numpy", "synchronize", "matmul", "affine", "relu_backward", "maximum", "sum",
                  "tanh", "argmax", "softmax", "log_softmax", "nll_loss", "cross_entropy", "cross_entropy_grad",
                  "cross_entropy_and_grad", "sgd_init", "sgd_step")

    def __init__(self):
        from softgrad.backends.numpy_backend import NumPyBackend

        inner = NumPyBackend()
        for operation in self.OPERATIONS:
            setattr(self, operation, getattr(inner, operation))


def test_a_backend_without_the_newer_members_gets_their_defaults_and_trains():
    from softgrad import datasets
    from softgrad.backends.conformance import run_checks
    from softgrad.training import MLP, fit

    register_backend("from-scratch", FromScratch)
    try:
        be = get_backend("from-scratch")
        assert be.on_gpu is False and be.xp.__name__.endswith("numpy") and be.peak_memory(lambda: None) is None
        assert all(r.passed for r in run_checks(be, examples=3)), "the kit fails a correct backend"
        data = datasets.synthetic(n_train=400, n_test=100, num_features=10, num_classes=3, seed=1)
        history = fit(MLP([10, 16, 3], seed=0), data, backend="from-scratch", epochs=2, progress=False, log=None)
        assert history[-1]["test_accuracy"] > 0.6
    finally:
        unregister_backend("from-scratch")
