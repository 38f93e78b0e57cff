"""ONNX export (training/onnx_export.py): the graph passes onnx's full check, takes raw input with a symbolic batch,
and onnxruntime (and onnx.reference, the fallback) running it agrees with softgrad.predict and with the model's
own probabilities and values.

References are independent of the exporter: softgrad.predict and the model's logits on the data set's own
normalised rows (which the raw test files become exactly, checked first), a float64 NumPy forward pass, and
torch.nn.Sequential loaded with the file's weights. The models are tiny and trained for one epoch on a slice,
so the file runs in seconds; the comparisons run on the 10,000 raw test images of the shipped MNIST.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys

import numpy as np
import pytest
import softgrad
from softgrad.datasets import DIABETES_N_TRAIN, DIABETES_SPLIT_SEED, SHIPPED_DIABETES, SHIPPED_MNIST, idx
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.training.onnx_export import onnx_model, write_onnx
from softgrad.training.portable import portable_network

from tests import in_process

onnx = pytest.importorskip("onnx")

RTOL = 1e-5  # float32 outputs against the model's own: relative
# and absolute for probabilities, on their 0..1 scale: a relative 1e-5 on a probability of 1e-7 asks its logit
# (of size ~25 after one epoch on MNIST) to agree to 1e-5, which the model's own float32 logits do not do with
# the exact float64 ones (up to 1.6e-5 measured); the export's are nearer the exact than the model's
ATOL = 1e-8
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")


# ---- data and models --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return softgrad.load("mnist")


@pytest.fixture(scope="module")
def raw_images(mnist):
    """The shipped MNIST test images as raw 0..255 pixel rows, read from the IDX file, not from the loader."""
    images = idx.read_idx(idx.find_idx(SHIPPED_MNIST, "t10k-images-idx3-ubyte"))
    raw = images.reshape(len(images), -1)
    assert raw.dtype == np.uint8 and raw.shape == (10_000, 784)
    assert np.array_equal(mnist.scale_inputs(raw), mnist.x_test)  # so predict(x_test) is predict on these
    return raw


def _slice(data, n_train: int = 1000):
    # a short test split too: fit evaluates it after the epoch, and these tests do not need it
    return dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                               x_test=data.x_test[:50], y_test=data.y_test[:50])


def _trained(data, widths, activation="relu", *, loss=None, dtype="float32"):
    model = softgrad.MLP(widths, activation, seed=0, dtype=dtype)
    softgrad.fit(model, _slice(data), "numpy", loss=loss, epochs=1, log=None)
    model.trained_on = data.record()  # what a checkpoint restores: the network folds its scaling in
    return model


@pytest.fixture(scope="module")
def classifiers(mnist):
    return {act: _trained(mnist, [784, 16, 10], act) for act in ACTIVATIONS}


@pytest.fixture(scope="module")
def binary_data(mnist):
    return softgrad.datasets.binary(mnist, "0")


@pytest.fixture(scope="module")
def binary_model(binary_data):
    return _trained(binary_data, [784, 16, 1], "tanh", loss="bce_with_logits")


@pytest.fixture(scope="module")
def diabetes():
    """The diabetes set and its raw test rows, read from the shipped file and split as the loader documents."""
    data = softgrad.load("diabetes")
    with gzip.open(SHIPPED_DIABETES / "diabetes_data_raw.csv.gz", "rt") as stream:
        features = np.loadtxt(stream, dtype=np.float64)
    test = np.random.default_rng(DIABETES_SPLIT_SEED).permutation(len(features))[DIABETES_N_TRAIN:]
    raw = features[test]
    assert np.array_equal(data.scale_inputs(raw), data.x_test)
    return data, raw


@pytest.fixture(scope="module")
def regressor(diabetes):
    data, _ = diabetes
    model = softgrad.MLP([10, 16, 1], "leaky_relu", seed=0)
    softgrad.fit(model, data, "numpy", loss="mse", epochs=3, log=None)
    model.trained_on = data.record()
    return model


# ---- running the graph ------------------------------------------------------------------------------------


def _ort(model_proto, x: np.ndarray) -> dict[str, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x})))


def _reference(model_proto, x: np.ndarray) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model_proto)
    return dict(zip(evaluator.output_names, evaluator.run(None, {"input": x})))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logits(model, rows: np.ndarray) -> np.ndarray:
    """The model's own logits on normalised rows."""
    return np.asarray(model.be.to_numpy(model.logits(model.be.asarray(rows.astype(model.dtype)))))


def _max_rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.abs(b)))


_NUMPY_ACTIVATIONS = {"relu": lambda h: np.maximum(h, 0.0), "tanh": np.tanh,
                      "sigmoid": lambda h: 1.0 / (1.0 + np.exp(-h)),
                      "leaky_relu": lambda h: np.where(h > 0, h, 0.01 * h)}


def _exact(model, raw: np.ndarray, data) -> np.ndarray:
    """Float64 NumPy: the raw pixels normalised as the loader documents, then the model's parameters."""
    h = (raw / 255.0 - data.mean[0]) / data.std[0]
    params = [np.asarray(model.be.to_numpy(p), dtype=np.float64) for p in model.params]
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = _NUMPY_ACTIVATIONS[model.activation_name](h)
    return _softmax(h)


def _check_classifier(out, model, data, rows: slice, rtol=RTOL) -> float:
    """Labels identical to predict's, probabilities the model's softmax within ``rtol``; the largest relative
    difference."""
    predicted = softgrad.predict(model, data.x_test[rows])
    assert out["class_index"].dtype == np.int64
    np.testing.assert_array_equal(out["class_index"], predicted)
    np.testing.assert_array_equal(out["label"].astype(str), np.asarray(data.classes)[predicted])
    expected = _softmax(_logits(model, data.x_test[rows]))
    assert out["probabilities"].dtype == model.dtype
    np.testing.assert_allclose(out["probabilities"], expected, rtol=rtol, atol=ATOL)
    return _max_rel(out["probabilities"], expected)


# ---- the graph ---------------------------------------------------------------------------------------------


def test_the_graph_passes_the_full_check_with_a_symbolic_batch_and_says_what_it_is(classifiers, mnist):
    model = onnx_model(portable_network(classifiers["relu"]))  # no record given: the model's trained_on
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert (dims[0].dim_param, dims[1].dim_value) == ("N", 784)
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert set(outputs) == {"probabilities", "class_index", "label"}
    assert outputs["label"].elem_type == onnx.TensorProto.STRING
    assert all(t.shape.dim[0].dim_param == "N" for t in outputs.values())
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gemm") == 2 and ops.count("Relu") == 1 and ops.count("Softmax") == 1
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["softgrad_version"] == softgrad.__version__ == model.producer_version
    assert "784-16-10" in meta["architecture"] and "relu" in meta["architecture"]
    assert json.loads(meta["labels"]) == list(mnist.classes) and json.loads(meta["input_shape"]) == [28, 28]

    newer = onnx_model(portable_network(classifiers["relu"]), opset=18)
    onnx.checker.check_model(newer, full_check=True)
    assert newer.opset_import[0].version == 18
    with pytest.raises(ValueError, match="opset 16 is not supported; give 17"):
        onnx_model(portable_network(classifiers["relu"]), opset=16)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_onnxruntime_agrees_with_predict_on_the_raw_test_images(classifiers, mnist, raw_images, activation):
    model = classifiers[activation]
    graph = onnx_model(portable_network(model))
    onnx.checker.check_model(graph, full_check=True)
    out = _ort(graph, raw_images.astype(np.float32))
    worst = _check_classifier(out, model, mnist, slice(None))
    exact = _exact(model, raw_images, mnist)
    assert _max_rel(out["probabilities"], exact) <= 2 * _max_rel(_softmax(_logits(model, mnist.x_test)), exact)
    one = _ort(graph, raw_images[:1].astype(np.float32))  # the same graph with a batch of one
    assert one["probabilities"].shape == (1, 10)
    _check_classifier(one, model, mnist, slice(0, 1))
    print(f"{activation}: largest relative difference of the probabilities {worst:.2e} (absolute "
          f"{np.abs(out['probabilities'] - _softmax(_logits(model, mnist.x_test))).max():.2e})")


def test_a_float64_model_exports_a_double_graph(mnist, raw_images):
    model = _trained(mnist, [784, 16, 10], "sigmoid", dtype="float64")
    graph = onnx_model(portable_network(model))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    out = _ort(graph, raw_images.astype(np.float64))
    # predict takes the loader's float32 rows: within float32's rounding of the inputs
    _check_classifier(out, model, mnist, slice(None))
    # a float64 NumPy forward pass of the model's parameters on the raw pixels normalised in float64
    w1, b1, w2, b2 = (np.asarray(model.be.to_numpy(p)) for p in model.params)
    x = (raw_images / 255.0 - mnist.mean[0]) / mnist.std[0]
    expected = _softmax((1.0 / (1.0 + np.exp(-(x @ w1 + b1)))) @ w2 + b2)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-10, atol=0)
    print(f"float64: largest relative difference from float64 NumPy {_max_rel(out['probabilities'], expected):.2e}")


def test_a_binary_head_gives_the_positive_probability_and_the_label(binary_data, binary_model, raw_images):
    graph = onnx_model(portable_network(binary_model))
    onnx.checker.check_model(graph, full_check=True)
    assert {o.name for o in graph.graph.output} == {"probability", "class_index", "label"}
    out = _ort(graph, raw_images.astype(np.float32))
    predicted = softgrad.predict(binary_model, binary_data.x_test)
    assert 0 < predicted.sum() < len(predicted)  # both classes occur
    np.testing.assert_array_equal(out["class_index"], predicted)
    np.testing.assert_array_equal(out["label"].astype(str), np.asarray(binary_data.classes)[predicted])
    assert binary_data.classes == ("not 0", "0")
    expected = 1.0 / (1.0 + np.exp(-_logits(binary_model, binary_data.x_test)[:, 0].astype(np.float64)))
    assert out["probability"].shape == (10_000,)
    np.testing.assert_allclose(out["probability"], expected, rtol=RTOL, atol=0)
    print(f"binary: largest relative difference {_max_rel(out['probability'], expected):.2e}")


def test_a_regressor_gives_values_in_the_data_units(diabetes, regressor):
    data, raw = diabetes
    graph = onnx_model(portable_network(regressor))
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == ["values"]
    out = _ort(graph, raw.astype(np.float32))
    expected = softgrad.predict(regressor, data.x_test)  # in the data's units
    assert out["values"].shape == expected.shape == (89, 1)
    assert 25 < np.median(out["values"]) < 350  # disease progression, not standardised values
    np.testing.assert_allclose(out["values"], expected, rtol=RTOL, atol=0)
    print(f"regressor: largest relative difference {_max_rel(out['values'], expected):.2e}")


def test_onnx_reference_is_the_fallback_and_agrees_too(classifiers, binary_data, binary_model, mnist, raw_images,
                                                       diabetes, regressor):
    rows = slice(0, 300)
    out = _reference(onnx_model(portable_network(classifiers["leaky_relu"])), raw_images[rows].astype(np.float32))
    worst = _check_classifier(out, classifiers["leaky_relu"], mnist, rows)

    out = _reference(onnx_model(portable_network(binary_model)), raw_images[rows].astype(np.float32))
    np.testing.assert_array_equal(out["class_index"], softgrad.predict(binary_model, binary_data.x_test[rows]))
    logit = _logits(binary_model, binary_data.x_test[rows])[:, 0].astype(np.float64)
    np.testing.assert_allclose(out["probability"], 1.0 / (1.0 + np.exp(-logit)), rtol=RTOL, atol=0)
    binary = _max_rel(out["probability"], 1.0 / (1.0 + np.exp(-logit)))

    data, raw = diabetes
    out = _reference(onnx_model(portable_network(regressor)), raw.astype(np.float32))
    expected = softgrad.predict(regressor, data.x_test)
    np.testing.assert_allclose(out["values"], expected, rtol=RTOL, atol=0)
    print(f"onnx.reference: largest relative differences: classifier {worst:.2e}, binary {binary:.2e}, "
          f"regressor {_max_rel(out['values'], expected):.2e}")


def test_what_cannot_be_exported_is_one_line(classifiers, binary_model):
    network = portable_network(classifiers["relu"])
    for bad, message in (
            (dataclasses.replace(network, labels=("a", "b")), "names 2 classes for 10"),
            (dataclasses.replace(network, activation="gelu"), "no ONNX operator for the activation 'gelu'"),
            (dataclasses.replace(network, dtype="float16"), "float16 network cannot be exported"),
            (dataclasses.replace(portable_network(binary_model), weights=network.weights, biases=network.biases),
             "sigmoid head takes one logit, this network has 10")):
        with pytest.raises(ValueError, match=message) as caught:
            onnx_model(bad)
        assert "\n" not in str(caught.value)
    for opset in (True, 17.0, onnx.defs.onnx_opset_version() + 1):
        with pytest.raises(ValueError, match="is not supported"):
            onnx_model(network, opset=opset)


# ---- the file ------------------------------------------------------------------------------------------------


def test_write_onnx_writes_a_checked_file_atomically(classifiers, mnist, raw_images, tmp_path):
    network = portable_network(classifiers["tanh"])
    path = tmp_path / "new folder" / "model.onnx"
    write_onnx(network, path)
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded, full_check=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temporary left beside it
    _check_classifier(_ort(loaded, raw_images[:500].astype(np.float32)), classifiers["tanh"], mnist, slice(0, 500))
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        write_onnx(network, tmp_path)


def test_without_onnx_one_line_says_what_to_install(classifiers, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    for export in (lambda n: onnx_model(n), lambda n: write_onnx(n, "never-written.onnx")):
        with pytest.raises(BackendUnavailableError) as caught:
            export(portable_network(classifiers["relu"]))
        assert "pip install 'softgrad[export]'" in str(caught.value) and "\n" not in str(caught.value)


# ---- the "done when": softgrad train, export, torch.nn.Sequential and onnxruntime -----------------------


def test_a_run_of_softgrad_train_exports_and_agrees_with_softgrad_predict(tmp_path, mnist, raw_images):
    from softgrad.commands import evaluate, train
    from softgrad.training import checkpoint

    run = tmp_path / "run"
    trained = in_process.run(train.main, "--out", run, "--epochs", "1", "--hidden", "16", "--activation",
                             "leaky_relu", "--batch-size", "128", "--quiet")
    assert trained.returncode == 0, trained.stderr
    model = checkpoint.load(run / "checkpoint.npz")[0]
    write_onnx(portable_network(model), tmp_path / "model.onnx")
    graph = onnx.load(tmp_path / "model.onnx")
    out = _ort(graph, raw_images.astype(np.float32))
    worst = _check_classifier(out, model, mnist, slice(None))
    exact = _exact(model, raw_images, mnist)
    onnx_error = _max_rel(out["probabilities"], exact)
    model_error = _max_rel(_softmax(_logits(model, mnist.x_test)), exact)
    assert onnx_error <= 2 * model_error  # the export is about as near the exact probabilities as the model

    # `softgrad predict RUN raw.npy` prints the first 20 labels by name
    np.save(tmp_path / "raw.npy", raw_images)
    printed = in_process.run(evaluate.predict_main, run, tmp_path / "raw.npy")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split(": ", 1)[1].split(" ...")[0].split(", ") == list(out["label"][:20].astype(str))

    # the file's weights in torch.nn.Sequential, run by torch's own modules (the checks above stand without it)
    torch = pytest.importorskip("torch")
    weights = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in graph.graph.initializer
               if t.name.startswith("layer")}
    slope = float(dict((p.key, p.value) for p in graph.metadata_props)["negative_slope"])
    net = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.LeakyReLU(slope), torch.nn.Linear(16, 10))
    net.load_state_dict({"0.weight": weights["layer0.weight"], "0.bias": weights["layer0.bias"],
                         "2.weight": weights["layer1.weight"], "2.bias": weights["layer1.bias"]})
    with torch.no_grad():
        probabilities = torch.softmax(net(torch.from_numpy(raw_images.astype(np.float32))), dim=1).numpy()
    np.testing.assert_allclose(probabilities, out["probabilities"], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), softgrad.predict(model, mnist.x_test))
    print(f"softgrad train run: largest relative difference of the probabilities {worst:.2e}; from the exact "
          f"float64 ones: the export's {onnx_error:.2e}, the model's {model_error:.2e}")
