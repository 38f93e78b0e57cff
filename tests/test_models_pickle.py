"""An MLP pickles, deep-copies and copies on every backend (issue 23): it names its backend, which the
unpickling process gets by name, and holds its parameters as NumPy arrays in the pickle."""

from __future__ import annotations

import copy
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
from softgrad import datasets
from softgrad.backends.numpy_backend import NumPyBackend
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.registry import get_backend, register_backend, unregister_backend
from softgrad.training.fitting import fit
from softgrad.training.inference import predict
from softgrad.training.models import MLP

from tests.conftest import ALL_BACKENDS, backend_param

# pickling gets the backend by its registry name, so these are the registered backends (the CuPy code emulated
# on the CPU is no registered backend: the `be` fixture's deepcopy tests cover it)
REGISTERED = [backend_param(name) for name in ALL_BACKENDS]
WIDTHS = [12, 16, 8, 3]


def small_data() -> datasets.Dataset:
    return datasets.synthetic(n_train=256, n_test=64, num_features=WIDTHS[0], num_classes=WIDTHS[-1], seed=2)


def host_params(model: MLP) -> list[np.ndarray]:
    return [np.array(model.be.to_numpy(p)) for p in model.params]


def assert_same_model(loaded: MLP, model: MLP, x: np.ndarray) -> None:
    """The same backend, configuration and attributes, the same parameters, and exactly the same outputs."""
    assert type(loaded) is MLP and loaded is not model
    assert loaded.be is model.be
    assert sorted(vars(loaded)) == sorted(vars(model))
    assert loaded.config() == model.config() and loaded.dtype == model.dtype
    assert (loaded.loss, loaded.target_mean, loaded.target_std) == (model.loss, model.target_mean, model.target_std)
    assert type(loaded.activation) is type(model.activation)
    for ours, theirs in zip(loaded.params, model.params, strict=True):
        assert type(ours) is type(theirs)
    for ours, theirs in zip(host_params(loaded), host_params(model), strict=True):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    with model.be.scope():
        rows = model.be.asarray(x.astype(model.dtype))
        assert np.array_equal(model.be.to_numpy(loaded.logits(rows)), model.be.to_numpy(model.logits(rows)))
    assert np.array_equal(predict(loaded, x), predict(model, x))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("name", REGISTERED)
def test_a_pickled_model_predicts_exactly_the_same(name, dtype, activation):
    model = MLP(WIDTHS, activation, seed=4, dtype=dtype, backend=name)
    for protocol in (pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        assert_same_model(pickle.loads(pickle.dumps(model, protocol=protocol)), model, small_data().x_test)


@pytest.mark.parametrize("name", REGISTERED)
def test_a_trained_model_round_trips(name):
    data = small_data()
    model = MLP(WIDTHS, seed=1, backend=name)
    fit(model, data, epochs=1, batch_size=32, log=None, progress=False)
    assert model.loss == "cross_entropy"
    assert_same_model(pickle.loads(pickle.dumps(model)), model, data.x_test)


def test_a_trained_regressor_keeps_its_target_scale():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 5)).astype(np.float32)
    y = (x @ rng.standard_normal((5, 2)) * 30 + 100).astype(np.float32)
    data = datasets.from_arrays(x[:96], y[:96], x[96:], y[96:], task="regression", standardise_targets=True)
    model = MLP([5, 8, 2], seed=0)
    fit(model, data, epochs=1, batch_size=32, log=None, progress=False)
    assert model.target_std is not None
    loaded = pickle.loads(pickle.dumps(model))
    assert_same_model(loaded, model, x[96:])


@pytest.mark.parametrize("name", REGISTERED)
def test_pickle_protocol_5_out_of_band_and_as_multiprocessing_sends_it(name):
    """What multiprocessing does with a model sent to a worker (its ForkingPickler), and protocol 5 with the
    parameters' buffers out of band (as a shared-memory transport sends them), without a process."""
    model = MLP(WIDTHS, seed=6, backend=name)
    x = small_data().x_test
    assert_same_model(pickle.loads(ForkingPickler.dumps(model)), model, x)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    assert buffers  # the NumPy parameters went out of band
    assert_same_model(pickle.loads(data, buffers=buffers), model, x)


def test_a_pickle_holds_numpy_arrays_and_the_backend_name_not_the_backend():
    model = MLP(WIDTHS, seed=0, backend="numpy")
    state = model.__getstate__()
    assert state["backend"] == "numpy" and "be" not in state and "activation" not in state
    assert all(type(p) is np.ndarray for p in state["params"])
    assert not any(np.shares_memory(p, q) for p, q in zip(state["params"], model.params))


class _VanishingBackend(NumPyBackend):
    name = "vanishing"


def test_unpickling_where_the_backend_is_unavailable_says_so_in_one_line():
    register_backend("vanishing", _VanishingBackend)
    try:
        data = pickle.dumps(MLP(WIDTHS, backend="vanishing"))
    finally:
        unregister_backend("vanishing")
    with pytest.raises(BackendUnavailableError) as raised:
        pickle.loads(data)
    message = str(raised.value)
    assert "\n" not in message and raised.value.__cause__ is None and raised.value.__suppress_context__
    assert "MLP 12-16-8-3" in message and "backend 'vanishing'" in message and ".to('numpy')" in message
    # the way out the message gives works
    register_backend("vanishing", _VanishingBackend)
    try:
        data = pickle.dumps(MLP(WIDTHS, backend="vanishing").to("numpy"))
    finally:
        unregister_backend("vanishing")
    assert pickle.loads(data).be is get_backend("numpy")


def test_a_pickle_of_another_format_is_refused():
    model = MLP(WIDTHS)
    state = model.__getstate__()
    state["pickle_format"] = 99
    with pytest.raises(ValueError, match="pickle format 99"):
        MLP.__new__(MLP).__setstate__(state)


@pytest.mark.parametrize("duplicate", [copy.deepcopy, copy.copy], ids=["deepcopy", "copy"])
def test_a_copy_is_an_independent_model(be, duplicate):
    data = small_data()
    model = MLP(WIDTHS, seed=3, backend=be)
    before = host_params(model)
    twin = duplicate(model)
    assert_same_model(twin, model, data.x_test)
    assert all(ours is not theirs for ours, theirs in zip(twin.params, model.params))
    assert twin.params is not model.params and twin.widths is not model.widths
    fit(twin, data, epochs=1, batch_size=32, log=None, progress=False)  # the optimizers write in place where they can
    assert not np.array_equal(host_params(twin)[0], before[0])
    for ours, theirs in zip(host_params(model), before, strict=True):
        assert np.array_equal(ours, theirs)
    assert model.loss is None and twin.loss == "cross_entropy"


def test_a_copy_changed_in_place_leaves_the_original():
    model = MLP(WIDTHS, seed=3)
    for duplicate in (copy.deepcopy, copy.copy):
        twin = duplicate(model)
        twin.params[0][...] = 0
        twin.widths.append(1)
        assert model.params[0].any() and model.widths == WIDTHS
        assert not any(np.shares_memory(p, q) for p, q in zip(twin.params, model.params))


def test_deepcopy_keeps_a_model_shared_within_what_it_copies():
    model = MLP(WIDTHS)
    first, second = copy.deepcopy([model, model])
    assert first is second and first is not model
