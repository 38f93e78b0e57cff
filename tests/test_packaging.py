"""The wheel installs one top-level name, ``softgrad``, and the command works from anywhere: from a folder that
holds directories named ``datasets``, ``core`` and ``bench``, and beside a package named ``datasets`` (Hugging
Face's), which keeps working in the same process.

Hugging Face's real ``datasets`` is too heavy to install for the suite (pyarrow, pandas and more); a stand-in
top-level package ``datasets`` with a ``load_dataset`` takes its place: what could clash is the name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SOURCES = ("core", "backends", "datasets", "bench", "pyproject.toml", "README.md", "LICENSE")
# what the user's folders hold: packages named like the repository's folders, each failing loudly when imported
SHADOWS = ("datasets", "core", "bench", "backends")
TRAIN = ["train", "--dataset", "synthetic", "--model", "linear", "--epochs", "1", "--quiet"]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOFTGRAD_DEBUG", "PYTHONSAFEPATH")}
    return {**env, "MPLBACKEND": "Agg", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built as ``pip wheel`` builds it, from a copy of the sources (the build writes build/ and
    an egg-info beside them, which the working tree must not get)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "results")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--no-index", "--quiet", "-w", str(out), str(source)],
                            capture_output=True, text=True, timeout=300, env=environment())
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("*.whl")
    return built


def shadowing_folder(path: Path) -> Path:
    """A user's project folder whose directories are named like the repository's, each a package that fails
    when imported (so a command that imported one would say so)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in SHADOWS:
        (path / name).mkdir()
        (path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}/ was imported')\n")
    return path


def hugging_face_stand_in(path: Path) -> Path:
    """A top-level package ``datasets`` with ``load_dataset``, as Hugging Face's has."""
    (path / "datasets").mkdir(parents=True)
    (path / "datasets" / "__init__.py").write_text(textwrap.dedent("""\
        '''A stand-in for Hugging Face's datasets (its name and its best-known function).'''
        __version__ = "0.0-stand-in"


        def load_dataset(name, *args, **kwargs):
            return f"hugging face: {name}"
        """))
    return path


def test_the_wheel_holds_only_softgrad(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"softgrad", f"softgrad-{VERSION}.dist-info"}
    info = f"softgrad-{VERSION}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    # the package as the repository's folders lay it out, with the shipped data and the command
    for path in ("softgrad/__init__.py", "softgrad/__main__.py", "softgrad/commands/train.py", "softgrad/numerics/registry.py",
                 "softgrad/training/fitting.py", "softgrad/backends/numpy_backend.py",
                 "softgrad/backends/conformance/__main__.py", "softgrad/datasets/__init__.py",
                 "softgrad/bench/__main__.py", "softgrad/datasets/data/mnist/README.md",
                 "softgrad/datasets/data/diabetes/README.md"):
        assert path in names, path
    assert any(n.startswith("softgrad/datasets/data/mnist/") and n.endswith(".gz") for n in names)


def test_the_wheel_s_metadata(wheel):
    archive = zipfile.ZipFile(wheel)
    info = f"softgrad-{VERSION}.dist-info"
    metadata = archive.read(f"{info}/METADATA").decode()
    headers = metadata.split("\n\n")[0].splitlines()
    summary = next(line for line in headers if line.startswith("Summary: "))
    for word in ("classifiers", "regressors", "NumPy", "PyTorch", "JAX", "CuPy", "array-api-strict"):
        assert word in summary, word
    assert "License-Expression: MIT" in headers and "License-File: LICENSE" in headers
    assert "Project-URL: Homepage, https://github.com/softgrad/softgrad" in headers
    # the base install: the NumPy backend, the offline MNIST (shipped), the command line, the plots
    requires = {line.split(": ", 1)[1] for line in headers if line.startswith("Requires-Dist: ")}
    base = {r.split(">")[0].split(";")[0].strip() for r in requires if "extra ==" not in r}
    assert base == {"numpy", "array-api-compat", "rich", "matplotlib"}
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\nsoftgrad = softgrad.__main__:main\n" in entry_points
    assert "numpy = softgrad.backends.numpy_backend:NumPyBackend" in entry_points


def test_the_links_in_core_lay_out_the_package_dir_mapping():
    """core/<name> links to ../<name> for each folder pyproject maps into softgrad (and nothing else links)."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    inner = {package.split(".", 1)[1]: folder for package, folder in mapping.items() if package != "softgrad"}
    links = {path.name: os.readlink(path) for path in (ROOT / "core").iterdir() if path.is_symlink()}
    assert links == {name: f"../{folder}" for name, folder in inner.items()}
    assert mapping["softgrad"] == "core"


def test_the_package_list_holds_every_package_folder():
    """pyproject.toml lists its packages by hand (the package-dir mapping): every folder of the repository's
    that holds Python files is in the list, as a real package (an __init__.py), and nothing else but the
    data folders, which hold their data."""
    tool = PYPROJECT["tool"]["setuptools"]
    mapping = tool["package-dir"]  # {"softgrad": "core", "softgrad.backends": "backends", ...}

    def folder(package: str) -> Path:
        outer = max((o for o in mapping if package == o or package.startswith(f"{o}.")), key=len)
        return ROOT / mapping[outer] / Path(*package[len(outer):].split(".")[1:])

    found = {".".join([package, *path.parent.relative_to(ROOT / where).parts])
             for package, where in mapping.items() for path in (ROOT / where).rglob("*.py")
             if "__pycache__" not in path.parts}
    data = set(tool["package-data"])
    assert set(tool["packages"]) == found | data
    for package in found:
        assert (folder(package) / "__init__.py").is_file(), package
    for package in data:
        assert any(folder(package).glob("*.gz")) and (folder(package) / "README.md").is_file(), package


@pytest.mark.parametrize("runner", ["python -m softgrad", "console script"])
def test_the_command_works_from_a_folder_named_like_its_parts(tmp_path, runner):
    """``cd myproject && softgrad train``, where myproject/ holds datasets/, core/, bench/ and backends/."""
    script = shutil.which("softgrad", path=str(Path(sys.executable).parent))
    if runner == "console script" and script is None:
        pytest.skip("the console script softgrad is not installed in this environment (pip install -e .)")
    argv = [script] if runner == "console script" else [sys.executable, "-m", "softgrad"]
    project = shadowing_folder(tmp_path / "myproject")
    env = environment()
    version = subprocess.run([*argv, "--version"], cwd=project, capture_output=True, text=True, timeout=60,
                             env=env)
    assert version.returncode == 0 and version.stdout == f"softgrad {VERSION}\n", version.stderr
    if runner == "console script":
        return  # its sys.path starts at the script's folder, not here; training once is enough
    result = subprocess.run([*argv, *TRAIN, "--out", "run"], cwd=project, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test accuracy ") and (project / "run" / "checkpoint.npz").is_file()
    np.save(project / "samples.npy", np.zeros((2, 784), np.float32))
    for args, expected in ((["evaluate", "run"], "test accuracy "), (["predict", "run", "samples.npy"], "samples.npy: "),
                           (["bench", "--help"], "usage: "), (["conformance", "--help"], "usage: softgrad conformance")):
        result = subprocess.run([*argv, *args], cwd=project, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0 and expected in result.stdout, (args, result.stderr)
    # the folders were there to be found first: sys.path starts here under python -m
    probe = subprocess.run([sys.executable, "-c", "import datasets"], cwd=project, capture_output=True, text=True,
                           timeout=60, env=env)
    assert "the user's own datasets/ was imported" in probe.stderr


def test_softgrad_works_beside_a_top_level_datasets_package_in_one_process(tmp_path):
    site = hugging_face_stand_in(tmp_path / "site")
    code = textwrap.dedent("""\
        import sys
        from datasets import load_dataset
        from softgrad.__main__ import main
        status = main(sys.argv[1:-1])  # the last argument: the stand-in's folder
        import datasets, softgrad
        data = softgrad.load("synthetic", n_train=50, n_test=10, num_features=4, num_classes=2)
        print(status, load_dataset("mnist"), datasets.load_dataset is load_dataset, datasets.__version__,
              type(data).__module__, sys.modules["datasets"].__file__.startswith(sys.argv[-1]))
        """)
    result = subprocess.run([sys.executable, "-c", code, *TRAIN, "--out", str(tmp_path / "run"), str(site)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=environment(PYTHONPATH=str(site)))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "0 hugging face: mnist True 0.0-stand-in softgrad.datasets True", result.stdout


def test_the_wheel_in_a_fresh_venv(wheel, tmp_path):
    """Installed from the wheel into a new venv (beside a package named ``datasets`` installed there too),
    ``softgrad train --epochs 1`` works from a folder named like its parts, ``from datasets import
    load_dataset`` still works, and uninstalling softgrad leaves that package whole.

    The venv has no network: its dependencies (NumPy, matplotlib, ...) come from this environment's
    site-packages, put last on its path by a .pth file (whose own .pth files, the editable softgrad's among
    them, are not run). The NumPy backend runs without numba here (``SOFTGRAD_NUMBA=0``): what is tested is
    the install, and numba would compile its loops anew for the venv's copy, half a minute."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_borrowed_dependencies.pth").write_text("\n".join(ours) + "\n")
    stand_in = hugging_face_stand_in(tmp_path / "hf")
    (stand_in / "pyproject.toml").write_text('[project]\nname = "datasets"\nversion = "0.0"\n'
                                             '[build-system]\nrequires = ["setuptools"]\n'
                                             'build-backend = "setuptools.build_meta"\n'
                                             '[tool.setuptools]\npackages = ["datasets"]\n')

    def pip(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args, "--quiet",
                                 "--no-index", "--no-deps", "--disable-pip-version-check"],
                                capture_output=True, text=True, timeout=300, env=environment(), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    pip("install", "--no-build-isolation", str(stand_in))
    pip("install", str(wheel))
    top_level = sorted(p.name for p in site.iterdir() if not p.name.endswith((".pth", ".dist-info"))
                       and p.name != "__pycache__")
    assert top_level == ["datasets", "softgrad"]
    project = shadowing_folder(tmp_path / "myproject")
    env = environment(SOFTGRAD_NUMBA="0")  # NumPy's own passes: numba would compile its loops anew for this venv
    where = subprocess.run([str(python), "-c", "import softgrad, datasets; print(softgrad.__file__); "
                            "print(datasets.load_dataset('x'))"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [str(site / "softgrad" / "__init__.py"), "hugging face: x"]
    result = subprocess.run([str(venv / "bin" / "softgrad"), *TRAIN, "--out", "run"], cwd=project,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test accuracy ") and (project / "run" / "checkpoint.npz").is_file()
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "uninstall", "--yes",
                             "--quiet", "softgrad"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert not (site / "softgrad").exists()
    assert (site / "datasets" / "__init__.py").is_file()
