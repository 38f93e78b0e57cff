"""What every test shares: the processes' settings, the Hypothesis profiles, the slow tier, the backend fixtures."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _one_thread_per_worker() -> None:
    """Under pytest-xdist (make test: 2 workers on 2 cores) each worker's BLAS and torch run one thread.

    Each would start a thread per core, and OpenBLAS's threads spin while they wait: with two processes on
    this 2-core machine under load, one epoch of the classic MLP on MNIST took 168 s with the default
    threads against 14 s with one. Set before NumPy or torch is imported (they read it when loaded); the
    tests' own subprocesses inherit it. A value already set is kept."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def _jax_compilation_cache() -> None:
    """JAX keeps what XLA compiles in .pytest_cache/jax/WORKER (git-ignored; make clean removes it): the tests'
    subprocesses and the next run load a shape's program instead of compiling it again. A folder per xdist
    worker, because JAX writes an entry in place, unlocked (unless it also evicts, which reads every entry at
    each write): the other worker could read it half written. Set through JAX's environment variables, read
    when JAX is imported, so setting it imports nothing (the registry's availability check below imports JAX
    where it is installed); every program is kept (no minimum compile time or size)."""
    if importlib.util.find_spec("jax") is None:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax" / worker))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


_one_thread_per_worker()
_jax_compilation_cache()

import numpy as np  # noqa: E402  (after the thread settings above, which NumPy reads when it loads)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from softgrad.backends import available_backends, backend_names, get_backend, register_backend  # noqa: E402

from tests.immutable_numpy import ImmutableNumPyBackend  # noqa: E402

# The shared implementation on NumPy arrays that refuse every in-place operation (tests/immutable_numpy.py),
# registered as a plugin would be at run time, so every backend test runs on it too.
IMMUTABLE = "numpy-immutable"
register_backend(IMMUTABLE, ImmutableNumPyBackend, replace=True)

# "ci", the default (bare pytest, make test, make test-fast, .ci/run): deterministic and bounded.
# On request with HYPOTHESIS_PROFILE: "dev", Hypothesis' defaults with random seeds; "long", many more
# examples (make test-long).
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=100, **_common)
settings.register_profile("long", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


# The slow tier: what make test-fast leaves out and make test runs. One list, here: a file (all its tests) or
# file::test (all its parameters), each with why it is slow on this 2-core machine.
SLOW = {
    "test_bench_cli.py": "each test runs the bench",
    "test_benchmarks.py": "pytest-benchmark's timed operations and training steps",
    "test_bench_output.py::test_results_stream_through_a_pipe_and_ctrl_c_reports_what_was_measured":
        "a bench process, read through a pipe",
    "test_training.py::test_accuracy_on_mnist_with_the_defaults": "10 epochs on MNIST, per model and backend",
    "test_shared_data_loaders.py": "decodes ../shared/data's 50,000 CIFAR-10 JPEGs and loads 130,000 images",
    "test_export_onnx.py::test_a_run_of_softgrad_train_exports_and_agrees_with_softgrad_predict":
        "softgrad train on the shipped MNIST (one epoch), then 10,000 raw test images through three runtimes",
    "test_properties.py::test_backends_agree_with_each_other": "every backend against every other",
    "test_properties.py::test_compiled_backends_agree_with_the_others": "JAX compiles every drawn shape anew",
    "test_docs.py::test_the_code_blocks_run": "each page in a new process; the README's trainings on MNIST",
    "test_plugins.py::test_bench_all_measures_the_outside_plugin": "the bench in a new process",
    "test_plugins.py::test_the_conformance_kit_passes_the_outside_plugin": "the conformance kit in a new process",
    "test_plugins.py::test_the_conformance_kit_fails_a_subtly_wrong_softmax_and_names_it":
        "the conformance kit in a new process",
    "test_plugins.py::test_the_conformance_kit_checks_the_plugged_in_units": "the conformance kit in a new process",
    "test_packaging.py::test_the_wheel_in_a_fresh_venv": "a new venv, the wheel installed and trained",
    "test_packaging.py::test_the_command_works_from_a_folder_named_like_its_parts":
        "each command in a new process",
    "test_train_cli.py::test_a_resumed_run_stays_on_its_backend": "two trainings on torch",
    "test_export_cli.py": "one softgrad train on the shipped MNIST (1 epoch), which the file's tests export and import",
    "test_sklearn.py::test_scikit_learns_checks_on_array_api_strict":
        "scikit-learn's ~100 checks, each training 60 epochs on array-api-strict (about 30 s of CPU)",
    "test_sklearn.py::test_grid_search_with_two_processes": "two worker processes, each importing scikit-learn",
    "test_data_parallel.py::test_k_ranks_equal_one_process_on_compiled_backends":
        "JAX compiles every shard's shape anew; the CuPy kernels emulated on the CPU (about 60 s in all)",
    "test_distributed_gloo.py::test_collectives_on_two_ranks": "two spawned gloo ranks, each importing torch and JAX",
    "test_distributed_gloo.py::test_two_ranks_fit_as_one_process_on_the_global_batch":
        "two spawned gloo ranks, each importing torch, train beside a one-process fit",
    "test_distributed_gloo.py::test_a_dead_or_hung_rank_makes_the_other_raise_one_line_within_the_timeout":
        "two spawned gloo ranks per case, each importing torch; a hung rank is waited for past the 3 s timeout",
    "test_convnet.py::test_float64_trajectories_of_numpy_torch_and_autograd_agree":
        "20 float64 SGD steps of LeNet, the CIFAR-10 tutorial network and softmax regression on numpy, torch and "
        "torch autograd",
    "test_convnet.py::test_train_evaluate_predict_a_lenet": "three softgrad train runs (LeNet, resumed, a spec of "
        "its own) on 64 MNIST images, with their plots, then evaluate and predict",
    "test_torchrun.py": "three torchrun launches of 2 ranks each (one killed and restarted), each rank importing "
        "torch: about 50-90 s on 2 cores",
}


def _check_the_slow_list() -> None:
    """A renamed or deleted test would leave its entry matching nothing, and the test in the fast tier."""
    for entry in SLOW:
        file, _, test = entry.partition("::")
        path = ROOT / "tests" / file
        if not path.is_file() or (test and f"def {test}(" not in path.read_text()):
            raise pytest.UsageError(f"tests/conftest.py SLOW names {entry}, which is not in tests/")


def _is_slow(item: pytest.Item) -> bool:
    file = item.path.name
    return file in SLOW or f"{file}::{getattr(item, 'originalname', item.name)}" in SLOW


@pytest.hookimpl(tryfirst=True)  # before pytest's -m selection reads the marks
def pytest_collection_modifyitems(config, items):
    _check_the_slow_list()
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    # The slow tier first (a stable sort keeps each tier's order): xdist then hands the long tests out while
    # the short ones can still fill the other worker, and the run does not end on one worker's long tail.
    items.sort(key=lambda item: not _is_slow(item))
