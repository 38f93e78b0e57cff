"""The layers run one way and imports never run in circles: the import-linter contracts in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed (pip install import-linter)")


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    """lint-imports on ``folder``, which holds pyproject.toml; its softgrad found there first where it has one."""
    return subprocess.run([LINT_IMPORTS, "--config", str(folder / "pyproject.toml"), "--no-cache"], cwd=folder,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(folder), "PATH": ""})


def copy_of_the_code(tmp_path: Path) -> Path:
    """The package as the wheel lays it out: core/ with the links core/backends, core/datasets and core/bench
    (to the repository's folders, as pyproject's package-dir maps them) followed."""
    shutil.copytree(ROOT / "core", tmp_path / "softgrad", ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold():
    """In the checkout itself, as a developer runs lint-imports."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def add_line(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    assert after in text
    path.write_text(text.replace(after, after + line, 1))


def test_an_import_of_a_higher_layer_inside_a_function_breaks_the_contract(tmp_path):
    code = copy_of_the_code(tmp_path)
    add_line(code / "softgrad/numerics/registry.py", "def backend_names() -> list[str]:\n",
             "    import softgrad.backends.numpy_backend  # noqa: F401\n")
    result = lint_imports(code)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "softgrad.numerics.registry -> softgrad.backends.numpy_backend" in result.stdout


def test_a_circle_between_sibling_modules_breaks_the_contract(tmp_path):
    code = copy_of_the_code(tmp_path)  # runs already imports auto; auto importing runs closes a circle
    add_line(code / "softgrad/training/auto.py", "def cache_file() -> Path:\n",
             "    import softgrad.training.runs  # noqa: F401\n")
    result = lint_imports(code)
    assert result.returncode == 1 and "Imports do not run in circles" in result.stdout
    assert "BROKEN" in result.stdout


def test_the_bottom_layer_imports_no_array_library():
    code = ("import sys, softgrad, softgrad.numerics, softgrad.backends\n"
            "print(sorted(m for m in ('numpy', 'torch', 'cupy', 'array_api_strict') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
