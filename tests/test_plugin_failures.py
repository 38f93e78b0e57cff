"""A backend plugin that exits at import or at start (softgrad.numerics.registry): reported as its failure, never
ending the program, and Ctrl-C still the user's interrupt."""

from __future__ import annotations

import pytest
from softgrad.training import auto

EXITS = {
    "exit3": "import sys\nsys.exit(3)",
    "exit0": "import sys\nsys.exit(0)",
    "exit-message": "raise SystemExit('plugin says bye')",
    "base-exception": "class Boom(BaseException):\n    pass\nraise Boom('boom')",
    "generator-exit": "raise GeneratorExit('odd')",
}
EXIT_REASONS = {"exit3": "it called sys.exit(3)", "exit0": "it called sys.exit(0)",
                "exit-message": "it called sys.exit('plugin says bye')", "base-exception": "Boom: boom",
                "generator-exit": "GeneratorExit: odd"}


@pytest.fixture
def exiting_plugins(tmp_path, monkeypatch):
    """Per behaviour, a backend whose module does it at import (an entry point) and one whose factory does
    it when the backend starts (register_backend); all removed afterwards."""
    import importlib.metadata
    import textwrap

    from softgrad.numerics import registry

    monkeypatch.syspath_prepend(str(tmp_path))
    names = []
    for label, code in EXITS.items():
        module = f"sg_exit_{label.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(code + "\n")
        entry_point = importlib.metadata.EntryPoint(f"import-{label}", f"{module}:Backend", "softgrad.backends")
        registry._discover()
        with registry._lock:
            registry._entries[f"import-{label}"] = registry._Entry(f"import-{label}", entry_point=entry_point)
        namespace: dict = {}
        exec("def factory(*args):\n" + textwrap.indent(code, "    "), namespace)
        registry.register_backend(f"start-{label}", namespace["factory"])
        names += [f"import-{label}", f"start-{label}"]
    yield names
    for name in names:
        registry.unregister_backend(name)


def test_a_plugin_that_exits_is_reported_as_its_failure(exiting_plugins):
    from softgrad.backends import BackendUnavailableError, available_backends, get_backend

    status = available_backends()  # returns: no SystemExit escapes
    assert status["numpy"] == "available"
    for label, reason in EXIT_REASONS.items():
        assert status[f"import-{label}"].startswith(f"backend 'import-{label}': its plugin failed to import")
        assert status[f"start-{label}"].startswith(f"backend 'start-{label}' failed to start")
        for stage in ("import", "start"):
            assert status[f"{stage}-{label}"].endswith(reason) and "\n" not in status[f"{stage}-{label}"]
            with pytest.raises(BackendUnavailableError, match=f"{stage}-{label}"):
                get_backend(f"{stage}-{label}")


def test_ctrl_c_in_a_plugin_is_still_the_users_interrupt():
    from softgrad.backends import get_backend, register_backend, unregister_backend

    def interrupted():
        raise KeyboardInterrupt

    register_backend("interrupted", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            get_backend("interrupted")
    finally:
        unregister_backend("interrupted")


def test_the_conformance_kit_and_auto_survive_a_plugin_that_exits(exiting_plugins, tmp_path, monkeypatch, capsys):
    from softgrad.backends.conformance.__main__ import main as conformance

    assert conformance(["import-exit3", "--examples", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "import-exit3" in err and "it called sys.exit(3)" in err
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    monkeypatch.setattr(auto, "probe", lambda name, *args, **kwargs: 1.0)
    assert auto.pick_backend([4, 3], 8, log=None) not in exiting_plugins  # a working backend, chosen
