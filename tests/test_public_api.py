"""``import softgrad``: the public surface, pinned. Each name is the object its implementation module defines,
importing softgrad imports no array library, and no submodule hides a public name."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

# what a user imports from softgrad, and where each comes from; a change here is a change of the public API
PUBLIC = {
    "Backend": "softgrad.numerics.protocol",
    "BackendHooks": "softgrad.numerics.hooks",
    "BackendUnavailableError": "softgrad.numerics.errors",
    "CheckpointError": "softgrad.training.checkpoint",
    "Dataset": "softgrad.datasets",
    "DatasetError": "softgrad.datasets",
    "LOSSES": "softgrad.numerics.losses",
    "Loss": "softgrad.numerics.losses",
    "MLP": "softgrad.training.models",
    "ConvNet": "softgrad.training.convnet",
    "OPTIMIZERS": "softgrad.numerics.optim",
    "Optimizer": "softgrad.numerics.optim",
    "Reduction": "softgrad.numerics.protocol",
    "SGDState": "softgrad.numerics.optim.sgd",
    "StopTraining": "softgrad.training.fitting",
    "TensorBoardCallback": "softgrad.training.tensorboard",
    "read_metrics": "softgrad.training.metrics_stream",
    "TorchCommunicator": "softgrad.training.torch_communicator",
    "TrainingDivergedError": "softgrad.training.fitting",
    "available_backends": "softgrad.numerics.registry",
    "backend_names": "softgrad.numerics.registry",
    "classic_mlp": "softgrad.training.models",
    "evaluate": "softgrad.training.inference",
    "export": "softgrad.training.exporting",
    "fit": "softgrad.training.fitting",
    "from_arrays": "softgrad.datasets",
    "from_torch": "softgrad.training.torch_import",
    "get_backend": "softgrad.numerics.registry",
    "get_loss": "softgrad.numerics.losses",
    "get_optimizer": "softgrad.numerics.optim",
    "load": "softgrad.datasets",
    "method_of": "softgrad.numerics.methods",
    "predict": "softgrad.training.inference",
    "register_backend": "softgrad.numerics.registry",
    "register_loss": "softgrad.numerics.losses",
    "register_optimizer": "softgrad.numerics.optim",
    "softmax_regression": "softgrad.training.models",
}


def python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a clean sys.modules), from a folder that shadows nothing."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True, text=True,
                          timeout=120)


def test_all_is_the_pinned_surface():
    import softgrad

    assert sorted(softgrad.__all__) == sorted(PUBLIC)
    assert len(set(softgrad.__all__)) == len(softgrad.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_name_is_its_module_s_object(name):
    import softgrad

    assert getattr(softgrad, name) is getattr(importlib.import_module(PUBLIC[name]), name)


def test_star_import_and_dir_give_the_surface():
    namespace: dict = {}
    exec("from softgrad import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PUBLIC)
    import softgrad

    assert set(PUBLIC) | {"__version__"} <= set(dir(softgrad))


def test_the_version_is_the_distribution_s():
    import softgrad

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert softgrad.__version__ == importlib.metadata.version("softgrad") == pyproject["project"]["version"]


def test_importing_softgrad_imports_no_array_library_and_the_first_use_does():
    result = python("import sys, softgrad\n"
                    "heavy = ('numpy', 'torch', 'cupy', 'jax', 'matplotlib', 'softgrad.training')\n"
                    "print(sorted(m for m in heavy if m in sys.modules))\n"
                    "softgrad.__version__; softgrad.get_backend\n"
                    "print(sorted(m for m in heavy if m in sys.modules))\n"
                    "softgrad.fit\n"
                    "print('numpy' in sys.modules, 'softgrad.training' in sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[]", "[]", "True True"]


def test_the_command_s_module_never_hides_the_function_evaluate():
    """``softgrad.evaluate`` is the function, before and after the module of ``softgrad evaluate``
    (softgrad.commands.evaluate) is imported, whichever comes first."""
    result = python("import importlib, softgrad, softgrad.commands.evaluate, types\n"
                    "from softgrad.training.inference import evaluate\n"
                    "import softgrad.training\n"
                    "print(softgrad.evaluate is evaluate)\n"
                    "from softgrad import evaluate as e\n"
                    "print(e is evaluate)\n"
                    "module = importlib.import_module('softgrad.commands.evaluate')\n"
                    "print(isinstance(module, types.ModuleType), callable(module.main), softgrad.evaluate is evaluate)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True", "True"]


def test_subpackages_and_modules_still_import_by_name():
    import softgrad
    from softgrad import datasets
    from softgrad.commands import train

    assert datasets is sys.modules["softgrad.datasets"] and datasets.load is softgrad.load
    assert train is sys.modules["softgrad.commands.train"] and callable(train.main)


def test_an_unknown_name_is_an_attribute_error():
    import softgrad

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        softgrad.nope  # noqa: B018
    with pytest.raises(ImportError):
        from softgrad import nope  # noqa: F401


def test_the_readme_s_first_steps_in_python():
    """The names a newcomer uses, end to end on tiny data: load, a model, fit, evaluate, predict."""
    import numpy as np
    import softgrad

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = softgrad.from_arrays(x[:150], y[:150], x[150:], y[150:], classes=["no", "yes"])
    assert isinstance(data, softgrad.Dataset)
    model = softgrad.softmax_regression(4, 2, backend=softgrad.get_backend("numpy"))
    assert isinstance(model, softgrad.MLP)
    history = softgrad.fit(model, data, epochs=3, lr=0.5, progress=False, log=None)
    assert len(history) == 3
    figures = softgrad.evaluate(model, data.x_test, data.y_test)
    labels = softgrad.predict(model, data.x_test)
    # the accuracy evaluate reports is the share of predictions that match, counted here by hand
    assert figures["accuracy"] == pytest.approx(np.mean(labels == y[150:]))
    assert figures["accuracy"] > 0.9  # one feature decides the class: a linear model finds it
    assert "numpy" in softgrad.available_backends()
    assert "cross_entropy" in softgrad.LOSSES and softgrad.get_loss("cross_entropy").name == "cross_entropy"
    assert "sgd" in softgrad.OPTIMIZERS and softgrad.get_optimizer("sgd").name == "sgd"
    with pytest.raises(softgrad.BackendUnavailableError):
        softgrad.get_backend("no-such-backend")


def test_type_checkers_see_the_same_names_from_the_same_modules():
    """The TYPE_CHECKING imports of softgrad/__init__.py (what IDEs and type checkers read) match the surface."""
    import ast

    tree = ast.parse((ROOT / "core" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == PUBLIC
