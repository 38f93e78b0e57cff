"""backend="auto": a short probe picks the fastest available backend, and the pick is cached."""

from __future__ import annotations

import json

import pytest
from softgrad import datasets
from softgrad.training import auto, fit
from softgrad.training.models import MLP


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    return tmp_path / "auto-backend.json"


def test_auto_picks_the_fastest_probe_and_caches_it(cache, monkeypatch):
    rates = {"numpy": 10.0, "torch": 30.0}
    probed = []

    def fake_probe(name, widths, batch_size, dtype, seconds=0.0):
        probed.append(name)
        return rates.get(name, 1.0)

    monkeypatch.setattr(auto, "probe", fake_probe)
    monkeypatch.setattr(auto, "available_backends",
                        lambda: {"numpy": "available", "torch": "available", "cupy": "no CUDA device"})
    lines = []
    assert auto.pick_backend([4, 3], 8, log=lines.append) == "torch"
    assert probed == ["numpy", "torch"] and "probe: torch 30 samples/s, numpy 10 samples/s" in lines[0]
    assert auto.pick_backend([4, 3], 8, log=lines.append) == "torch"
    assert probed == ["numpy", "torch"] and "cached under a minute ago in" in lines[1]  # no second probe
    assert len(json.loads(cache.read_text())) == 1
    auto.pick_backend([4, 5, 3], 8, log=None)  # another network: probed again
    assert probed == ["numpy", "torch"] * 2


def test_real_probe_measures_a_rate(cache):
    assert auto.probe("numpy", [20, 8, 3], 16, "float32", seconds=0.02) > 0


def test_fit_with_auto_backend(cache):
    data = datasets.synthetic(n_train=200, n_test=50, num_features=6, num_classes=3)
    lines = []
    model = MLP([6, 8, 3])
    fit(model, data, backend="auto", epochs=1, batch_size=20, progress=False, log=lines.append)
    assert lines[0].startswith(f"backend auto: {model.be.name} (probe: ")
