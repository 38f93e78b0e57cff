"""Checkpoints: model, optimizer state and history in one ``.npz``, no pickle.

Written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash never leaves a half-written checkpoint. Arrays are stored as NumPy
arrays, so a checkpoint written on one backend loads on any other.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from core.models import MLP
from core.protocol import Backend
from core.sgd import SGDState

FORMAT = "softgrad-checkpoint-1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def save(path: str | os.PathLike, model: MLP, state: SGDState, history: list[dict], settings: dict) -> None:
    be = model.be
    arrays: dict[str, np.ndarray] = {f"param_{i}": be.to_numpy(p) for i, p in enumerate(model.params)}
    if state.momentum_buffers is not None:
        arrays.update({f"momentum_{i}": be.to_numpy(b) for i, b in enumerate(state.momentum_buffers)})
    meta = {"format": FORMAT, "model": model.config(), "step": state.step, "history": history,
            "settings": settings, "backend": be.name}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load(path: str | os.PathLike, backend: Backend | str = "numpy") -> tuple[MLP, SGDState, list[dict], dict]:
    """``(model, sgd_state, history, settings)`` with the arrays on ``backend``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            count = len([k for k in archive.files if k.startswith("param_")])
            params = [archive[f"param_{i}"] for i in range(count)]
            has_momentum = "momentum_0" in archive.files
            buffers = [archive[f"momentum_{i}"] for i in range(count)] if has_momentum else None
        config, step = meta["model"], int(meta["step"])
        history, settings = list(meta["history"]), dict(meta["settings"])
    except (ValueError, KeyError, TypeError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a softgrad checkpoint or is damaged: {error!r}") from None
    model = MLP.from_config(config, params, backend)
    be = model.be
    state = SGDState(step=step, momentum_buffers=None if buffers is None else tuple(be.asarray(b) for b in buffers))
    return model, state, history, settings


