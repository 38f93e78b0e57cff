"""--download without a network (softgrad.datasets.download; Fashion-MNIST, CIFAR-10, MNIST): one line that says
so, a timeout for a stalled network, an HTTP error named as such, and no folder left behind."""

from __future__ import annotations

import signal

import pytest


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
