"""Atomic file writes, for every layer: a reader never sees a half-written file, and nothing is lost.

``atomic_write`` writes a temporary file beside the target and renames it into
place. It writes through a symbolic link to the link's target (the link
stays), refuses to replace anything that is not a regular file (a directory, a
FIFO, a device such as ``/dev/null``), keeps the temporary name short enough
for a target whose name is near the file-system limit, and never touches the
process umask (other threads may be creating files).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: the temporary files of atomic_write start with this (see remove_stale_temporaries)
TEMP_PREFIX = ".sg-"
TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only read by setting)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022  # the usual default, where /proc is not there


def writable_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` must replace: a symlink's target; refuses what is not a regular file."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target  # a new file
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"refusing to write {path}: it is a directory; give the path of a file")
    if not stat.S_ISREG(mode):
        raise OSError(f"refusing to write {path}: it is not a regular file (a FIFO, socket or device), "
                      "which a write would replace; give the path of a file")
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    A crash or an exception from ``write`` leaves the old file (if any) untouched
    and removes the temporary file.
    """
    target = writable_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a short name: the target's own name may be near the file-system limit (NAME_MAX)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed ``atomic_write`` left in ``folder``; returns what it removed.

    Only names of the form ``.sg-*.tmp`` (and the older ``.<name>.*.tmp`` of
    checkpoints) are touched.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for pattern in (f"{TEMP_PREFIX}*{TEMP_SUFFIX}", ".checkpoint.npz.*.tmp"):
        for stale in folder.glob(pattern):
            try:
                stale.unlink()
                removed.append(stale)
            except OSError:
                pass
    return removed
