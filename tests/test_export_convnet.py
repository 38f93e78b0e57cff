"""softgrad.export and softgrad.from_torch for convolutional networks, checked against torch and onnxruntime.

References, each independent of the exporter: torch's own ``nn.Sequential`` of ``Conv2d``/``MaxPool2d``/
``AvgPool2d``/``Linear`` modules (written out here by hand, and loaded from the exported safetensors file with
``strict=True``), fed raw NCHW pixels; onnxruntime running the exported graph on softgrad's flat raw rows; and
the torch network's own outputs for what from_torch imports. softgrad's side is the model's logits on the rows
its data set normalises (the raw test pixels become them exactly, checked first).

LeNet pads its first convolution, so the input scaling cannot be folded into it (the padded border would see
the scaled zero): the file begins with the scaling as ``Conv2d(1, 1, 1)``. The CIFAR-10 tutorial network pads
nothing: its scaling is folded into the first convolution, and its HWC rows are permuted to NCHW. The models
are untrained (seeded), and small slices of images keep the file fast on the array-API convolution.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import softgrad
from softgrad.datasets import SHIPPED_MNIST, DataRecord, InputScaling, idx
from softgrad.training.convnet import ConvNet

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn

RTOL = 1e-5  # float32 logits, folded or permuted weights against the model's own: of each row's largest |logit|
N_IMAGES = 200
#: CIFAR-10's per-channel scaling, as softgrad's catalogue gives it
CIFAR_SCALING = InputScaling(255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist():
    return softgrad.load("mnist")


@pytest.fixture(scope="module")
def raw_mnist(mnist) -> np.ndarray:
    """The first test images as the IDX file holds them: 0..255 pixels, (N, 784) float32."""
    images = idx.read_idx(idx.find_idx(SHIPPED_MNIST, "t10k-images-idx3-ubyte"))[:N_IMAGES]
    raw = images.reshape(N_IMAGES, -1).astype(np.float32)
    assert np.array_equal(mnist.record().scaling.apply(raw), mnist.x_test[:N_IMAGES])
    return raw


def cifar_record(shape=(32, 32, 3), classes: int = 10) -> DataRecord:
    return DataRecord("cifar10", "classification", int(np.prod(shape)), tuple(f"c{i}" for i in range(classes)), (),
                      shape, CIFAR_SCALING)


@pytest.fixture(scope="module")
def raw_cifar() -> np.ndarray:
    """Random raw colour images, HWC-flattened rows (as CIFAR-10's loader gives them), 0..255 float32."""
    return np.random.default_rng(5).integers(0, 256, size=(64, 32 * 32 * 3)).astype(np.float32)


def nchw(raw: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Raw rows as torch's NCHW images: grey rows reshape, HWC rows reshape and permute."""
    if len(shape) == 2:
        return torch.from_numpy(raw.reshape(len(raw), 1, *shape).copy())
    return torch.from_numpy(raw.reshape(len(raw), *shape)).permute(0, 3, 1, 2).contiguous()


def logits(model, x) -> np.ndarray:
    return np.asarray(model.be.to_numpy(model.logits(model.be.asarray(x))), dtype=np.float64)


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> float:
    """Within ``rtol`` of each row's largest |expected|; returns the largest relative difference."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.maximum(np.abs(expected).max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    relative = float((np.abs(actual - expected) / scale).max())
    assert relative <= rtol, f"{what}: {relative:.3g} relative"
    print(f"{what}: largest relative difference {relative:.3g}")
    return relative


def lenet_torch() -> nn.Sequential:
    """LeNet as torch code, after the input scaling as a per-channel 1x1 convolution (its first conv pads)."""
    return nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120),
                         nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def tutorial_torch() -> nn.Sequential:
    """PyTorch's CIFAR-10 tutorial network as one Sequential (the scaling folded into its first conv)."""
    return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def load_torch(path, net: nn.Sequential) -> nn.Sequential:
    net.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    return net.eval()


def torch_logits(net: nn.Sequential, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(images).numpy()


# ---- out: safetensors into torch's nn.Sequential ----------------------------------------------------------


def test_lenet_s_file_loads_into_torch_and_gives_its_logits_on_raw_pixels(mnist, raw_mnist, tmp_path):
    model = ConvNet("lenet", (28, 28), 10, seed=1)
    path = softgrad.export(model, tmp_path / "lenet.safetensors", data=mnist)
    theirs = torch_logits(load_torch(path, lenet_torch()), nchw(raw_mnist, (28, 28)))
    ours = logits(model, mnist.x_test[:N_IMAGES])
    assert_close(theirs, ours, "lenet, torch on raw NCHW pixels")
    assert np.array_equal(theirs.argmax(axis=1), softgrad.predict(model, mnist.x_test[:N_IMAGES]))


def test_the_tutorial_network_s_file_folds_the_scaling_and_takes_nchw(raw_cifar, tmp_path):
    model = ConvNet("tutorial-cnn", (32, 32, 3), 10, seed=2)
    record = cifar_record()
    path = softgrad.export(model, tmp_path / "cnn.safetensors", data=record)
    theirs = torch_logits(load_torch(path, tutorial_torch()), nchw(raw_cifar, (32, 32, 3)))
    ours = logits(model, record.scaling.apply(raw_cifar))
    assert_close(theirs, ours, "tutorial-cnn, torch on raw NCHW pixels (scaling folded, HWC permuted)")
    assert np.array_equal(theirs.argmax(axis=1), softgrad.predict(model, record.scaling.apply(raw_cifar)))


def test_the_metadata_is_torch_code_and_says_the_input(mnist, tmp_path):
    model = ConvNet("lenet", (28, 28), 10, seed=0)
    path = softgrad.export(model, tmp_path / "m.safetensors", data=mnist)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta, keys = handle.metadata(), set(handle.keys())
    # the keys are torch's own state dict's for the Sequential written out by hand
    assert keys == set(lenet_torch().state_dict())
    net = eval(meta["architecture"], vars(nn))  # the architecture is torch code: it builds the module
    assert str(net) == str(lenet_torch())
    net.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    assert meta["format"] == "pt" and meta["input_layout"] == "NCHW" and meta["head"] == "softmax"
    assert "0..255" in meta["input"] and "(N, 1, 28, 28)" in meta["input"]
    assert json.loads(meta["input_shape"]) == [28, 28] and json.loads(meta["labels"]) == list(mnist.classes)


def test_the_colour_network_s_metadata_says_the_permutation(tmp_path):
    model = ConvNet("tutorial-cnn", (32, 32, 3), 10)
    path = softgrad.export(model, tmp_path / "m.safetensors", data=cifar_record())
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert str(eval(meta["architecture"], vars(nn))) == str(tutorial_torch())
    assert "(N, 3, 32, 32)" in meta["input"] and "permuted (2, 0, 1)" in meta["input"] and "folded" in meta["input"]


# ---- out: ONNX, run by onnxruntime ----------------------------------------------------------------------


def onnx_session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["lenet", "tutorial-cnn"])
def test_onnxruntime_runs_the_graph_on_raw_rows_as_softgrad_predicts(mnist, raw_mnist, raw_cifar, tmp_path, name):
    onnx = pytest.importorskip("onnx")
    shape, record, raw = ((28, 28), mnist.record(), raw_mnist) if name == "lenet" else \
        ((32, 32, 3), cifar_record(), raw_cifar)
    model = ConvNet(name, shape, 10, seed=3)
    path = softgrad.export(model, tmp_path / "m.onnx", data=record)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    used = {node.op_type for node in graph.graph.node}
    assert {"Conv", "MaxPool", "Relu", "Flatten", "Gemm", "Reshape"} <= used
    assert ("Transpose" in used) == (len(shape) == 3) and ("Mul" in used) == (name == "lenet")
    session = onnx_session(path)
    assert session.get_inputs()[0].shape == ["N", int(np.prod(shape))]
    probabilities, class_index, label = session.run(["probabilities", "class_index", "label"], {"input": raw})
    x = record.scaling.apply(raw)
    ours = logits(model, x)
    assert_close(probabilities, softmax(ours), f"{name}, onnxruntime's probabilities")
    assert np.array_equal(class_index, softgrad.predict(model, x))
    assert list(label) == [record.classes[i] for i in class_index]
    for rows in (raw[:1], raw[:0]):  # any batch, one image or none
        assert session.run(["probabilities"], {"input": rows})[0].shape == (len(rows), 10)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["input_shape"]) == list(shape) and meta["architecture"].startswith("ConvNet")


VARIED = "conv(4,3,padding=1,groups=2) tanh avgpool(2) conv(6,3,stride=2,dilation=2) sigmoid maxpool(2,stride=1) dense(12) relu"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_of_a_spec_runs_in_onnx_as_in_softgrad(tmp_path, dtype):
    """Strides, padding, dilation, groups, both poolings, three activations. float32 runs in onnxruntime;
    float64 in onnx's reference evaluator (onnxruntime's CPU provider has no float64 Conv kernel)."""
    pytest.importorskip("onnx")
    model = ConvNet(VARIED, (16, 16, 2), 5, seed=4, dtype=dtype)
    scaling = InputScaling(255.0, (0.5, 0.4), (0.2, 0.3))
    record = DataRecord("two", "classification", 512, tuple("abcde"), (), (16, 16, 2), scaling)
    raw = np.random.default_rng(7).integers(0, 256, size=(12, 512)).astype(dtype)
    path = softgrad.export(model, tmp_path / "m.onnx", data=record)
    if dtype == np.float32:
        (probabilities,) = onnx_session(path).run(["probabilities"], {"input": raw})
    else:
        from onnx.reference import ReferenceEvaluator

        (probabilities,) = ReferenceEvaluator(str(path)).run(["probabilities"], {"input": raw})
        assert probabilities.dtype == np.float64
    # the scaling by hand, in float64 (the loader's is float32): channels fastest in a row
    x = ((raw.reshape(12, -1, 2) / 255.0 - np.array(scaling.mean)) / np.array(scaling.std)).reshape(12, -1)
    ours = softmax(logits(model, x.astype(dtype)))
    assert_close(probabilities, ours, f"varied ConvNet, {np.dtype(dtype)}", rtol=RTOL if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("spec", ["dense(7) relu", "avgpool(2) conv(3,3) sigmoid", "maxpool(2,stride=1) flatten dense(5) tanh"])
def test_a_network_that_does_not_begin_with_a_convolution_takes_the_scaling_as_a_layer(tmp_path, spec):
    """The scaling as Conv2d(C, C, 1, groups=C) in front, whatever comes first; the same in ONNX; back as it was."""
    scaling = InputScaling(255.0, (0.4, 0.5, 0.6), (0.3, 0.2, 0.1))
    record = DataRecord("three", "classification", 192, tuple("abcd"), (), (8, 8, 3), scaling)
    raw = np.random.default_rng(3).integers(0, 256, size=(16, 192)).astype(np.float32)
    model = ConvNet(spec, (8, 8, 3), 4, seed=5)
    path = softgrad.export(model, tmp_path / "m.safetensors", data=record)
    state = safetensors_torch.load_file(str(path))
    assert state["0.weight"].shape == (3, 1, 1, 1)
    net = nn.Sequential(nn.Conv2d(3, 3, 1, groups=3), *eval(f"[{_modules(spec)}]", vars(nn)))
    theirs = torch_logits(load_torch(path, net), nchw(raw, (8, 8, 3)))
    ours = logits(model, record.scaling.apply(raw))
    assert_close(theirs, ours, f"{spec!r}, torch with the scaling module")
    (probabilities,) = onnx_session(softgrad.export(model, tmp_path / "m.onnx", data=record)).run(
        ["probabilities"], {"input": raw})
    assert_close(probabilities, softmax(ours), f"{spec!r}, onnxruntime")
    back = softgrad.from_torch(path)
    assert back.trained_on == record
    assert_close(logits(back, record.scaling.apply(raw)), ours, f"{spec!r}, exported and imported")


def _modules(spec: str) -> str:
    """The torch modules after the scaling for the three specs above, written out by hand."""
    return {"dense(7) relu": "Flatten(), Linear(192, 7), ReLU(), Linear(7, 4)",
            "avgpool(2) conv(3,3) sigmoid": "AvgPool2d(2), Conv2d(3, 3, 3), Sigmoid(), Flatten(), Linear(12, 4)",
            "maxpool(2,stride=1) flatten dense(5) tanh":
                "MaxPool2d(2, stride=1), Flatten(), Linear(147, 5), Tanh(), Linear(5, 4)"}[spec]


def test_an_export_without_data_takes_the_model_s_rows_and_names_classes_by_index(tmp_path):
    model = ConvNet("conv(2,3) relu", (8, 8, 3), 4, seed=1)
    path = softgrad.export(model, tmp_path / "m.safetensors")
    assert set(safetensors_torch.load_file(str(path))) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    back = softgrad.from_torch(path)
    assert back.trained_on.classes == ("0", "1", "2", "3") and back.trained_on.scaling == InputScaling()
    x = np.random.default_rng(0).normal(size=(6, 192)).astype(np.float32)
    assert np.array_equal(logits(back, x), logits(model, x))


def test_what_cannot_be_exported_is_one_line(tmp_path):
    model = ConvNet("conv(2,3) relu", (8, 8, 3), 4)
    with pytest.raises(ValueError, match="the data names 10 classes; the model gives 4"):
        softgrad.export(model, tmp_path / "m.safetensors", data=cifar_record((8, 8, 3)))
    with pytest.raises(ValueError, match=r"does not fit the model's input \(8, 8, 3\)"):
        softgrad.export(model, tmp_path / "m.onnx", data=cifar_record())
    standardised = DataRecord("f", "classification", 192, tuple("abcd"), (), (8, 8, 3),
                              InputScaling(feature_mean=(0.0,) * 192, feature_std=(1.0,) * 192))
    with pytest.raises(ValueError, match="per-feature standardisation has no per-channel form"):
        softgrad.export(model, tmp_path / "m.onnx", data=standardised)
    assert not list(tmp_path.iterdir())


def test_a_crafted_convnet_file_is_one_line(tmp_path):
    from softgrad.training.safetensors_io import SafetensorsError, read_header, write_safetensors

    model = ConvNet("conv(2,3) relu", (8, 8, 3), 4)
    path = softgrad.export(model, tmp_path / "m.safetensors")
    header = read_header(path)
    tensors = safetensors_torch.load_file(str(path))
    own = json.loads(header.metadata["softgrad"])
    for change, words in (({"params": ["0.weight", "9.bias"]}, "names parameters"),
                          ({"scaling": "sideways"}, "has scaling 'sideways'"),
                          ({"model": {**own["model"], "layers": "conv(3,3) relu"}}, "does not describe a ConvNet")):
        crafted = tmp_path / "crafted.safetensors"
        write_safetensors(crafted, {k: v.numpy() for k, v in tensors.items()},
                          {**header.metadata, "softgrad": json.dumps({**own, **change})})
        with pytest.raises(SafetensorsError) as raised:
            softgrad.from_torch(crafted)
        assert words in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


# ---- in: from_torch --------------------------------------------------------------------------------------


def varied_torch() -> nn.Sequential:
    """Every layer a ConvNet spec has: stride, padding, dilation, groups, both poolings, three activations."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.5),
                         nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.Tanh(), nn.AvgPool2d(2, stride=1),
                         nn.Conv2d(8, 6, 2, dilation=2, padding=1), nn.Sigmoid(),
                         nn.Flatten(), nn.Linear(6 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 5), nn.Softmax(dim=1)).eval()


def test_a_torch_convnet_imported_gives_torch_s_logits(tmp_path):
    net = varied_torch()
    x = np.random.default_rng(1).normal(size=(40, 20, 20, 3))
    body = net[:-1]  # torch's logits, before the final Softmax (which names the head)
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, RTOL)):
        model = softgrad.from_torch(net.to(torch.float64 if dtype == np.float64 else torch.float32),
                                    input_shape=(20, 20, 3))
        assert model.dtype == dtype and model.loss == "cross_entropy"
        theirs = torch_logits(body, nchw(x.reshape(40, -1).astype(dtype), (20, 20, 3)))
        assert_close(logits(model, x.reshape(40, -1).astype(dtype)), theirs, f"from_torch, {np.dtype(dtype)}", rtol)
    assert np.array_equal(softgrad.predict(model, x.reshape(40, -1).astype(np.float32)), theirs.argmax(axis=1))


def test_lenet_trained_in_torch_comes_in_and_predicts_what_torch_predicts(mnist, raw_mnist):
    net = lenet_torch()[1:]  # no scaling layer: it takes the rows softgrad's loader normalises
    torch.manual_seed(1)
    x, y = torch.from_numpy(mnist.x_train[:128].reshape(-1, 1, 28, 28)), torch.from_numpy(mnist.y_train[:128])
    for start in range(0, 128, 64):  # plain SGD by hand: torch.optim's first use imports for seconds
        net.zero_grad()
        nn.functional.cross_entropy(net(x[start:start + 64]), y[start:start + 64]).backward()
        with torch.no_grad():
            for parameter in net.parameters():
                parameter -= 0.1 * parameter.grad
    model = softgrad.from_torch(net.eval(), input_shape=(28, 28), labels=list(mnist.classes))
    assert model.layers == "lenet"  # the spec torch's modules spell is LeNet's, and takes its name
    x_test = mnist.x_test[:N_IMAGES]
    theirs = torch_logits(net, torch.from_numpy(x_test.reshape(-1, 1, 28, 28)))
    assert_close(logits(model, x_test), theirs, "lenet trained in torch, imported")
    assert np.array_equal(softgrad.predict(model, x_test), theirs.argmax(axis=1))


def test_softgrad_s_own_convnet_export_comes_back_as_trained(mnist, raw_cifar, tmp_path):
    for name, shape, record in (("lenet", (28, 28), mnist.record()), ("tutorial-cnn", (32, 32, 3), cifar_record())):
        model = ConvNet(name, shape, 10, seed=6)
        model.loss = "cross_entropy"
        path = softgrad.export(model, tmp_path / f"{name}.safetensors", data=record)
        back = softgrad.from_torch(path)
        assert isinstance(back, ConvNet) and back.config() == model.config()
        assert back.trained_on == record and back.loss == "cross_entropy"
        x = record.scaling.apply(raw_cifar[:, :int(np.prod(shape))])
        assert_close(logits(back, x), logits(model, x), f"{name}, exported and imported")


@pytest.mark.parametrize("modules, words", [
    ([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2)], "module 1 (BatchNorm2d) is not supported"),
    ([nn.Conv2d(1, 2, (3, 5)), nn.Flatten(), nn.Linear(8, 2)], "kernel_size=(3, 5)"),
    ([nn.Conv2d(1, 2, 3, padding_mode="reflect"), nn.Flatten(), nn.Linear(32, 2)], "pads with 'reflect'"),
    ([nn.Conv2d(1, 2, 3), nn.Linear(4, 2)], "module 1 (Linear) takes the images unflattened"),
    ([nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(7, 2)], "module 2 (Linear) takes 7 inputs"),
    ([nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(8, 2)], "has padding=1"),
    ([nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(8, 2)], "ceil_mode=True"),
    ([nn.Conv2d(1, 2, 3), nn.LeakyReLU(), nn.Flatten(), nn.Linear(32, 2)], "module 1 (LeakyReLU) is not supported"),
    ([nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 2), nn.ReLU()], "follows the last Linear"),
    ([nn.Conv2d(1, 2, 3), nn.Flatten()], "holds no Linear layer"),
    ([nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(32, 2)], "takes 3 channels; input_shape (6, 6) has 1"),
    ([nn.Conv2d(1, 2, 9), nn.Flatten(), nn.Linear(32, 2)], "does not fit its 6x6 input map"),
])
def test_what_a_convnet_cannot_hold_is_one_line(modules, words):
    with pytest.raises(ValueError) as raised:
        softgrad.from_torch(nn.Sequential(*modules), input_shape=(6, 6))
    message = str(raised.value)
    assert words in message and "\n" not in message and message.startswith("from_torch: "), message


def test_a_convnet_needs_its_image_shape_and_its_module(tmp_path):
    net = tutorial_torch()
    with pytest.raises(ValueError, match=r"give input_shape=\(H, W\) or \(H, W, C\)"):
        softgrad.from_torch(net)
    with pytest.raises(ValueError, match="a convolution's weight, and does not say the strides"):
        softgrad.from_torch(net.state_dict())
    path = tmp_path / "foreign.safetensors"
    safetensors_torch.save_file(net.state_dict(), str(path))
    with pytest.raises(ValueError, match="does not say the strides, padding and pooling"):
        softgrad.from_torch(path)


# ---- the command line -----------------------------------------------------------------------------------


def test_softgrad_export_writes_a_convnet_run_out_and_brings_it_back(mnist, raw_mnist, tmp_path):
    """A ConvNet checkpoint (as softgrad train writes it) out to safetensors and ONNX, and back in as a run that
    softgrad predict runs on raw pixel files, predicting what the original does."""
    from softgrad.commands.evaluate import predict_main
    from softgrad.commands.export import main as export_main
    from softgrad.numerics.optim.sgd import SGDState
    from softgrad.training import checkpoint

    from tests.in_process import run

    model = ConvNet("lenet", (28, 28), 10, seed=8)
    model.loss = "cross_entropy"
    checkpoint.save(tmp_path / "checkpoint.npz", model, SGDState(step=0, momentum_buffers=None), [],
                    {"loss": "cross_entropy"}, data=mnist)
    result = run(export_main, tmp_path / "checkpoint.npz", "--to", tmp_path / "m.safetensors")
    assert result.returncode == 0 and "Conv2d(1, 6, 5, padding=2)" in result.stdout, result.stderr
    theirs = torch_logits(load_torch(tmp_path / "m.safetensors", lenet_torch()), nchw(raw_mnist, (28, 28)))
    expected = softgrad.predict(model, mnist.x_test[:N_IMAGES])
    assert np.array_equal(theirs.argmax(axis=1), expected)
    assert run(export_main, tmp_path / "checkpoint.npz", "--to", tmp_path / "m.onnx").returncode == 0
    (class_index,) = onnx_session(tmp_path / "m.onnx").run(["class_index"], {"input": raw_mnist})
    assert np.array_equal(class_index, expected)
    result = run(export_main, "--from", tmp_path / "m.safetensors", "--to", tmp_path / "back")
    assert result.returncode == 0 and "lenet 1x28x28 -> 10" in result.stdout, result.stderr
    np.save(tmp_path / "raw.npy", raw_mnist[:20].reshape(20, 28, 28).astype(np.uint8))
    result = run(predict_main, tmp_path / "back", tmp_path / "raw.npy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(": ", 1)[1] == ", ".join(str(c) for c in expected[:20])


def test_softgrad_export_refuses_a_convnet_state_dict_in_one_line(tmp_path, monkeypatch):
    from softgrad.commands.export import main as export_main

    from tests.in_process import run

    monkeypatch.chdir(tmp_path)
    torch.save(tutorial_torch().state_dict(), tmp_path / "cnn.pt")
    result = run(export_main, "--from", "cnn.pt", "--to", "imported")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not say the strides, padding and pooling" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "imported").exists()


def test_a_convnet_on_the_torch_backend_exports_the_same_file(mnist, tmp_path):
    """The export reads the parameters through the backend: a model on torch writes what it writes on numpy."""
    model = ConvNet("lenet", (28, 28), 10, seed=9)
    softgrad.export(model, tmp_path / "numpy.safetensors", data=mnist)
    softgrad.export(model.to("torch"), tmp_path / "torch.safetensors", data=mnist)
    assert (tmp_path / "numpy.safetensors").read_bytes() == (tmp_path / "torch.safetensors").read_bytes()
