"""softgrad.training.convnet.ConvNet: gradients against torch autograd of the same nn.Sequential with the same
weights and against central finite differences (float64); 20-step float64 trajectories of softgrad numpy,
softgrad torch and torch autograd (nn.Conv2d/nn.Linear, torch.optim.SGD momentum 0.9) for lenet, tutorial-cnn
and softmax regression; the spec's errors; checkpoints, resume, pickling; ``softgrad train --model lenet`` then
evaluate and predict. Tiny images and few steps throughout."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.commands import evaluate as evaluate_command
from softgrad.commands import train as train_command
from softgrad.training import checkpoint
from softgrad.training.convnet import NAMED, ConvNet, parse_layers
from softgrad.training.fitting import fit
from softgrad.training.inference import evaluate, predict
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings
from softgrad.training.step import train_step

from tests import in_process

# every option of the grammar once: stride, padding, dilation, groups, both poolings, tanh and sigmoid
EXOTIC = ("conv(4,3,stride=2,padding=1) tanh avgpool(2) conv(4,3,padding=2,dilation=2,groups=2) sigmoid "
          "maxpool(2,stride=1) flatten dense(7) tanh")
EXOTIC_SHAPE = (16, 14, 3)  # HWC


def torch_net(name: str, classes: int = 10):
    """The network ``name`` written out in torch modules, by hand (not from the spec parser)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    if name == "lenet":
        layers = [nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                  nn.Linear(84, classes)]
    elif name == "tutorial-cnn":
        layers = [nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes)]
    elif name == "exotic":
        layers = [nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                  nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), nn.Sigmoid(), nn.MaxPool2d(2, stride=1),
                  nn.Flatten(), nn.Linear(24, 7), nn.Tanh(), nn.Linear(7, classes)]
    elif name == "small":
        layers = [nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 8), nn.ReLU(),
                  nn.Linear(8, classes)]
    elif name == "linear":
        layers = [nn.Linear(784, classes)]
    else:
        raise AssertionError(name)
    return nn.Sequential(*layers).double()


def load_weights(net, model) -> None:
    """softgrad's ``[W1, b1, ...]`` into the torch modules with weights, in order (dense weights transposed)."""
    import torch

    modules = [m for m in net if hasattr(m, "weight")]
    host = [np.asarray(model.be.to_numpy(p), dtype=np.float64) for p in model.params]
    assert len(modules) * 2 == len(host)
    with torch.no_grad():
        for module, weight, bias in zip(modules, host[::2], host[1::2]):
            assert module.bias.shape == bias.shape
            module.weight.copy_(torch.from_numpy(weight if weight.ndim == 4 else weight.T.copy()))
            module.bias.copy_(torch.from_numpy(bias))


def torch_params(net) -> list[np.ndarray]:
    """The torch network's parameters in softgrad's layout (dense weights (in, out))."""
    out = []
    for module in (m for m in net if hasattr(m, "weight")):
        weight = module.weight.detach().numpy()
        out += [weight if weight.ndim == 4 else weight.T, module.bias.detach().numpy()]
    return out


def images(x, shape):
    """Flat rows as NCHW, as the contract says: (H, W) grey, (H, W, C) HWC-flattened."""
    import torch

    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if len(shape) == 2:
        return x.reshape(x.shape[0], 1, *shape)
    return x.reshape(x.shape[0], *shape).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist")


CASES = {"lenet": ("lenet", (28, 28)), "tutorial-cnn": ("tutorial-cnn", (32, 32, 3)), "exotic": (EXOTIC, EXOTIC_SHAPE),
         "small": ("conv(3,3,padding=1) relu maxpool(2) dense(8) relu", (8, 8))}


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_torch_autograd(name):
    torch = pytest.importorskip("torch")
    spec, shape = CASES[name]
    classes = 5 if name == "exotic" else 10
    model = ConvNet(spec, shape, classes, seed=3, dtype=np.float64)
    net = torch_net(name, classes)
    load_weights(net, model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, int(np.prod(shape))))
    logits, cache = model.forward(x)
    dlogits = rng.standard_normal(logits.shape)
    grads = model.backward(cache, dlogits)
    reference = net(images(x, shape))
    reference.backward(torch.from_numpy(dlogits))
    np.testing.assert_allclose(logits, reference.detach().numpy(), rtol=0, atol=1e-12)
    torch_grads = []
    for module in (m for m in net if hasattr(m, "weight")):
        g = module.weight.grad.numpy()
        torch_grads += [g if g.ndim == 4 else g.T, module.bias.grad.numpy()]
    assert [g.shape for g in grads] == [g.shape for g in torch_grads]
    for mine, theirs in zip(grads, torch_grads):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["small", "exotic"])
def test_every_backend_matches_torch_autograd(be, dtype, name):
    """The model on each backend (its conv and pooling operations, the default or its own) in both dtypes,
    against torch autograd in float64 from the same (cast) weights."""
    torch = pytest.importorskip("torch")
    spec, shape = CASES[name]
    model = ConvNet(spec, shape, 5, seed=4, dtype=dtype, backend=be)
    net = torch_net(name, 5)
    load_weights(net, model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, int(np.prod(shape)))).astype(dtype)
    dlogits = rng.standard_normal((3, 5)).astype(dtype)
    logits, cache = model.forward(be.asarray(x))
    grads = model.backward(cache, be.asarray(dlogits))
    reference = net(images(x, shape))
    reference.backward(torch.from_numpy(dlogits.astype(np.float64)))
    atol, rtol = (1e-10, 1e-10) if dtype == np.float64 else (1e-5, 1e-4)
    assert np.asarray(be.to_numpy(logits)).dtype == dtype
    np.testing.assert_allclose(be.to_numpy(logits), reference.detach().numpy(), rtol=rtol, atol=atol)
    modules = [m for m in net if hasattr(m, "weight")]
    expected = [g for m in modules for g in (m.weight.grad.numpy() if m.weight.ndim == 4 else m.weight.grad.numpy().T,
                                             m.bias.grad.numpy())]
    for mine, theirs in zip(grads, expected):
        assert np.asarray(be.to_numpy(mine)).dtype == dtype
        np.testing.assert_allclose(be.to_numpy(mine), theirs, rtol=rtol, atol=atol)


def test_gradients_match_central_finite_differences():
    model = ConvNet(EXOTIC, EXOTIC_SHAPE, 5, seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, int(np.prod(EXOTIC_SHAPE))))
    dlogits = rng.standard_normal((2, 5))
    logits, cache = model.forward(x)
    grads = model.backward(cache, dlogits)

    def objective() -> float:
        return float(np.sum(model.logits(x) * dlogits))

    eps = 1e-6
    for p, g in zip(model.params, grads):
        for flat in rng.choice(p.size, size=min(4, p.size), replace=False):
            index = np.unravel_index(flat, p.shape)
            original = p[index]
            p[index] = original + eps
            up = objective()
            p[index] = original - eps
            down = objective()
            p[index] = original
            assert abs((up - down) / (2 * eps) - g[index]) < 1e-7, (p.shape, index)


def _trajectory_inputs(name: str, mnist, steps: int, batch: int):
    if name == "tutorial-cnn":  # a 3x32x32 random batch per step (HWC rows)
        rng = np.random.default_rng(7)
        return [(rng.standard_normal((batch, 32 * 32 * 3)), rng.integers(0, 10, batch)) for _ in range(steps)]
    x, y = np.asarray(mnist.x_train, np.float64), np.asarray(mnist.y_train)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps)]


@pytest.mark.parametrize("name", ["lenet", "tutorial-cnn", "linear"])
def test_float64_trajectories_of_numpy_torch_and_autograd_agree(name, mnist):
    """20 steps of SGD (lr 0.01, momentum 0.9): softgrad on numpy and on torch, and torch autograd with
    torch.optim.SGD, from the same weights on the same batches, agree to 1e-10 after every step."""
    torch = pytest.importorskip("torch")
    steps, batch, lr = 20, 8, 0.01
    if name == "linear":
        start = MLP([784, 10], seed=0, dtype=np.float64)  # softmax regression
        shape = (28, 28)
    else:
        spec, shape = CASES[name]
        start = ConvNet(spec, shape, 10, seed=0, dtype=np.float64)
    net = torch_net(name)
    load_weights(net, start)
    sgd = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    settings = TrainSettings(lr=lr, lr_schedule="constant", loss="cross_entropy",
                             hyperparameters={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0})
    models = {"numpy": copy.deepcopy(start), "torch": copy.deepcopy(start).to("torch")}
    states = {key: settings.optimizer_definition.init_on(m.be, m.params, **settings.resolved_hyperparameters)
              for key, m in models.items()}
    largest = 0.0
    for x, y in _trajectory_inputs(name, mnist, steps, batch):
        for key, model in models.items():
            _, _, states[key] = train_step(model, model.be.asarray(x), model.be.asarray(y), states[key], lr, settings)
        sgd.zero_grad()
        inputs = torch.as_tensor(x) if name == "linear" else images(x, shape)
        torch.nn.functional.cross_entropy(net(inputs), torch.as_tensor(y)).backward()
        sgd.step()
        reference = torch_params(net)
        for model in models.values():
            for p, r in zip(model.params, reference):
                largest = max(largest, float(np.max(np.abs(np.asarray(model.be.to_numpy(p)) - r))))
    print(f"{name}: largest parameter difference over {steps} steps {largest:.2e}")
    assert largest < 1e-10


# ---- the spec -------------------------------------------------------------------------------------


def test_named_models_are_their_specs_and_map_to_torch_shapes():
    lenet = ConvNet("lenet", (28, 28), 10)
    assert [tuple(p.shape) for p in lenet.params] == [tuple(np.shape(p)) for p in torch_params(torch_net("lenet"))]
    assert lenet.num_parameters == 61_706 and lenet.dtype == np.float32
    same = ConvNet(NAMED["lenet"], (28, 28), 10)
    for a, b in zip(lenet.params, same.params):
        np.testing.assert_array_equal(a, b)
    tutorial = ConvNet("tutorial-cnn", (32, 32, 3), 10)
    assert tutorial.num_parameters == 62_006  # the tutorial network's count, as torch counts it
    assert [t.kind for t in parse_layers("conv(6,5) , relu,maxpool(2,stride=2) dense(3)")] == \
        ["conv", "relu", "maxpool", "dense"]


def test_torch_default_initialisation_bounds():
    model = ConvNet("lenet", (28, 28), 10, seed=5, dtype=np.float64)
    fan_ins = [25, 25, 150, 150, 400, 400, 120, 120, 84, 84]
    for p, fan_in in zip(model.params, fan_ins):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound


@pytest.mark.parametrize("spec, shape, message", [
    ("conv(6,5) relu bogus(3)", (28, 28), "unknown layer 'bogus(3)'"),
    ("conv(6) relu", (28, 28), "conv needs k"),
    ("conv(6,5,stride=0)", (28, 28), "stride must be at least 1"),
    ("conv(6,5,bias=1)", (28, 28), "'bias=1' is not one of them"),
    ("conv(6,x)", (28, 28), "k must be a whole number"),
    ("relu(2)", (28, 28), "relu takes no arguments"),
    ("conv(6,5)relu", (28, 28), "cannot read"),
    ("   ", (28, 28), "the spec is empty"),
    ("conv(4,5) maxpool(2) conv(4,5) maxpool(2) conv(4,5)", (28, 28),
     "layer 5 conv(4,5): a 5x5 kernel (dilation 1, padding 0) does not fit its 4x4 input map"),
    ("conv(4,5)", (2, 2), "layer 1 conv(4,5): a 5x5 kernel"),
    ("maxpool(3)", (2, 2), "a 3x3 window does not fit its 2x2 input map"),
    ("dense(10) conv(4,3)", (28, 28), "layer 2 conv(4,3): takes images (C, H, W), but it follows"),
    ("conv(4,3,groups=3)", (28, 28, 2), "groups=3 must divide its 2 input channels"),
    ("flatten flatten", (28, 28), "layer 2 flatten: its input is already flat"),
])
def test_bad_specs_are_one_line_naming_the_token(spec, shape, message):
    with pytest.raises(ValueError) as error:
        ConvNet(spec, shape, 10)
    assert message in str(error.value) and "\n" not in str(error.value)


# ---- checkpoints, resume, pickling, fit -------------------------------------------------------------


def tiny_images(n_train: int = 48, n_test: int = 16, shape=(8, 8)):
    rng = np.random.default_rng(0)
    size = int(np.prod(shape))
    return datasets.from_arrays(rng.random((n_train, size)), rng.integers(0, 3, n_train), rng.random((n_test, size)),
                                rng.integers(0, 3, n_test), image_shape=shape, normalise=True)


SMALL = "conv(3,3) relu maxpool(2) dense(6) relu"


def test_fit_checkpoint_round_trip_and_resume(tmp_path):
    data = tiny_images()
    straight = ConvNet(SMALL, data.image_shape, 3, seed=0)
    fit(straight, data, epochs=2, batch_size=16, lr_schedule="constant", log=None, progress=False)
    first = ConvNet(SMALL, data.image_shape, 3, seed=0)
    path = tmp_path / "c.npz"
    fit(first, data, epochs=1, batch_size=16, lr_schedule="constant", log=None, progress=False,
        checkpoint_path=path)
    loaded, state, history, settings = checkpoint.load(path)
    assert isinstance(loaded, ConvNet) and loaded.config() == first.config() and len(history) == 1
    assert loaded.config()["kind"] == "convnet"
    for a, b in zip(loaded.params, first.params):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(predict(loaded, data.x_test), predict(first, data.x_test))
    resumed = ConvNet(SMALL, data.image_shape, 3, seed=0)
    fit(resumed, data, epochs=2, log=None, progress=False, resume=path)
    for a, b in zip(resumed.params, straight.params):
        np.testing.assert_array_equal(a, b)  # the resumed run continues exactly
    assert set(evaluate(resumed, data.x_test, data.y_test)) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="chunked_head fuses an MLP's last layer"):
        fit(ConvNet(SMALL, data.image_shape, 3), data, epochs=1, log=None, chunked_head=True)


def test_a_damaged_convnet_config_is_named(tmp_path):
    data = tiny_images()
    path = tmp_path / "c.npz"
    model = ConvNet(SMALL, data.image_shape, 3)
    fit(model, data, epochs=1, log=None, progress=False, checkpoint_path=path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    meta["model"]["layers"] = "conv(3,9) relu"  # a 9x9 kernel on 8x8 images
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="its ConvNet layers do not describe a network: layer 1"):
        checkpoint.load(path)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pickle_and_deepcopy(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    model = ConvNet(SMALL, (8, 8), 3, seed=2, backend=backend)
    x = model.be.asarray(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    again = pickle.loads(pickle.dumps(model))
    assert again.be is model.be and again.config() == model.config()
    np.testing.assert_array_equal(model.be.to_numpy(again.logits(x)), model.be.to_numpy(model.logits(x)))
    duplicate = copy.deepcopy(model)
    duplicate.params[0] = duplicate.params[0] * 0
    assert float(np.abs(model.be.to_numpy(model.params[0])).max()) > 0  # the original is its own
    state = model.__getstate__()
    state["pickle_format"] = 99
    with pytest.raises(ValueError, match="cannot unpickle this ConvNet: it is in pickle format 99"):
        ConvNet.__new__(ConvNet).__setstate__(state)


# ---- the command line ------------------------------------------------------------------------------


def small_mnist_root(folder: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """Four IDX files of the shipped subset's first images: a real MNIST that a LeNet epoch runs on in seconds."""
    from softgrad.datasets._catalogue import SHIPPED_MNIST
    from softgrad.datasets.idx import read_idx

    from tests.test_datasets import write_idx

    read = {stem: (read_idx(SHIPPED_MNIST / f"{stem}-images-idx3-ubyte.gz"),
                   read_idx(SHIPPED_MNIST / f"{stem}-labels-idx1-ubyte.gz")) for stem in ("train", "t10k")}
    write_idx(folder, "train", read["train"][0][:n_train], read["train"][1][:n_train])
    write_idx(folder, "t10k", read["t10k"][0][:n_test], read["t10k"][1][:n_test])
    return folder


def test_train_evaluate_predict_a_lenet(tmp_path):
    from PIL import Image

    root = small_mnist_root(tmp_path / "mnist")
    out = tmp_path / "run"
    common = ["--dataset", "mnist", "--root", str(root), "--batch-size", "16"]
    result = in_process.run(train_command.main, "--model", "lenet", *common, "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "lenet 1x28x28 -> 10 on numpy (61,706 parameters, float32)" in result.stdout
    for name in ("checkpoint.npz", "history.json", "curves.png", "predictions.png", "run.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["model"] == "lenet"
    resumed = in_process.run(train_command.main, "--resume", str(out), "--epochs", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2]

    evaluated = in_process.run(evaluate_command.main, str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    model = checkpoint.load(out / "checkpoint.npz")[0]
    data = datasets.load("mnist", root=root)
    accuracy = float(np.mean(predict(model, data.x_test) == data.y_test))
    assert f"{accuracy:.2%}" in evaluated.stdout
    raw = np.asarray(Image.open(_png(tmp_path, root)), dtype=np.uint8)
    expected = predict(model, ((raw.reshape(1, -1) / 255.0) - 0.1307) / 0.3081)[0]
    np.save(tmp_path / "rows.npy", np.repeat(raw.reshape(1, -1), 2, axis=0))
    predicted = in_process.run(evaluate_command.predict_main, str(out), str(tmp_path / "one.png"),
                               str(tmp_path / "rows.npy"))
    assert predicted.returncode == 0, predicted.stderr
    assert f"one.png: {expected}" in predicted.stdout and f"rows.npy: {expected}, {expected}" in predicted.stdout

    layers = in_process.run(train_command.main, "--layers", "conv(4,3) relu maxpool(2) dense(16) relu", *common,
                            "--epochs", "1", "--out", str(tmp_path / "own"), "--quiet")
    assert layers.returncode == 0, layers.stderr
    saved = json.loads((tmp_path / "own" / "run.json").read_text())
    assert saved["model"] == "convnet" and saved["layers"] == "conv(4,3) relu maxpool(2) dense(16) relu"


def _png(tmp_path: Path, root: Path) -> Path:
    from PIL import Image
    from softgrad.datasets.idx import read_idx

    image = read_idx(next(root.glob("t10k-images*")))[0]
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "one.png")
    return tmp_path / "one.png"


@pytest.mark.parametrize("args, message", [
    (["--layers", "conv(6,5) relu wobble"], "--layers: unknown layer 'wobble'"),
    (["--layers", "conv(4,5) maxpool(2) conv(4,5) maxpool(2) conv(4,5)"],
     "--layers: layer 5 conv(4,5): a 5x5 kernel (dilation 1, padding 0) does not fit its 4x4 input map"),
    (["--model", "lenet", "--hidden", "64"], "--hidden shapes the MLP; --model lenet has no hidden widths"),
    (["--model", "lenet", "--activation", "tanh"], "--activation sets the MLP's hidden activation"),
    (["--model", "lenet", "--chunked-head"], "--chunked-head fuses the MLP's last layer"),
    (["--model", "lenet", "--layers", "conv(4,3)"], "--model lenet names its own layers"),
    (["--model", "mlp", "--layers", "conv(4,3)"], "--model mlp is an MLP"),
    (["--model", "convnet"], "--model convnet needs --layers SPEC"),
    (["--model", "tutorial-cnn", "--dataset", "synthetic"], "--model tutorial-cnn takes images; synthetic is rows"),
])
def test_bad_model_flags_are_one_line_and_leave_no_folder(tmp_path, args, message):
    out = tmp_path / "out"
    result = in_process.run(train_command.main, *args, "--epochs", "1", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_the_auto_probe_builds_the_convnet():
    from softgrad.training import auto

    model = ConvNet(SMALL, (8, 8), 3)
    assert auto.network_of(model) == model.config()
    assert auto.probe("numpy", auto.network_of(model), 8, "float32", seconds=0.02) > 0


def test_k_simulated_ranks_train_a_convnet_as_one_process():
    """fit on 2 and 3 data-parallel ranks (threads, tests/simulated_ranks.py) equals one process on the global
    batch, in float64."""
    from tests.simulated_ranks import run_ranks

    data = tiny_images(n_train=30, n_test=6)

    def train(comm):
        model = ConvNet(SMALL, data.image_shape, 3, seed=1, dtype=np.float64)
        fit(model, data, epochs=1, batch_size=8, lr_schedule="constant", log=None, progress=False, communicator=comm)
        return model

    one = train(None)
    for world in (2, 3):
        for result in run_ranks(world, train):
            assert not isinstance(result, BaseException), result
            for a, b in zip(result.params, one.params):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
