"""``backend="auto"``, resolved here and nowhere else: the fastest available backend for a network.

A short probe trains the actual network shape on random data for a fraction
of a second per available backend, device synchronised, and keeps the
fastest. The answer is cached per machine, library versions, network, batch
size and dtype in ``$SOFTGRAD_CACHE/auto-backend.json`` (default
``~/.cache/softgrad``; an empty ``SOFTGRAD_CACHE`` counts as unset, as the XDG
variables do, and ``~`` is expanded) for :data:`MAX_AGE_S` (7 days), so later
runs pick at once; ``SOFTGRAD_AUTO_REPROBE=1`` probes again and replaces the
cached answer (a probe taken while the machine was busy, say).

The cache is a regular file this program writes and owns. Anything else at
its path (a symbolic link, a FIFO, a directory, another user's file, a file
over 1 MiB) is neither read nor written: the run probes, says so in one
warning, and leaves it alone. A file that does not parse (damaged, or JSON
nested past the parser's limit) is replaced by the next probe's answer, with
one warning too.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from softgrad.numerics.files import TEMP_PREFIX, TEMP_SUFFIX, current_umask
from softgrad.numerics.protocol import Backend
from softgrad.numerics.registry import available_backends, get_backend
from softgrad.training.convnet import ConvNet
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings
from softgrad.training.step import train_step

PROBE_SECONDS = 0.15  # per backend, after warm-up
CACHE_NAME = "auto-backend.json"
MAX_AGE_S = 7 * 24 * 3600  # a probe is a snapshot of the machine's load: a week, then it is taken again
CLOCK_SKEW_S = 3600  # an answer dated this far ahead (a clock set back) still counts; further is stale
MAX_CACHE_BYTES = 1 << 20  # thousands of answers; a larger file is not ours to read into memory
REPROBE_ENV = "SOFTGRAD_AUTO_REPROBE"


def cache_file() -> Path:
    """``$SOFTGRAD_CACHE/auto-backend.json``, ``~`` expanded; an unset or empty variable means ``~/.cache/softgrad``."""
    root = os.environ.get("SOFTGRAD_CACHE", "").strip()
    # empty counts as unset (as XDG_CACHE_HOME does): never the current folder
    folder = Path(os.path.expanduser(root)) if root else Path.home() / ".cache" / "softgrad"
    return folder / CACHE_NAME


def reprobe_requested() -> bool:
    """``SOFTGRAD_AUTO_REPROBE`` set to anything but empty, 0, false or no."""
    return os.environ.get(REPROBE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _cache_key(widths: Sequence[int], batch_size: int, dtype: str, candidates: list[str]) -> str:
    from softgrad.numerics.machine import cpu_name, gpu_name, versions

    network = dict(widths) if isinstance(widths, Mapping) else list(widths)
    return json.dumps({"widths": network, "batch_size": batch_size, "dtype": dtype, "candidates": candidates,
                       "cpu": cpu_name(), "cpus": os.cpu_count(), "gpu": gpu_name(), "versions": versions()},
                      sort_keys=True)


DAMAGED = "it does not parse as the cache"  # a file of ours, damaged: warned about, then replaced


def _read_cache(path: Path) -> tuple[dict, str | None]:
    """The cache's valid entries, and why the file at ``path`` is not the program's to use (None if it is;
    a reason starting with :data:`DAMAGED` where it is ours but unreadable, and may be replaced).

    Opened without following a symbolic link and without blocking (a FIFO opens at once and is then
    refused by its type); checked to be a regular file of this user's before a byte is read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():  # Windows: no O_NOFOLLOW
            return {}, "it is a symbolic link"
        fd = os.open(path, flags)
    except FileNotFoundError:
        return {}, None  # no cache yet
    except OSError as error:
        if path.is_symlink():  # ELOOP from O_NOFOLLOW
            return {}, "it is a symbolic link"
        if isinstance(error, NotADirectoryError):
            return {}, f"{path.parent} is not a folder"
        return {}, f"it cannot be read: {error.strerror or error}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "not a regular file")
            return {}, f"it is {kind}"
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            return {}, f"it belongs to another user (uid {info.st_uid})"
        if info.st_size > MAX_CACHE_BYTES:
            return {}, f"it holds {info.st_size:,} bytes, more than a cache of answers ever does"
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(MAX_CACHE_BYTES + 1)
    except OSError as error:
        return {}, f"it cannot be read: {error.strerror or error}"
    finally:
        os.close(fd)
    try:
        cache = json.loads(raw)
    except (ValueError, RecursionError) as error:  # damaged, or nested past the parser's depth: replaced
        return {}, DAMAGED + (" (nested too deep)" if isinstance(error, RecursionError) else "")
    if not isinstance(cache, dict):
        return {}, DAMAGED + f" (a JSON {type(cache).__name__}, not an object)"
    # only well-formed answers are kept (and written back): nothing deep or foreign survives a rewrite
    return {key: entry for key, entry in cache.items() if _valid(entry)}, None


def _valid(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("backend"), str)
            and isinstance(entry.get("reason"), str) and entry["reason"].isprintable()
            and isinstance(entry.get("time"), (int, float)) and not isinstance(entry["time"], bool)
            and math.isfinite(entry["time"]))


def _age_s(entry: dict, now: float) -> float | None:
    """Seconds since the answer was probed, or None where it is too old, or dated ahead of the clock."""
    age = now - entry["time"]
    return max(age, 0.0) if -CLOCK_SKEW_S <= age <= MAX_AGE_S else None


def _write_cache(path: Path, cache: dict) -> None:
    """Replace ``path`` atomically with ``cache``: a temporary file renamed over the path itself, so a
    symbolic link or anything else put there meanwhile is replaced, never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps(cache, indent=1).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _warn(message: str, log: Callable[[str], None] | None) -> None:
    if log:
        log(message)
    else:  # a quiet run still hears about a cache it cannot use, once, as a library warning
        warnings.warn(message, stacklevel=3)


def _describe_age(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def network_of(model: Any) -> Sequence[int] | dict:
    """What the probe builds for ``model``: an MLP's widths, or a ConvNet's config (``"kind": "convnet"``)."""
    return model.config() if isinstance(model, ConvNet) else model.widths


def probe(name: str, widths: Sequence[int] | Mapping, batch_size: int, dtype: str,
          seconds: float = PROBE_SECONDS) -> float:
    """Training samples per second of ``name`` on random data shaped like the real run (``widths``: an MLP's,
    or a ConvNet's config, :func:`network_of`)."""
    be = get_backend(name)
    if isinstance(widths, Mapping):
        model: Any = ConvNet(widths["layers"], widths["input_shape"], widths["num_classes"], dtype=dtype, backend=be)
    else:
        model = MLP(widths, seed=0, dtype=dtype, backend=be)
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal((batch_size, model.num_features)).astype(dtype))
    y = be.asarray(rng.integers(0, model.num_outputs, batch_size))
    settings = TrainSettings()
    state = settings.optimizer_definition.init_on(be, model.params)
    for _ in range(3):  # warm-up
        _, _, state = train_step(model, x, y, state, 1e-3, settings)
    be.synchronize()
    steps, start = 0, time.perf_counter()
    while True:
        _, _, state = train_step(model, x, y, state, 1e-3, settings)
        steps += 1
        if steps % 5 == 0:
            be.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps * batch_size / elapsed


def pick_backend(widths: Sequence[int] | Mapping, batch_size: int, dtype: str = "float32",
                 log: Callable[[str], None] | None = print) -> str:
    """The name of the fastest available backend for this network and batch size.

    A cached answer younger than :data:`MAX_AGE_S` is used unless ``SOFTGRAD_AUTO_REPROBE`` is set; the
    message says which, and how to probe again.
    """
    candidates = [name for name, status in available_backends().items() if status == "available"]
    key = _cache_key(widths, batch_size, dtype, candidates)
    path = cache_file()
    cache, problem = _read_cache(path)
    if problem and problem.startswith(DAMAGED):
        _warn(f"backend auto: ignoring the cache {path}: {problem}; this probe's answer replaces it", log)
        problem = None  # a damaged file of this user's: replacing it loses nothing
    elif problem:
        _warn(f"backend auto: ignoring the cache {path}: {problem}; softgrad neither reads nor replaces it "
              "(remove it, or point SOFTGRAD_CACHE at another folder); probing", log)
    now = time.time()
    cache = {k: entry for k, entry in cache.items() if _age_s(entry, now) is not None}  # stale answers go
    choice = cache.get(key)
    if choice is not None and choice["backend"] in candidates and not reprobe_requested():
        if log:
            log(f"backend auto: {choice['backend']} (cached {_describe_age(_age_s(choice, now))} ago in {path}: "
                f"{choice['reason']}; {REPROBE_ENV}=1 probes again)")
        return choice["backend"]
    rates = {name: probe(name, widths, batch_size, dtype) for name in candidates}
    best = max(rates, key=rates.get)
    reason = "probe: " + ", ".join(f"{name} {rate:,.0f} samples/s" for name, rate in
                                   sorted(rates.items(), key=lambda item: -item[1]))
    saved = ""
    if not problem:
        cache[key] = {"backend": best, "reason": reason, "date": time.strftime("%Y-%m-%d"), "time": now}
        try:
            _write_cache(path, cache)
            saved = f"; cached for {MAX_AGE_S // 86400} days in {path}"
        except OSError as error:  # a read-only home, a file where the folder should be: the pick holds for this run
            _warn(f"backend auto: cannot save the pick in {path}: {error.strerror or error}; it holds for "
                  "this run only", log)
    if log:
        log(f"backend auto: {best} ({reason}, batch {batch_size}{saved})")
    return best


def resolve_backend(backend: Backend | str | None, widths: Sequence[int] | Mapping, batch_size: int, dtype: str = "float32",
                    log: Callable[[str], None] | None = print) -> Backend | str | None:
    """``backend`` as it is, unless it is ``"auto"``: then the name :func:`pick_backend` chooses."""
    if isinstance(backend, str) and backend == "auto":
        return pick_backend(widths, batch_size, dtype, log=log)
    return backend
