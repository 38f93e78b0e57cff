"""torchvision's downloads, made to fail fast and in one line where there is no network.

torchvision opens its URLs with no timeout, so a network that drops packets
leaves ``--download`` waiting for minutes per mirror, then raises the raw URL
error, and the folders it made stay behind, empty. Here a download is
preceded by a short check that a mirror (or the proxy urllib would use) can be
reached at all; the download itself runs under a socket timeout; and a
failure is one line that says there is no network and how to point ``--root``
at a local copy, with the folders the attempt created removed again if they
are empty (files it completed stay, for the next attempt).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

PREFLIGHT_TIMEOUT_S = 10.0  # to resolve a mirror's host and open a connection to it
DOWNLOAD_TIMEOUT_S = 15.0  # for any one connect or read of the download itself: a dead link fails in seconds

#: what ``--root`` must hold for each data set, for the message that offers a local copy instead
LOCAL_LAYOUT = {
    "mnist": "the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
             "t10k-labels-idx1-ubyte; .gz or not), directly or in MNIST/raw/",
    "fashion-mnist": "the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                     "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz or not), directly or in "
                     "FashionMNIST/raw/",
    "cifar10": "cifar-10-batches-py/ (the Python version, cifar-10-python.tar.gz, extracted)",
}


def source_urls(cls: type) -> list[str]:
    """The URLs torchvision's dataset class downloads from: a mirror per entry (MNIST), or its one ``url``."""
    mirrors = getattr(cls, "mirrors", None)
    if isinstance(mirrors, (list, tuple)) and mirrors:
        return [str(m) for m in mirrors]
    url = getattr(cls, "url", None)
    return [url] if isinstance(url, str) else []


def _endpoint(url: str) -> tuple[str, int] | None:
    """The host and port a request for ``url`` connects to: the proxy's where urllib would use one."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxied.hostname:
            return proxied.hostname, proxied.port or 80
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(urls: list[str], timeout: float = PREFLIGHT_TIMEOUT_S) -> str | None:
    """None if any of ``urls`` can be connected to within ``timeout`` seconds; else why not, in a few words.

    Each attempt runs in a daemon thread, so a resolver that never answers (which no socket timeout
    bounds) costs ``timeout`` and no more.
    """
    endpoints = list(dict.fromkeys(e for e in map(_endpoint, urls) if e is not None))
    if not endpoints:
        return None  # nothing to check: let torchvision try
    reached = threading.Event()
    errors: dict[tuple[str, int], str] = {}

    def attempt(endpoint: tuple[str, int]) -> None:
        try:
            with socket.create_connection(endpoint, timeout=timeout):
                reached.set()
        except OSError as error:
            errors[endpoint] = _reason(error)

    threads = [threading.Thread(target=attempt, args=(e,), daemon=True) for e in endpoints]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1.0)
        if reached.is_set():
            return None
    host, port = endpoints[0]
    return f"{host}:{port}: {errors.get(endpoints[0], f'no answer within {timeout:.0f} s')}"


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, socket.gaierror):
        return "the name cannot be resolved"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _network_failure(error: BaseException) -> bool:
    """Whether torchvision's ``error`` is the network's: urllib's, a socket's, or MNIST's mirror summary."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, urllib.error.HTTPError):
            return False  # the server answered (404, 403): not a missing network
        if isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror)):
            return True
        if isinstance(error, RuntimeError) and "Error downloading" in str(error):
            # MNIST's: every mirror failed; its text holds each mirror's URL error, an HTTP status if one answered
            return "HTTP Error" not in str(error)
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib's default timeout while torchvision downloads (it passes none of its own); restored after."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first: a parent is empty only once its child is gone
        with contextlib.suppress(OSError):  # not empty (files the attempt completed), or not ours any more
            folder.rmdir()


def download(name: str, fetch: Callable[[], object], urls: list[str], root: Path, deepest: Path,
             error_type: type[Exception]) -> None:
    """Run ``fetch`` (torchvision's download of ``name`` into ``root``) fast-failing without a network.

    ``deepest``: the folder torchvision creates for the files; those of it and its parents that the
    attempt created are removed again on failure when empty. Raises ``error_type`` with one line.
    """
    local = (f"copy the data set from a machine that has it and pass --root FOLDER (root= in Python; or set "
             f"SOFTGRAD_DATA), where FOLDER holds {LOCAL_LAYOUT.get(name, 'its files')}")
    problem = unreachable(urls)
    if problem is not None:  # before torchvision makes a folder
        raise error_type(f"{name}: cannot download into {root}: no network ({problem}); {local}")
    created = _missing_folders(Path(os.path.abspath(deepest)))
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            fetch()
    except KeyboardInterrupt:
        _remove_if_empty(created)
        raise
    except Exception as error:  # URLError, HTTPError, OSError, RuntimeError from torchvision
        _remove_if_empty(created)
        if _network_failure(error):
            reason = _reason(error) if not isinstance(error, RuntimeError) else "no mirror answered"
            raise error_type(f"{name}: downloading into {root} failed: the network did not answer ({reason}); "
                             f"{local}") from None
        text = " ".join(str(error).split())
        raise error_type(f"{name}: downloading into {root} failed: {type(error).__name__}: {text}") from None


__all__ = ["DOWNLOAD_TIMEOUT_S", "LOCAL_LAYOUT", "PREFLIGHT_TIMEOUT_S", "download", "source_urls", "unreachable"]
