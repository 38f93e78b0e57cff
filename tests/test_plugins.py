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

from tests.conftest import AVAILABLE

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
    # one example per check: the kit's checks themselves run on 30 in test_properties; here the plugin's
    # discovery, the command's verdict and its report are what is tested
    result = run(site, "-m", "softgrad.backends.conformance", "outside", "--examples", "1", "--json", str(report))
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


# ---- losses and optimizers from outside the repository: the README's example, installed ---------------------


def _readme_plugin_example() -> tuple[str, dict[str, dict[str, str]]]:
    """The module and the entry points of README.md's "Plugging in a loss or an optimizer", as written there."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Plugging in a loss or an optimizer", 1)[1].split("\n## ", 1)[0]
    module = section.split("```python\n", 1)[1].split("```", 1)[0]
    declared = tomllib.loads(section.split("```toml\n", 1)[1].split("```", 1)[0])
    return module, declared["project"]["entry-points"]


def _install(folder: Path, distribution: str, modules: dict[str, str], groups: dict[str, dict[str, str]]) -> None:
    """A distribution as pip leaves it: its modules and a dist-info whose entry_points.txt holds ``groups``."""
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    dist = folder / f"{distribution.replace('-', '_')}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items()) + "\n"
        for group, entries in groups.items()))


BROKEN_UNITS = {"softgrad.losses": {"missing_module": "no_such_module_anywhere:LOSS",
                                    "misnamed": "my_extras:SQUARED_HINGE"},
                "softgrad.optimizers": {"exits_at_import": "exits_at_import:OPTIMIZER"}}

WRONG_GRADIENT = '''
from softgrad import Loss
from my_extras import squared_hinge


def halved(be, input, target, *, reduction="mean", op="halved_hinge", want_grad=False):
    loss, grad = squared_hinge(be, input, target, reduction=reduction, op=op, want_grad=want_grad)
    return loss, None if grad is None else 0.5 * grad


HALVED_HINGE = Loss("halved_hinge", halved)
'''


@pytest.fixture(scope="module")
def units_site(tmp_path_factory) -> Path:
    """README's example distribution, beside one whose entry points are broken in three ways."""
    folder = tmp_path_factory.mktemp("units")
    module, groups = _readme_plugin_example()
    _install(folder, "softgrad-my-extras", {"my_extras": module}, groups)
    _install(folder, "softgrad-broken-units", {"exits_at_import": "import sys\nsys.exit(3)\n"}, BROKEN_UNITS)
    return folder


def test_the_readme_example_declares_a_loss_and_an_optimizer():
    _, groups = _readme_plugin_example()
    assert groups == {"softgrad.losses": {"squared_hinge": "my_extras:SQUARED_HINGE"},
                      "softgrad.optimizers": {"plain_gd": "my_extras:PLAIN_GD"}}


def test_plugged_in_units_are_registered_and_broken_ones_named(units_site):
    result = run(units_site, "-c", textwrap.dedent("""
        import json
        import numpy as np
        from softgrad import LOSSES, OPTIMIZERS, get_loss, get_optimizer
        from softgrad.backends import get_backend

        try:
            get_loss("missing_module")
        except ValueError as error:
            lookup = str(error)
        be = get_backend("numpy")
        x, y = be.asarray(np.array([[0.5, -2.0], [0.25, 0.75]])), be.asarray(np.array([0, 1]))
        value, grad = get_loss("squared_hinge").value_and_grad_on(be, x, y, reduction="sum")
        plain_gd, ones = get_optimizer("plain_gd"), [be.asarray(np.ones(2))]
        params, state = plain_gd.step_on(be, ones, ones, plain_gd.init_on(be, ones), lr=0.5)
        print(json.dumps({"losses": LOSSES.names(), "optimizers": list(OPTIMIZERS), "lookup": lookup,
                          "broken": {**LOSSES.broken(), **OPTIMIZERS.broken()}, "value": float(value),
                          "grad": np.asarray(grad).tolist(), "params": np.asarray(params[0]).tolist(),
                          "step": state.step}))
    """))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert {"squared_hinge", "cross_entropy", "mse"} <= set(found["losses"])
    assert {"plain_gd", "sgd", "adam"} <= set(found["optimizers"])
    assert not {"missing_module", "misnamed", "exits_at_import"} & set(found["losses"] + found["optimizers"])
    broken = found["broken"]
    assert "its plugin failed to load" in broken["missing_module"]
    assert "No module named 'no_such_module_anywhere'" in broken["missing_module"]
    assert "gives the loss 'squared_hinge'; the entry point's name must be" in broken["misnamed"]
    assert "it called sys.exit(3)" in broken["exits_at_import"]
    assert found["lookup"] == broken["missing_module"]
    # the one-vs-all squared hinge of README: margins max(0, 1 - s z) are (0.5, 0) and (1.25, 0.25)
    assert found["value"] == pytest.approx(0.25 + 1.5625 + 0.0625)
    assert found["grad"] == [[-1.0, 0.0], [2.5, -0.5]]  # -2 s max(0, 1 - s z): exact in binary
    assert found["params"] == [0.5, 0.5] and found["step"] == 1


def test_softgrad_train_trains_with_the_plugged_in_loss_and_optimizer(units_site):
    out = units_site / "run"
    result = run(units_site, "-m", "softgrad", "train", "--dataset", "synthetic", "--model", "linear",
                 "--loss", "squared_hinge", "--optimizer", "plain_gd", "--epochs", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["loss"] == "squared_hinge" and recorded["optimizer"] == "plain_gd"
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["test_accuracy"] > 0.5  # the synthetic classes are separable; chance is 10%


def test_the_conformance_kit_checks_the_plugged_in_units(units_site, tmp_path):
    report = tmp_path / "report.json"
    # also docs/extending.md's `softgrad conformance numpy --examples 1` (tests/test_docs.py skips it, naming this test)
    result = run(units_site, "-m", "softgrad.backends.conformance", "numpy", "--examples", "1", "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    checked = {r["op"]: r["passed"] for r in json.loads(report.read_text())["results"]}
    assert checked["plugged-in losses"] is True and checked["plugged-in optimizers"] is True
    listing = run(units_site, "-c", "from softgrad.backends.conformance.plugged_in_checks import plugged_in_losses, "
                                    "plugged_in_optimizers; print([u.name for u in plugged_in_losses()], "
                                    "[u.name for u in plugged_in_optimizers()])")
    assert listing.stdout.split() == ["['squared_hinge']", "['plain_gd']"], listing.stderr


def test_the_conformance_kit_names_a_plugged_in_loss_whose_gradient_is_wrong(units_site, tmp_path_factory):
    wrong = tmp_path_factory.mktemp("wrong")
    _install(wrong, "softgrad-halved", {"halved_hinge": WRONG_GRADIENT},
             {"softgrad.losses": {"halved_hinge": "halved_hinge:HALVED_HINGE"}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(wrong), str(units_site), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from softgrad.backends import get_backend
        from softgrad.backends.conformance import run_checks
        from softgrad.backends.conformance.plugged_in_checks import PLUGGED_IN_CHECKS

        for r in run_checks(get_backend("numpy"), examples=3, checks=PLUGGED_IN_CHECKS):
            print(r.op, r.dtype, r.passed, r.message.replace(chr(10), " "))
    """)], cwd=wrong, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if " False " in line]
    assert len(failed) == 1 and failed[0].startswith("plugged-in losses float64 False"), lines
    assert "plugged-in loss 'halved_hinge': its gradient against central finite differences" in failed[0]


def test_a_catalog_reads_its_entry_points_once_at_the_first_read_and_keeps_its_own_names(monkeypatch):
    import importlib.metadata

    from softgrad.numerics.catalog import Catalog
    from softgrad.numerics.losses import LOSSES, Loss

    loaded = []

    class FakeEntryPoint:
        def __init__(self, name, value):
            self.name, self.value, self.dist = name, value, None

        def load(self):
            loaded.append(self.name)
            if isinstance(self.value, BaseException):
                raise self.value
            return self.value

    own = LOSSES["cross_entropy"]
    plugged = Loss("plugged", own.compute)
    points = [FakeEntryPoint("cross_entropy", Loss("cross_entropy", lambda *a, **k: None)),
              FakeEntryPoint("plugged", lambda: plugged), FakeEntryPoint("fails", RuntimeError("no"))]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == "test.units" else [])
    catalog = Catalog("loss", Loss)
    catalog.register(own)
    catalog.plug_in_from("test.units")
    assert catalog["cross_entropy"] is own and loaded == []  # a name it holds: no plugin is loaded for it
    assert list(catalog) == ["cross_entropy", "plugged"] and catalog.lookup("plugged") is plugged
    assert sorted(loaded) == ["fails", "plugged"]  # softgrad's own name is never loaded from a plugin
    assert list(catalog.broken()) == ["fails"]
    assert catalog.broken()["fails"].startswith("loss 'fails': its plugin failed to load (entry point ")
    assert catalog.broken()["fails"].endswith("): RuntimeError: no")
    list(catalog)
    assert sorted(loaded) == ["fails", "plugged"]  # read once

    points[:] = [FakeEntryPoint("interrupted", KeyboardInterrupt())]
    interrupted = Catalog("loss", Loss)
    interrupted.plug_in_from("test.units")
    with pytest.raises(KeyboardInterrupt):
        list(interrupted)


@pytest.mark.parametrize("name", [n for n in ("numpy", "torch", "array-api-strict", "jax") if n in AVAILABLE])
def test_the_readme_units_pass_the_kit_on_each_backend(name):
    """Outside any backend's scope (as the kit runs): a plugged-in unit keeps float64 on JAX too."""
    import types

    from softgrad.backends.conformance import run_checks
    from softgrad.backends.conformance.plugged_in_checks import PLUGGED_IN_CHECKS
    from softgrad.numerics.losses import LOSSES, register_loss
    from softgrad.numerics.optim import OPTIMIZERS, register_optimizer

    module = types.ModuleType("my_extras")
    exec(compile(_readme_plugin_example()[0], "README.md", "exec"), module.__dict__)
    register_loss(module.SQUARED_HINGE)
    register_optimizer(module.PLAIN_GD)
    try:
        results = run_checks(get_backend(name), examples=2, checks=PLUGGED_IN_CHECKS)
    finally:
        LOSSES.pop("squared_hinge")
        OPTIMIZERS.pop("plain_gd")
    assert [(r.op, r.dtype) for r in results if not r.passed] == [], [r.message for r in results]
    assert {r.op for r in results} == {"plugged-in losses", "plugged-in optimizers"}
