"""Atomic file writes, for every layer: a reader never sees a half-written file, and nothing is lost.

``atomic_write`` writes a temporary file beside the target and renames it into
place. It writes through a symbolic link to the link's target (the link
stays), refuses to replace anything that is not a regular file (a directory, a
FIFO, a device such as ``/dev/null``), keeps the temporary name short enough
for a target whose name is near the file-system limit, and never touches the
process umask (other threads may be creating files).

A temporary is locked (``flock``) from its creation until it is renamed into
place, so ``remove_stale_temporaries`` removes only what a killed writer left
and never another live writer's temporary. ``claim_folder`` makes a run folder
one process's at a time.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the folder claim and the temporaries go unlocked
    fcntl = None  # type: ignore[assignment]

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
    fd, tmp = _locked_temporary(target.parent)
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


def _locked_temporary(folder: Path) -> tuple[int, str]:
    """A new temporary file in ``folder``, open and locked, that no cleanup has removed."""
    while True:
        # a short name: the target's own name may be near the file-system limit (NAME_MAX)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        if fcntl is None:
            return fd, tmp
        # between mkstemp and the lock a cleanup may have taken the file for a stale one and removed it:
        # the lock waits for that cleanup, and a removed file (no links left) is made again
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed ``atomic_write`` left in ``folder``; returns what it removed.

    Only names of the form ``.sg-*.tmp`` (and the older ``.<name>.*.tmp`` of
    checkpoints) are touched, and only those no live write holds locked: a
    temporary another process (or thread) is writing stays.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for pattern in (f"{TEMP_PREFIX}*{TEMP_SUFFIX}", ".checkpoint.npz.*.tmp"):
        for stale in folder.glob(pattern):
            if _remove_if_unlocked(stale):
                removed.append(stale)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    if fcntl is None:
        with contextlib.suppress(OSError):
            path.unlink()
            return True
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False  # gone already, a link, or not ours to read
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live write holds it
        # held: its writer is dead, and a writer that has yet to lock it will find it removed and start again
        try:
            if os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd)):
                path.unlink()
                return True
        except OSError:
            pass
        return False
    finally:
        os.close(fd)


# ---- checking where outputs go, before any work --------------------------------------------------------


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """A clear error, before any work, for a file that could not be written: ``what`` names it (``--json``).

    The file itself is checked as :func:`writable_target` does; its folder (or the nearest one that
    exists, where the folders are still to be made) by creating and removing a temporary file there:
    permission bits alone say nothing for root, nor of a read-only or virtual file system (``/proc``).
    """
    # the folder first: a path through a file (/etc/hostname/x) is named as such, not as "Not a directory"
    check_folder_writable(Path(os.path.realpath(path)).parent, what, path)
    try:
        return writable_target(path)
    except OSError as error:
        raise type(error)(f"{what} {path}: {error.args[-1] if error.args else error}") from None


def check_folder_writable(folder: str | os.PathLike, what: str, shown: str | os.PathLike | None = None) -> None:
    """A clear error for a folder that could not be made or written in (by a probe, see ``check_writable``)."""
    shown = folder if shown is None else shown
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {shown}: cannot create or write in {existing}: it is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    except OSError as error:
        reason = error.strerror or str(error)
        raise PermissionError(f"{what} {shown}: cannot create or write in {existing} ({reason})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


# ---- a run folder owned by one process at a time ----------------------------------------------------------

#: the lock file a run keeps in its folder while it runs (removed when it ends)
LOCK_NAME = ".softgrad-run.lock"


class FolderBusyError(OSError):
    """Another process (or thread) is running in the folder."""


_claims: dict[str, list] = {}  # folder -> [fd, owning thread, depth]
_claims_lock = threading.Lock()


@contextlib.contextmanager
def claim_folder(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Own ``folder`` (made if missing) while the block runs: an exclusive ``flock`` on a lock file in it.

    Another process, or another thread of this one, claiming the same folder meanwhile gets a
    :class:`FolderBusyError` naming the holder; the thread that holds it may claim it again (the command
    line claims the run folder, then ``fit`` does). A killed holder's lock goes with it: the lock file
    left behind is no claim. The folders the claim made are removed at its end where nothing was written
    in them (a run refused before its first file leaves no empty folder). Yields the folder.
    """
    folder = Path(folder)
    made, missing = [], Path(os.path.abspath(folder))
    while not os.path.lexists(missing) and missing != missing.parent:
        made.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    me = threading.get_ident()
    with _claims_lock:
        held = _claims.get(key)
        if held is not None:
            if held[1] != me:
                raise FolderBusyError(f"{what} {folder} is in use by another thread of this process")
            held[2] += 1
            fd = None
        else:
            fd = _lock_folder(folder, what)
            _claims[key] = [fd, me, 1]
    try:
        yield folder
    finally:
        with _claims_lock:
            held = _claims[key]
            held[2] -= 1
            if held[2] == 0:
                del _claims[key]
                _unlock_folder(folder, held[0])
                for empty in made:  # innermost first; one that holds anything stays
                    with contextlib.suppress(OSError):
                        empty.rmdir()


def _lock_folder(folder: Path, what: str) -> int | None:
    if fcntl is None:
        return None
    lock = folder / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError, IndexError):
                holder = f" (process {int(os.pread(fd, 32, 0).split()[0])})"
            os.close(fd)
            raise FolderBusyError(f"{what} {folder} is in use by another run{holder}; wait for it to end, or "
                                  "give another folder") from None
        # the holder before us may have removed the file as it ended (see _unlock_folder): a lock on a
        # removed file claims nothing, so lock the file that is there now
        try:
            if os.path.samestat(os.stat(lock, follow_symlinks=False), os.fstat(fd)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock_folder(folder: Path, fd: int | None) -> None:
    if fd is None:
        return
    # removed while still locked, so no one can lock this file and think they own the folder
    with contextlib.suppress(OSError):
        (folder / LOCK_NAME).unlink()
    os.close(fd)
