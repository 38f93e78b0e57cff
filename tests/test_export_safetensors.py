"""softgrad.export to .safetensors and softgrad.from_torch, checked against torch itself.

The exported file loads into ``torch.nn.Sequential(Linear, act, ..., Linear)`` with ``strict=True`` through the
safetensors package, and torch, fed the raw MNIST test pixels (0..255, flattened, as the shipped IDX files hold
them), gives softgrad's logits on the normalised test set: float32 within 1e-5 of each row's largest logit, and the
same class for every one of the 10,000 images. The reverse: a torch network imported with from_torch predicts
what torch predicts. Crafted files are refused in one line before their data is read.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import softgrad  # noqa: E402
from softgrad.datasets import (  # noqa: E402
    DIABETES_N,
    DIABETES_N_TRAIN,
    DIABETES_SPLIT_SEED,
    SHIPPED_DIABETES,
    SHIPPED_MNIST,
)
from softgrad.datasets.idx import find_idx, read_idx  # noqa: E402
from softgrad.training.safetensors_io import HEADER_LIMIT, SafetensorsError, write_safetensors  # noqa: E402

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
               "leaky_relu": torch.nn.LeakyReLU}
#: float32 rounding, folded weights against unfolded ones: of each row's largest |output|, or of the outputs'
#: root mean square where that is larger (a single output near 0: one logit, a value, has no row to scale by)
RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch on one thread: its small steps spend more time waiting on a busy second core than computing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist():
    """The shipped MNIST, trained on 2,000 rows for speed; its record (and so its scaling) is the full set's."""
    data = softgrad.load("mnist")
    return dataclasses.replace(data, x_train=data.x_train[:2000], y_train=data.y_train[:2000])


@pytest.fixture(scope="module")
def raw_test() -> np.ndarray:
    """The 10,000 test images as the IDX file holds them: 0..255 pixels, flattened, as float32 for torch."""
    images = read_idx(find_idx(SHIPPED_MNIST, "t10k-images-idx3-ubyte"))
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    return images.reshape(10000, -1).astype(np.float32)


def torch_net(widths: list[int], activation: str) -> torch.nn.Sequential:
    layers: list = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers)


def load_into_torch(path, widths: list[int], activation: str) -> torch.nn.Sequential:
    net = torch_net(widths, activation)
    net.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    return net.eval()


def torch_outputs(net: torch.nn.Sequential, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    """Within RTOL of each row's scale (:data:`RTOL`); returns the largest relative difference (for the report)."""
    expected = np.asarray(expected, dtype=np.float64)
    typical = np.sqrt(np.mean(expected**2))
    scale = np.maximum(np.abs(expected).max(axis=1, keepdims=True), max(typical, np.finfo(np.float32).tiny))
    relative = float((np.abs(actual.astype(np.float64) - expected) / scale).max())
    assert relative <= RTOL, f"{what}: {relative:.3g} relative"
    print(f"{what}: largest relative difference {relative:.3g}")
    return relative


def logits(model, x) -> np.ndarray:
    return np.asarray(model.be.to_numpy(model.logits(model.be.asarray(x))), dtype=np.float64)


def test_the_raw_test_pixels_are_the_test_set_before_scaling(mnist, raw_test):
    assert np.array_equal(mnist.record().scaling.apply(raw_test), mnist.x_test)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_classifier_s_export_runs_in_torch_on_raw_pixels(mnist, raw_test, tmp_path, activation):
    model = softgrad.MLP([784, 24, 16, 10], activation, seed=3)
    softgrad.fit(model, mnist, epochs=1, lr=0.05, progress=False, log=None)
    path = softgrad.export(model, tmp_path / "m.safetensors", data=mnist)
    net = load_into_torch(path, model.widths, activation)
    ours, theirs = logits(model, mnist.x_test), torch_outputs(net, raw_test)
    assert_close(theirs, ours, f"{activation} classifier, torch on raw pixels")
    assert np.array_equal(theirs.argmax(axis=1), softgrad.predict(model, mnist.x_test))
    # and back: the file restores the model as trained, its data's scaling taken back out of the first layer
    back = softgrad.from_torch(path)
    assert back.trained_on == mnist.record() and back.loss == "cross_entropy" and back.widths == model.widths
    assert_close(logits(back, mnist.x_test), ours, f"{activation} classifier, exported and imported")
    assert np.array_equal(softgrad.predict(back, mnist.x_test), softgrad.predict(model, mnist.x_test))


def test_the_metadata_says_format_architecture_and_input(mnist, tmp_path):
    model = softgrad.MLP([784, 8, 10], "leaky_relu", seed=0)
    path = softgrad.export(model, tmp_path / "m.safetensors", data=mnist)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
        assert handle.get_slice("0.weight").get_shape() == [8, 784]
    assert meta["format"] == "pt"
    assert meta["architecture"] == "Sequential(Linear(784, 8), LeakyReLU(negative_slope=0.01), Linear(8, 10))"
    # the architecture is torch code: the module it builds takes the file's state dict as it is
    net = eval(meta["architecture"], {"Sequential": torch.nn.Sequential, "Linear": torch.nn.Linear,
                                      "LeakyReLU": torch.nn.LeakyReLU})
    net.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    assert net[1].negative_slope == 0.01
    assert json.loads(meta["widths"]) == [784, 8, 10] and meta["activation"] == "leaky_relu"
    assert json.loads(meta["input_shape"]) == [28, 28] and meta["dtype"] == "float32"
    assert "0..255" in meta["input"] and json.loads(meta["labels"]) == list(mnist.classes)


def test_a_binary_head_s_logit(mnist, raw_test, tmp_path):
    data = softgrad.datasets.binary(mnist, "0")
    model = softgrad.MLP([784, 16, 1], "relu", seed=1)
    softgrad.fit(model, data, loss="binary_cross_entropy_with_logits", epochs=1, lr=0.05, progress=False, log=None)
    path = softgrad.export(model, tmp_path / "b.safetensors", data=data)
    theirs = torch_outputs(load_into_torch(path, model.widths, "relu"), raw_test)
    assert_close(theirs, logits(model, data.x_test), "binary head, torch on raw pixels")
    assert np.array_equal((theirs[:, 0] > 0).astype(np.int64), softgrad.predict(model, data.x_test))
    back = softgrad.from_torch(path)
    assert back.loss == "binary_cross_entropy_with_logits" and back.trained_on.classes == ("not 0", "0")
    assert np.array_equal(softgrad.predict(back, data.x_test), softgrad.predict(model, data.x_test))


def raw_diabetes_test() -> np.ndarray:
    """diabetes' raw test rows, read from the shipped file and split as the loader documents it."""
    with gzip.open(SHIPPED_DIABETES / "diabetes_data_raw.csv.gz", "rt") as handle:
        features = np.loadtxt(handle)
    order = np.random.default_rng(DIABETES_SPLIT_SEED).permutation(DIABETES_N)
    return features[order[DIABETES_N_TRAIN:]]


def test_a_regressor_answers_in_the_data_s_units(tmp_path):
    data = softgrad.load("diabetes")
    model = softgrad.MLP([10, 16, 1], "tanh", seed=2)
    softgrad.fit(model, data, loss="mse_loss", epochs=30, lr=0.05, progress=False, log=None)
    raw = raw_diabetes_test()
    assert np.allclose(data.record().scaling.apply(raw), data.x_test)
    path = softgrad.export(model, tmp_path / "r.safetensors", data=data)
    theirs = torch_outputs(load_into_torch(path, model.widths, "tanh"), raw)
    values = softgrad.predict(model, data.x_test)  # in the data's units: the target scale applied
    assert values.std() > 1 and 25 < values.mean() < 350  # disease progression, not standardised values
    assert_close(theirs, values, "regressor, torch on raw features against softgrad.predict")
    back = softgrad.from_torch(path)
    assert back.target_std == model.target_std and back.target_mean == model.target_mean
    assert_close(softgrad.predict(back, data.x_test), values, "regressor, exported and imported")


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_torch_network_imported_predicts_what_torch_predicts(activation):
    torch.manual_seed(0)
    net = torch_net([784, 20, 12, 10], activation).eval()
    with torch.no_grad():  # torch's initialisation, scaled up so the weights, not the biases, decide the class
        for layer in net[::2]:
            layer.weight.mul_(4.0)
    x = np.random.default_rng(0).normal(size=(2000, 784)).astype(np.float32)
    theirs = torch_outputs(net, x)
    for source in (net, net.state_dict()):
        model = softgrad.from_torch(source, activation=activation)
        assert_close(logits(model, x), theirs, f"{activation}: torch network imported")
        predicted = softgrad.predict(model, x)
        assert np.array_equal(predicted, theirs.argmax(axis=1)) and len(np.unique(predicted)) > 1


@pytest.fixture(scope="module")
def torch_train() -> np.ndarray:
    """2,000 training images as a torch user feeds them: the IDX file's pixels / 255, flattened."""
    return read_idx(find_idx(SHIPPED_MNIST, "train-images-idx3-ubyte"))[:2000].reshape(2000, -1) / np.float32(255)


def train_torch(net: torch.nn.Sequential, x: np.ndarray, y: np.ndarray, loss) -> torch.nn.Sequential:
    """A few hundred Adam steps in torch itself: a network that really classifies, made without softgrad."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _epoch in range(3):
        for start in range(0, len(x), 50):
            optimizer.zero_grad()
            loss(net(inputs[start:start + 50]), targets[start:start + 50]).backward()
            optimizer.step()
    return net.eval()


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_network_trained_in_torch_predicts_the_same_in_softgrad(mnist, raw_test, torch_train, activation):
    """Torch's own MNIST classifier (on pixels / 255, as a torch user feeds them), imported: softgrad's logits on
    the 10,000 test images are torch's, and so is every class."""
    torch.manual_seed(0)
    net = train_torch(torch_net([784, 24, 10], activation), torch_train, mnist.y_train[:2000],
                      torch.nn.functional.cross_entropy)
    x = raw_test / np.float32(255)
    theirs = torch_outputs(net, x)
    model = softgrad.from_torch(net)
    assert_close(logits(model, x), theirs, f"{activation}: trained in torch, imported")
    predicted = softgrad.predict(model, x)
    assert np.array_equal(predicted, theirs.argmax(axis=1)) and np.mean(predicted == mnist.y_test) > 0.7


def test_a_binary_network_trained_in_torch_predicts_the_same_in_softgrad(mnist, raw_test, torch_train):
    is_zero = (mnist.y_train[:2000] == 0).astype(np.float32)[:, None]
    net = train_torch(torch_net([784, 16, 1], "relu"), torch_train, is_zero,
                      torch.nn.functional.binary_cross_entropy_with_logits)
    x = raw_test / np.float32(255)
    theirs = torch_outputs(net, x)
    model = softgrad.from_torch(net, head="sigmoid", labels=["not 0", "0"])
    assert_close(logits(model, x), theirs, "binary head: trained in torch, imported")
    predicted = softgrad.predict(model, x)
    assert np.array_equal(predicted, (theirs[:, 0] > 0).astype(np.int64))
    assert np.mean(predicted == (mnist.y_test == 0)) > 0.9 and predicted.sum() > 100


def test_a_state_dict_file_with_its_activation_given(raw_test, tmp_path):
    torch.manual_seed(1)
    net = torch_net([784, 10, 1], "tanh").eval()
    safetensors_torch.save_file(net.state_dict(), str(tmp_path / "n.safetensors"))
    with pytest.raises(ValueError, match="give activation="):
        softgrad.from_torch(tmp_path / "n.safetensors")
    with pytest.raises(ValueError, match="give head="):
        softgrad.from_torch(tmp_path / "n.safetensors", activation="tanh")
    model = softgrad.from_torch(tmp_path / "n.safetensors", activation="tanh", head="identity")
    theirs = torch_outputs(net, raw_test[:500] / 255)
    assert_close(softgrad.predict(model, raw_test[:500] / 255), theirs, "a regressor's state dict file")


def test_a_sequential_with_flatten_and_a_softmax_head(raw_test):
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Sigmoid(),
                              torch.nn.Dropout(0.1), torch.nn.Linear(10, 4), torch.nn.Softmax(dim=1)).eval()
    model = softgrad.from_torch(net)
    assert model.activation_name == "sigmoid" and model.loss == "cross_entropy"
    x = raw_test[:300] / 255
    assert np.array_equal(softgrad.predict(model, x), torch_outputs(net, x).argmax(axis=1))


@pytest.mark.parametrize("net, words", [
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)),
     "module 1 (BatchNorm1d) is not supported"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 3), torch.nn.Tanh(),
                                 torch.nn.Linear(3, 2)), "mixes activations (relu, tanh)"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)), "no activation between"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(5, 2)),
     "takes 5 inputs but '0.weight' gives 3"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Linear(3, 2)),
     "negative_slope is 0.2"),
    (lambda: torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)),
     "module 0 (ReLU) comes before the first Linear"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2), torch.nn.ReLU()),
     "module 3 (ReLU) follows the last Linear"),
])
def test_unsupported_networks_are_one_line(net, words):
    with pytest.raises(ValueError) as error:
        softgrad.from_torch(net())
    assert words in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_state_dict_of_named_layers_keeps_their_order():
    """torch lists a state dict's modules as registered: "output" after "hidden", whatever the alphabet says."""
    from collections import OrderedDict

    torch.manual_seed(3)
    net = torch.nn.Sequential(OrderedDict(zeta=torch.nn.Linear(6, 5), act=torch.nn.Tanh(),
                                          alpha=torch.nn.Linear(5, 5), act2=torch.nn.Tanh(),
                                          out=torch.nn.Linear(5, 3))).eval()
    x = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    model = softgrad.from_torch(net.state_dict(), activation="tanh")
    assert_close(logits(model, x), torch_outputs(net, x), "named layers, imported in their order")


def test_an_activation_that_contradicts_the_network_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="activation='tanh', but the network says 'relu'"):
        softgrad.from_torch(net, activation="tanh")


# ---- crafted files ------------------------------------------------------------------------------


def good_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"0.weight": rng.normal(size=(3, 4)).astype(np.float32), "0.bias": np.zeros(3, np.float32),
            "2.weight": rng.normal(size=(2, 3)).astype(np.float32), "2.bias": np.zeros(2, np.float32)}


def crafted(path, header: dict, data: bytes = b"") -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def refused(path, *words: str, **options) -> str:
    with pytest.raises(SafetensorsError) as error:  # a ValueError: the command line's one line, status 2
        softgrad.from_torch(path, activation="relu", **options)
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def test_a_huge_header_length_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    refused(path, f"more than the {HEADER_LIMIT:,}")
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    refused(path, "truncated")
    path.write_bytes(b"abc")
    refused(path, "not a safetensors file")


def test_a_tensor_larger_than_the_file_is_refused_before_allocating_it(tmp_path):
    path = tmp_path / "big.safetensors"
    crafted(path, {"0.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}})
    refused(path, "truncated", "4,398,046,511,104 bytes")


def test_a_shape_that_does_not_fill_its_offsets_is_refused(tmp_path):
    path = tmp_path / "shape.safetensors"
    crafted(path, {"0.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 40]}}, bytes(40))
    refused(path, "declares shape (3, 4) of F32 (48 bytes)", "40 bytes")


def test_wrong_shapes_a_missing_key_and_a_wrong_dtype_are_refused(tmp_path):
    tensors = good_tensors()
    write_safetensors(tmp_path / "chain.safetensors", {**tensors, "2.weight": np.zeros((2, 5), np.float32)}, {})
    refused(tmp_path / "chain.safetensors", "'2.weight' takes 5 inputs but '0.weight' gives 3")
    write_safetensors(tmp_path / "bias.safetensors", {**tensors, "0.bias": np.zeros(4, np.float32)}, {})
    refused(tmp_path / "bias.safetensors", "'0.bias' has shape (4,)")
    write_safetensors(tmp_path / "widths.safetensors", tensors, {"widths": "[4, 3, 3]"})
    refused(tmp_path / "widths.safetensors", "declares layer widths [4, 3, 3]", "[4, 3, 2]")
    missing = {k: v for k, v in tensors.items() if k != "2.weight"}
    write_safetensors(tmp_path / "missing.safetensors", missing, {})
    refused(tmp_path / "missing.safetensors", "layer '2' has a bias but no weight")
    crafted(tmp_path / "int.safetensors", {"0.weight": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
            bytes(8))
    refused(tmp_path / "int.safetensors", "'0.weight' is 'I64'")
    write_safetensors(tmp_path / "other.safetensors", {**tensors, "3.running_mean": np.zeros(2, np.float32)}, {})
    refused(tmp_path / "other.safetensors", "'3.running_mean' is no Linear layer's weight or bias")


def test_non_finite_weights_are_refused(tmp_path):
    tensors = good_tensors()
    tensors["2.weight"][1, 2] = np.nan
    write_safetensors(tmp_path / "nan.safetensors", tensors, {})
    refused(tmp_path / "nan.safetensors", "'2.weight' holds 1 NaN or infinite value")


def test_an_existing_file_is_replaced_only_when_asked(mnist, tmp_path):
    model = softgrad.MLP([784, 4, 10], seed=0)
    path = tmp_path / "m.safetensors"
    path.write_text("the user's own file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        softgrad.export(model, path, data=mnist)
    assert path.read_text() == "the user's own file"
    softgrad.export(model, path, data=mnist, overwrite=True)
    assert sorted(safetensors_torch.load_file(str(path))) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left beside it
    with pytest.raises(ValueError, match="the format is chosen by the suffix"):
        softgrad.export(model, tmp_path / "m.bin")


def test_a_diverged_model_is_not_exported(mnist, tmp_path):
    model = softgrad.MLP([784, 4, 10], seed=0)
    model.params[2][1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite values"):
        softgrad.export(model, tmp_path / "m.safetensors", data=mnist)
    assert not any(tmp_path.iterdir())
