"""The auto-backend cache, plugins that exit at import, the bench's
data checks, and the offline download of the image data sets."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from softgrad.training import auto

# ---- the auto-backend cache -------------------------

RATES = {"numpy": 10.0, "torch": 30.0}


@pytest.fixture
def picker(tmp_path, monkeypatch):
    """pick_backend with a fake probe that counts its calls; HOME and the current folder are empty folders."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SOFTGRAD_CACHE", raising=False)
    monkeypatch.delenv(auto.REPROBE_ENV, raising=False)
    probed: list[str] = []

    def fake_probe(name, widths, batch_size, dtype, seconds=0.0):
        probed.append(name)
        return RATES[name]

    monkeypatch.setattr(auto, "probe", fake_probe)
    monkeypatch.setattr(auto, "available_backends", lambda: {"numpy": "available", "torch": "available"})

    def pick() -> tuple[str, list[str]]:
        lines: list[str] = []
        # a FIFO that blocks the open would hang the suite: fail the test instead
        previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("pick_backend blocked"))
        signal.alarm(20)
        try:
            return auto.pick_backend([4, 3], 8, log=lines.append), lines
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    pick.probed = probed
    pick.home, pick.cwd = home, cwd
    return pick


def _warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if "ignoring the cache" in line]


def _user_file(folder, text: str = '{"mine": [1, 2, 3]}\n'):
    path = folder / "user.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["symlink to a JSON file", "symlink to a text file", "dangling symlink",
                                  "symlink to /dev/zero", "fifo", "directory"])
def test_a_cache_that_is_not_a_regular_file_is_neither_read_nor_written(picker, tmp_path, monkeypatch, kind):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    monkeypatch.setenv("SOFTGRAD_CACHE", str(cache_dir))
    path = cache_dir / "auto-backend.json"
    user = _user_file(tmp_path, "my notes\n" if "text" in kind else '{"mine": [1, 2, 3]}\n')
    before = user.read_bytes()
    if kind.startswith("symlink to a"):
        path.symlink_to(user)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "elsewhere.json")
    elif kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    for _ in range(2):  # never cached: probed each time, one warning each time
        choice, lines = picker()
        assert choice == "torch" and len(_warnings(lines)) == 1, lines
    assert picker.probed == ["numpy", "torch"] * 2
    assert user.read_bytes() == before and not (tmp_path / "elsewhere.json").exists()
    assert sorted(p.name for p in cache_dir.iterdir()) == ["auto-backend.json"]  # no temporaries left
    assert path.is_symlink() or kind in ("fifo", "directory")


def test_a_planted_answer_behind_a_symlink_is_not_read(picker, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    key = auto._cache_key([4, 3], 8, "float32", ["numpy", "torch"])
    user = _user_file(tmp_path, json.dumps({key: {"backend": "numpy", "reason": "planted", "time": time.time()}}))
    (tmp_path / "auto-backend.json").symlink_to(user)
    assert picker()[0] == "torch" and picker.probed == ["numpy", "torch"]


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                                  '{"k": ' + "[" * 100_000 + "]" * 100_000 + "}", "{nonsense", '["a list"]',
                                  '{"k": {"backend": "numpy", "reason": "an older format: no time"}}'])
def test_a_damaged_or_deeply_nested_cache_is_replaced(picker, tmp_path, monkeypatch, text):
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    (tmp_path / "auto-backend.json").write_text(text)
    choice, lines = picker()
    # one warning for a file that does not parse; an entry of an older format is just probed again
    assert choice == "torch" and len(_warnings(lines)) == (0 if "older format" in text else 1), lines
    saved = json.loads((tmp_path / "auto-backend.json").read_text())
    assert [entry["backend"] for entry in saved.values()] == ["torch"]  # only the new answer survives
    assert picker()[0] == "torch" and picker.probed == ["numpy", "torch"]  # and it is used


@pytest.mark.parametrize("value, where", [("", ".cache/softgrad/auto-backend.json"),
                                          ("  ", ".cache/softgrad/auto-backend.json"),
                                          ("~/x", "x/auto-backend.json"), ("~", "auto-backend.json")])
def test_softgrad_cache_empty_is_unset_and_tilde_is_home(picker, monkeypatch, value, where):
    monkeypatch.setenv("SOFTGRAD_CACHE", value)
    picker()
    assert list(picker.cwd.iterdir()) == []  # nothing in the current folder, no literal "~"
    assert (picker.home / where).is_file()


def test_a_cache_folder_that_is_a_file_is_reported_once_and_left_alone(picker, tmp_path, monkeypatch):
    blocker = _user_file(tmp_path, "x")
    monkeypatch.setenv("SOFTGRAD_CACHE", str(blocker))
    choice, lines = picker()
    assert choice == "torch" and len(_warnings(lines)) == 1 and "is not a folder" in lines[0]
    assert blocker.read_text() == "x"


def _plant(tmp_path, monkeypatch, age_s: float, backend: str = "numpy") -> None:
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    key = auto._cache_key([4, 3], 8, "float32", ["numpy", "torch"])
    (tmp_path / "auto-backend.json").write_text(json.dumps(
        {key: {"backend": backend, "reason": "probe: an earlier one", "time": time.time() - age_s}}))


@pytest.mark.parametrize("age_days, probed", [(6, False), (8, True), (30, True), (-400, True)])
def test_a_cached_answer_has_an_age_limit(picker, tmp_path, monkeypatch, age_days, probed):
    _plant(tmp_path, monkeypatch, age_days * 86400)  # older than a week, or from the future: probed again
    choice, lines = picker()
    assert choice == ("torch" if probed else "numpy") and bool(picker.probed) == probed
    if not probed:
        assert f"cached {age_days} days ago in {tmp_path / 'auto-backend.json'}" in lines[0]
        assert "SOFTGRAD_AUTO_REPROBE=1 probes again" in lines[0]
    else:  # the fresh answer replaces the stale one
        (entry,) = json.loads((tmp_path / "auto-backend.json").read_text()).values()
        assert entry["backend"] == "torch" and abs(entry["time"] - time.time()) < 600


@pytest.mark.parametrize("value, probed", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_softgrad_auto_reprobe_probes_again(picker, tmp_path, monkeypatch, value, probed):
    _plant(tmp_path, monkeypatch, 60)
    monkeypatch.setenv(auto.REPROBE_ENV, value)
    assert picker()[0] == ("torch" if probed else "numpy") and bool(picker.probed) == probed
    if probed:  # and the new answer is the cached one from then on
        monkeypatch.delenv(auto.REPROBE_ENV)
        assert picker()[0] == "torch" and picker.probed == ["numpy", "torch"]


# ---- a plugin that exits at import or at start ---------------------------------------------------

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


# ---- bench: the data checked before anything is measured ------------------------------------------

BENCH_FAST = ["--backend", "numpy", "--quick", "--model", "linear", "--batch-size", "256", "--repeats", "1"]


@pytest.fixture
def bench_main(monkeypatch):
    """bench's main, with its measuring replaced by a failure: a refusal must come before any of it."""
    import softgrad.bench.__main__ as bench_cli

    def measuring(*args, **kwargs):
        raise AssertionError("the bench started measuring before it refused")

    monkeypatch.setattr(bench_cli, "contender_processes", measuring)
    monkeypatch.setattr(bench_cli, "measure_ops", measuring)
    return bench_cli.main


def _idx_folder(folder, garbage: bool):
    folder.mkdir()
    if garbage:  # the four file names, holding no IDX data
        for stem in ("train", "t10k"):
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                (folder / f"{stem}-{kind}").write_bytes(b"garbage, not IDX")
    return folder


@pytest.mark.parametrize("dataset, garbage, expected", [
    ("fashion-mnist", False, "fashion-mnist: the data files are missing"),
    ("mnist", False, "mnist: the data files are missing"),
    ("fashion-mnist", True, "is not an IDX file"),
])
@pytest.mark.parametrize("ops", [True, False])
def test_bench_names_missing_data_before_it_measures(bench_main, tmp_path, capsys, dataset, garbage, expected, ops):
    root = _idx_folder(tmp_path / "root", garbage)
    assert bench_main([*BENCH_FAST, "--dataset", dataset, "--root", str(root), *([] if ops else ["--no-ops"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("bench: ") and expected in captured.err


@pytest.mark.parametrize("dataset", ["diabetes", "toy-regression"])
@pytest.mark.parametrize("ops", [True, False])
def test_bench_refuses_a_regression_data_set_in_one_line(bench_main, capsys, dataset, ops):
    with pytest.raises(SystemExit) as exit_:
        bench_main([*BENCH_FAST, "--dataset", dataset, *([] if ops else ["--no-ops"])])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"--dataset {dataset} is a regression data set" in captured.err and "bench.regression" in captured.err


# ---- --download without a network (Fashion-MNIST, CIFAR-10, MNIST) ------------------------------------------


def _proxy(monkeypatch, url: str) -> None:
    """Route urllib, as torchvision uses it, through ``url``: a network that fails in a known way."""
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener keeps the proxies it first saw
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, url)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]  # nothing listens there once it is closed


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "mnist"])
def test_download_without_a_network_says_so_in_one_line_and_makes_no_folder(tmp_path, monkeypatch, name):
    pytest.importorskip("torchvision")
    import torchvision.datasets
    from softgrad import datasets

    _proxy(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    for cls in ("MNIST", "FashionMNIST", "CIFAR10"):  # refused before torchvision is asked at all
        monkeypatch.setattr(getattr(torchvision.datasets, cls), "__init__",
                            lambda *a, **k: pytest.fail("torchvision was asked to download"))
    root = tmp_path / "data"
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(name, root=root, download=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name}: cannot download into {root}: no network (")
    assert "Connection refused" in message and "pass --root FOLDER" in message
    assert ("cifar-10-batches-py/" if name == "cifar10" else "t10k-labels-idx1-ubyte") in message
    assert not root.exists()


@pytest.fixture
def silent_proxy(monkeypatch):
    """A proxy that accepts connections (the kernel's backlog) and never answers: a stalled network."""
    import socket

    from softgrad.datasets import download

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    _proxy(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_S", 0.3)
    # a download with no timeout would wait on this proxy forever: fail the test instead
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the download did not time out"))
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    server.close()


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
@pytest.mark.parametrize("root_exists", [False, True])
def test_a_stalled_download_times_out_and_removes_only_the_empty_folders_it_made(tmp_path, silent_proxy, name,
                                                                                root_exists):
    pytest.importorskip("torchvision")
    import socket

    from softgrad import datasets

    root = tmp_path / "data"
    if root_exists:
        root.mkdir()
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(name, root=root, download=True)  # torchvision's own download, through the silent proxy
    message = str(error.value)
    assert "\n" not in message and "failed: the network did not answer" in message and "--root" in message
    assert "(no answer in time)" in message
    assert root.exists() == root_exists and (not root_exists or list(root.iterdir()) == [])
    assert socket.getdefaulttimeout() is None  # the download's timeout is not left behind


def test_an_http_error_is_not_called_a_missing_network(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    import http.server
    import threading

    from softgrad import datasets

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _proxy(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(datasets.DatasetError) as error:
            datasets.load("fashion-mnist", root=tmp_path / "data", download=True)  # an http:// mirror: proxied GET
    finally:
        server.shutdown()
    assert "404" in str(error.value) and "no network" not in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "data").exists()
