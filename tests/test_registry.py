"""The registry: names, lazy imports, and the errors for backends that cannot run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from softgrad import Backend, BackendUnavailableError
from softgrad.backends import available_backends, backend_names, get_backend

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_numpy_backend_imports_no_framework():
    result = run_python(
        "import sys, core, backends\n"
        "be = backends.get_backend('numpy')\n"
        "import numpy as np\n"
        "be.cross_entropy(be.asarray(np.ones((2, 3))), be.asarray(np.array([0, 1])))\n"
        "print(sorted(m for m in ('torch', 'cupy') if m in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_backend_satisfies_the_protocol(be):
    assert isinstance(be, Backend)
    assert be.name in backend_names() or be.name.startswith("torch:cuda")
    assert isinstance(be.device, str)


def test_every_backend_has_every_hook(be):
    """The optional half of the protocol: every hook is there, its own or BackendDefaults' (one place)."""
    from softgrad.numerics.hooks import BackendHooks

    assert isinstance(be, BackendHooks)
    assert isinstance(be.on_gpu, bool)
    with be.scope():
        y = be.asarray(np.array([3, 0, 7, 2]))
        assert be.label_range(y) == (0, 7)
        assert be.all_finite(be.asarray(np.ones(3))) and not be.all_finite(be.asarray(np.array([1.0, np.nan])))
    be.check_array("op", "x", be.asarray(np.ones(2)))  # its own arrays pass


def test_the_two_parts_of_the_protocol_are_apart_and_each_hook_has_its_default():
    from softgrad.numerics.hooks import BackendDefaults, hook_names
    from softgrad.numerics.protocol import protocol_members

    assert not set(hook_names()) & set(protocol_members())
    assert all(name in vars(BackendDefaults) for name in hook_names())


def test_complete_gives_a_from_scratch_backend_the_defaults_and_leaves_a_shared_one_alone():
    from softgrad.numerics.hooks import BackendDefaults, hook_names
    from softgrad.numerics.protocol import complete, missing_members

    from tests.test_plugins import FromScratch

    be = complete(FromScratch())
    assert missing_members(be) == [] and all(hasattr(be, name) for name in hook_names())
    assert be.label_range.__func__ is BackendDefaults.label_range  # bound from the one class, not a copy
    shared = get_backend("numpy")
    before = dict(vars(shared))
    assert complete(shared) is shared and vars(shared) == before


def test_get_backend_returns_one_instance_per_name():
    assert get_backend("numpy") is get_backend("numpy")
    assert get_backend(get_backend("numpy")) is get_backend("numpy")


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'mlx'; known backends: numpy, .*torch"):
        get_backend("mlx")
    with pytest.raises(TypeError, match="expected a backend name"):
        get_backend(42)


def test_available_backends_gives_a_status_for_every_name():
    status = available_backends()
    assert list(status) == backend_names()
    assert status["numpy"] == "available"
    for name, reason in status.items():
        assert reason == "available" or name in reason


def test_missing_cuda_device_is_reported_with_its_reason():
    status = available_backends()
    for name in ("torch:cuda", "cupy"):
        if status[name] == "available":
            continue
        assert "no CUDA device" in status[name] or "pip install" in status[name]
        with pytest.raises(BackendUnavailableError, match=name):
            get_backend(name)


def test_missing_framework_names_the_pip_command():
    # Hide torch and cupy from the import system in a fresh interpreter.
    result = run_python(
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['cupy'] = None\n"
        "from softgrad.backends import available_backends\n"
        "for name, reason in available_backends().items(): print(name, '|', reason)\n"
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" | ", 1) for line in result.stdout.strip().splitlines())
    assert lines["numpy"] == "available"
    assert "needs PyTorch, which is not installed: pip install 'softgrad[torch]'" in lines["torch"]
    assert "pip install 'softgrad[torch]'" in lines["torch:cuda"]
    assert "needs CuPy, which is not installed" in lines["cupy"] and "pip install" in lines["cupy"]
