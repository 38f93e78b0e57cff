"""The auto-backend cache (softgrad.training.auto): where it lives, what it reads and writes, and when a cached
answer is used or probed again."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings

import pytest
from softgrad.training import auto

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


def test_a_damaged_auto_cache_is_ignored_and_an_enormous_batch_is_not_probed(tmp_path, monkeypatch):
    import json

    from softgrad import datasets
    from softgrad.training import MLP, auto, fit

    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    probed = []
    monkeypatch.setattr(auto, "probe", lambda name, widths, batch_size, dtype: probed.append(batch_size) or 1.0)
    data = datasets.synthetic(n_train=50, n_test=10, num_features=4, num_classes=2, seed=0)
    for damaged, warned in (("[1, 2, 3]", True), ("{not json", True), (json.dumps({"anything": "else"}), False)):
        (tmp_path / "auto-backend.json").write_text(damaged)
        with warnings.catch_warnings(record=True) as caught:  # one warning for a cache that does not parse
            warnings.simplefilter("always")
            fit(MLP([4, 2]), data, backend="auto", epochs=1, batch_size=10**9, progress=False, log=None)
        said = [str(w.message) for w in caught if "ignoring the cache" in str(w.message)]
        assert len(said) == warned, said
    assert probed and set(probed) == {50}
    assert isinstance(json.loads((tmp_path / "auto-backend.json").read_text()), dict)
