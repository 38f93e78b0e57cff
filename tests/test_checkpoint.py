"""Damaged and crafted checkpoints (softgrad.training.checkpoint): each is refused with a CheckpointError naming
the problem, before anything is allocated."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from softgrad import datasets
    from softgrad.training import MLP, fit

    path = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    data = datasets.synthetic(n_train=60, n_test=20, num_features=5, num_classes=3, seed=0)
    fit(MLP([5, 4, 3], seed=0), data, epochs=1, batch_size=20, checkpoint_path=path, progress=False, log=None)
    return path.read_bytes()


def _rewrite(tmp_path, good: bytes, change) -> os.PathLike:
    import io
    import json

    with np.load(io.BytesIO(good)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "crafted.npz"
    np.savez(path, **arrays)
    return path


def test_truncated_and_bit_flipped_checkpoints_raise_a_checkpoint_error(tmp_path, good_checkpoint):
    from softgrad.training.checkpoint import CheckpointError, load

    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.npz"
    cuts = sorted(set(rng.integers(0, len(good_checkpoint), 40).tolist()) | {0, 1, 30, len(good_checkpoint) - 1})
    for cut in cuts:
        path.write_bytes(good_checkpoint[:cut])
        with pytest.raises(CheckpointError, match="damaged.npz"):
            load(path)
    survived = 0
    for position in rng.integers(0, len(good_checkpoint), 60):
        damaged = bytearray(good_checkpoint)
        damaged[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            load(path)  # a flip in the raw float data can leave a valid checkpoint; nothing else may pass
            survived += 1
        except CheckpointError as error:
            assert "damaged.npz" in str(error)
    assert survived < 60


@pytest.mark.parametrize("change, message", [
    (lambda m, a: m["model"].update(widths=[100_000, 100_000, 3]), r"the model needs \(100000, 100000\)"),
    (lambda m, a: m["model"].update(widths="5-4-3"), "widths"),
    (lambda m, a: m.update(model=[5, 4, 3]), "model description"),
    (lambda m, a: m.pop("history"), "history"),
    (lambda m, a: m.update(format="softgrad-checkpoint-9"), "format"),
    (lambda m, a: a.update(param_0=a["param_0"].astype(np.complex128)), "complex128, not float32"),
    (lambda m, a: a.update(param_1=np.array(["a", "b", "c", "d"])), "not float32"),
    (lambda m, a: a.update({"state.momentum_buffers.0": np.zeros((4, 5), np.float32)}),
     "momentum_buffers 0 of its sgd state has shape"),
    (lambda m, a: m["optimizer"].update(name="lion"), "unknown optimizer 'lion'"),
    (lambda m, a: m["optimizer"].update(state=[]), "optimizer state"),
])
def test_crafted_checkpoints_are_refused_before_anything_is_allocated(tmp_path, good_checkpoint, change, message):
    from softgrad.training.checkpoint import CheckpointError, load

    with pytest.raises(CheckpointError, match=message):
        load(_rewrite(tmp_path, good_checkpoint, change))


def test_a_member_that_inflates_far_beyond_the_model_is_refused(tmp_path, good_checkpoint):
    from softgrad.training.checkpoint import CheckpointError, load

    path = _rewrite(tmp_path, good_checkpoint, lambda m, a: a.update(param_0=np.zeros((5, 4), np.float32)))
    import zipfile

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "param_0.npy":
                data = data + bytes(200 << 20)  # 200 MB of zeros, a few hundred kB compressed
            target.writestr(item, data)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="would take"):
        load(bomb)
