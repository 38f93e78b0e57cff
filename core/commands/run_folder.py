"""The run folder of ``softgrad train``: the files a run writes there, the folder's default name, and what is
checked before a run writes anywhere (a new run never replaces files it did not write)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from softgrad.numerics.files import LOCK_NAME, check_folder_writable, check_writable, writable_target
from softgrad.training.metrics_stream import METRICS_NAME
from softgrad.training.settings import RunSettings

#: every file a run writes in its folder: a new run never writes into a folder holding one of them
RUN_FILES = ("run.json", "checkpoint.npz", "history.json", METRICS_NAME, "curves.png", "predictions.png", "fit.png")


def default_out(settings: RunSettings) -> Path:
    """runs/<dataset>-<model>-<backend>-<time> (<dataset>: the file's stem for your own data, the --root folder's
    name where it extends the data set's, as cifar10-jpeg does), with -2, -3, ...
    where two runs start in the same second."""
    data = settings.data
    name = Path(data.data).stem if data.data is not None else data.dataset
    if data.data is None and data.root and Path(data.root).name.startswith(f"{name}-"):
        name = Path(data.root).name  # an altered copy's folder (cifar10-jpeg, fashion-mnist-approx) is named
    base = Path("runs") / (f"{name}-{settings.model.model}-{settings.backend.replace(':', '-')}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    out, n = base, 1
    while os.path.lexists(out):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def check_run_targets(out: Path | None, json_path: str | None, *, continues: bool, pick_free: bool) -> None:
    """The run folder ``out`` and ``--json``'s file, checked before anything is written: the folder can be
    made, is a new run's (unless the run ``continues`` there, or ``pick_free`` passes over to another name),
    and every file the run will replace can be replaced."""
    if out is not None:
        check_folder_can_be_made(out)
        if not continues and not pick_free:
            check_new_run_folder(out)
        for name in RUN_FILES:  # a file the run will replace must be one it can replace (no folder, FIFO, device)
            try:
                writable_target(out / name)
            except OSError as error:
                raise type(error)(f"--out {out}: {error}") from None
    if json_path:
        check_json_target(Path(json_path), out)


def continues_run(out: Path, resume: str | None, restarted: Path | None = None) -> bool:
    """Whether ``out`` is the folder of the run ``--resume`` continues (``resume``; ``restarted``: the folder
    of a run started again from the beginning): then its files are the run's own."""
    folder = restarted or (None if not resume else Path(resume).parent if Path(resume).suffix == ".npz"
                           else Path(resume))
    return folder is not None and os.path.realpath(folder) == os.path.realpath(out)


def check_new_run_folder(out: Path) -> None:
    """A new run's folder is new, or holds none of the files a run writes: nothing of anyone's is replaced."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if (out / "checkpoint.npz").exists() or (out / "run.json").exists():
        raise FileExistsError(f"--out {out} holds a run already: continue it with --resume {out}, or give "
                              "--out a new folder")
    found = [name for name in RUN_FILES if os.path.lexists(out / name)]
    if found:
        raise FileExistsError(f"--out {out} holds {', '.join(found)}, which this run would write: give --out a new "
                              "folder (a run never replaces files it did not write)")


def check_json_target(path: Path, out: Path | None) -> None:
    """``--json``: writable, none of the run's own files, and no file of anyone else's (an earlier history
    that this command wrote may be replaced)."""
    target = os.path.realpath(path)
    for name in (*RUN_FILES, LOCK_NAME) if out is not None else ():
        if target == os.path.realpath(out / name):
            raise ValueError(f"--json {path} is the run's own {name} in {out}: give another path")
    folder = Path(target).parent
    if Path(target).name in RUN_FILES and any((folder / name).is_file() for name in ("run.json", "checkpoint.npz")):
        raise ValueError(f"--json {path} is the {Path(target).name} of the run in {folder}: give another path")
    check_writable(path, "--json")
    if os.path.exists(target):
        try:
            with open(target, "rb") as handle:
                held = json.loads(handle.read(64 << 20))
            ours = isinstance(held, list) and all(isinstance(r, dict) and "epoch" in r for r in held)
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"--json {path} exists and holds something other than a training history: give "
                                  "a new path (a run never replaces files it did not write)")


def check_folder_can_be_made(folder: Path) -> None:
    """A clear error, before any work, for a run folder that could not be created or written."""
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in folder.parts:
        if len(part.encode()) > limit:
            raise ValueError(f"--out: the name {part[:40]}... is {len(part.encode())} bytes long; this file "
                             f"system allows {limit}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {folder}: cannot create or write in {existing}")
    check_folder_writable(folder, "--out")  # by a probe: root passes os.access on a read-only /proc


__all__ = ["RUN_FILES", "check_folder_can_be_made", "check_json_target", "check_new_run_folder",
           "check_run_targets", "continues_run", "default_out"]
