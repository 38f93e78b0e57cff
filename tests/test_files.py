"""Safe writes (softgrad.numerics.files): through a symlink to its target, never to anything but a regular file,
with the umask's mode, and the temporaries of a killed write removed at the next start."""

from __future__ import annotations

import os
import stat

import pytest
from softgrad.numerics.files import atomic_write_text, current_umask, remove_stale_temporaries


def test_writes_go_through_a_symlink_to_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_anything_but_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text("/dev/null", "x")


def test_a_name_at_the_length_limit_can_be_written(tmp_path):
    name = "h" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 5) + ".json"
    atomic_write_text(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}"


def test_the_file_mode_follows_the_umask_without_changing_it(tmp_path):
    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "f", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o640
        assert current_umask() == 0o027
    finally:
        os.umask(before)


def test_temporaries_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    from softgrad import datasets
    from softgrad.training import MLP, fit

    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".sg-xyz.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = tmp_path / "notes.tmp"
    keep.write_text("mine")
    data = datasets.synthetic(n_train=60, n_test=20, num_features=5, num_classes=2, seed=0)
    fit(MLP([5, 2]), data, epochs=1, batch_size=20, checkpoint_path=tmp_path / "checkpoint.npz", progress=False,
        log=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.jsonl", "notes.tmp"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
