"""Hypothesis profiles and the backend fixtures shared by the suite."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from softgrad.backends import available_backends, backend_names, get_backend, register_backend

from tests.immutable_numpy import ImmutableNumPyBackend

# The shared implementation on NumPy arrays that refuse every in-place operation (tests/immutable_numpy.py),
# registered as a plugin would be at run time, so every backend test runs on it too.
IMMUTABLE = "numpy-immutable"
register_backend(IMMUTABLE, ImmutableNumPyBackend, replace=True)

# "ci": deterministic and bounded (make test, .ci/run). "dev": Hypothesis'
# defaults with random seeds. "long": many more examples (make test-long).
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=100, **_common)
settings.register_profile("long", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Every registered backend (softgrad's own and any plugin installed here), as NetworkX's suite runs on
# its backends; SOFTGRAD_TEST_BACKENDS=name,name narrows the list.
BACKEND_STATUS = available_backends()
_SELECTED = [n for n in os.environ.get("SOFTGRAD_TEST_BACKENDS", "").split(",") if n]
ALL_BACKENDS = [name for name in backend_names() if not _SELECTED or name in _SELECTED]
AVAILABLE = [name for name in ALL_BACKENDS if BACKEND_STATUS[name] == "available"]
DTYPES = [np.float32, np.float64]

from softgrad.backends.conformance.checks import TOLERANCES, assert_close  # noqa: E402,F401  (one source with the kit)


def _on_gpu(name: str) -> bool:
    if BACKEND_STATUS[name] == "available":
        return bool(get_backend(name).on_gpu)
    return "CUDA" in BACKEND_STATUS[name] or "GPU" in BACKEND_STATUS[name]


def backend_param(name: str):
    reason = BACKEND_STATUS[name]
    marks = [pytest.mark.gpu] if _on_gpu(name) else []
    if reason != "available":
        marks.append(pytest.mark.skip(reason=reason))
    return pytest.param(name, marks=marks, id=name)


# The CuPy backend's own code with its CUDA kernels run on the CPU (tests/cuda_on_cpu.py): every
# test of the `be` fixture checks the fused kernels and their fallbacks on a machine without a GPU.
CUPY_ON_CPU = "cupy-on-cpu"


def _cupy_on_cpu_param():
    from tests.cuda_on_cpu import compiler

    marks = [] if compiler() else [pytest.mark.skip(reason="no C++ compiler (g++) to run the CUDA kernels on the CPU")]
    return pytest.param(CUPY_ON_CPU, marks=marks, id=CUPY_ON_CPU)


_EXTRA = [] if _SELECTED else [_cupy_on_cpu_param()]


@pytest.fixture(scope="session", params=[backend_param(name) for name in ALL_BACKENDS] + _EXTRA)
def be(request):
    """Every registered backend, skipped with its reason where it is not available; the CuPy
    backend with its kernels emulated on the CPU; the shared code on immutable arrays."""
    if request.param == CUPY_ON_CPU:
        from tests.cuda_on_cpu import cpu_cupy_backend

        return cpu_cupy_backend()
    return get_backend(request.param)


@pytest.fixture(autouse=True)
def _backend_scope(request):
    """A test of the ``be`` fixture runs inside the backend's scope where it has one (JAX's 64-bit mode):
    the test's own arithmetic on float64 arrays needs it, as a JAX user's does (the backend's methods
    enter it themselves)."""
    if "be" not in request.fixturenames:
        yield
        return
    be = request.getfixturevalue("be")
    scope = getattr(be, "scope", None)
    with scope() if scope is not None else contextlib.nullcontext(), _fewer_examples(request.function, be.name):
        yield


# XLA compiles every operation anew for each new shape, and Hypothesis draws a new shape for nearly every
# example: on these backends a property test runs a tenth of the profile's examples (ci: 3 of 30; long:
# 100 of 1000), so the suite stays within its time. The kit (python -m backends.conformance jax) runs them all.
EXAMPLES_DIVISOR = {"jax": 10, "jax:gpu": 10}


@contextlib.contextmanager
def _fewer_examples(test, backend: str):
    divisor = EXAMPLES_DIVISOR.get(backend)
    current = getattr(test, "_hypothesis_internal_use_settings", None)  # read by Hypothesis when the test runs
    if divisor is None or current is None:
        yield
        return
    test._hypothesis_internal_use_settings = settings(parent=current,
                                                      max_examples=max(3, current.max_examples // divisor))
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = current


@pytest.fixture(scope="session", params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


# The fast tier (make test-fast) leaves out the tests that train on real data, run the bench or start
# many subprocesses: each takes tens of seconds here. The full suite (make test) runs them all.
SLOW_FILES = {"test_bench_cli.py", "test_benchmarks.py"}
SLOW_TESTS = {
    "test_accuracy_on_mnist_with_the_defaults", "test_bench_all_measures_the_outside_plugin",
    "test_backends_agree_with_each_other", "test_the_code_blocks_run",
    "test_the_conformance_kit_fails_a_subtly_wrong_softmax_and_names_it",
    "test_the_conformance_kit_passes_the_outside_plugin", "test_a_resumed_run_stays_on_its_backend",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
