"""The training loop: same trajectory on every backend, exact resume, checkpoints, divergence."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad import datasets
from softgrad.training import TrainingDivergedError, checkpoint, evaluate, fit, predict
from softgrad.training.models import MLP, classic_mlp

from tests.conftest import AVAILABLE

torch = pytest.importorskip("torch")


def small_data(n_train=640, n_test=200, num_features=20, num_classes=4, seed=0):
    return datasets.synthetic(n_train=n_train, n_test=n_test, num_features=num_features,
                              num_classes=num_classes, seed=seed)


def train(backend, dtype, data, epochs=2, **kwargs):
    model = MLP([data.num_features, 32, 16, data.num_classes], seed=5, dtype=dtype)
    settings = dict(epochs=epochs, batch_size=20, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                    progress=False, log=None)
    settings.update(kwargs)
    history = fit(model, data, backend=backend, **settings)
    return model, history


@pytest.mark.skipif("torch" not in AVAILABLE, reason="needs the torch backend")
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-10, 1e-12), (np.float32, 2e-4, 2e-5)])
def test_numpy_and_torch_follow_the_same_trajectory(dtype, rtol, atol):
    data = small_data()  # 640 samples / batch 20 = 32 steps per epoch, 64 steps in all
    numpy_model, numpy_history = train("numpy", dtype, data)
    torch_model, torch_history = train("torch", dtype, data)
    for a, b in zip(numpy_model.params, torch_model.params):
        np.testing.assert_allclose(a, torch_model.be.to_numpy(b), rtol=rtol, atol=atol)
    for a, b in zip(numpy_history, torch_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rtol * 10, abs=atol * 10)
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1 / 200 + 1e-12)


def test_fit_matches_a_hand_rolled_torch_loop():
    """The loop's batches, order, schedule and SGD against torch autograd and torch.optim.SGD."""
    data = small_data()
    model, _ = train("numpy", np.float64, data, epochs=1, lr_schedule="constant")
    reference = MLP([data.num_features, 32, 16, data.num_classes], seed=5, dtype=np.float64)
    params = [torch.tensor(p, requires_grad=True) for p in reference.params]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    order = np.random.default_rng([0, 1]).permutation(len(data.y_train))
    x, y = torch.from_numpy(data.x_train[order].astype(np.float64)), torch.from_numpy(data.y_train[order])
    for start in range(0, len(order), 20):
        h = x[start:start + 20]
        for i in range(3):
            h = h @ params[2 * i] + params[2 * i + 1]
            h = torch.relu(h) if i < 2 else h
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(h, y[start:start + 20]).backward()
        optimizer.step()
    for ours, theirs in zip(model.params, params):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_resume_continues_exactly(tmp_path):
    data = small_data()
    straight, straight_history = train("numpy", np.float64, data, epochs=3)
    path = tmp_path / "checkpoint.npz"

    def crash_after_epoch_2(line):
        if line.startswith("epoch   2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the same run, killed after its second epoch
        train("numpy", np.float64, data, epochs=3, checkpoint_path=path, log=crash_after_epoch_2)
    resumed = MLP([data.num_features, 32, 16, data.num_classes], seed=5, dtype=np.float64)
    history = fit(resumed, data, epochs=3, resume=path, checkpoint_path=path, progress=False, log=None)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for a, b in zip(straight.params, resumed.params):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight_history, history):
        assert a["train_loss"] == b["train_loss"] and a["test_accuracy"] == b["test_accuracy"]


@pytest.mark.skipif("torch" not in AVAILABLE, reason="needs the torch backend")
def test_checkpoint_from_torch_evaluates_on_numpy(tmp_path):
    data = small_data()
    path = tmp_path / "run" / "checkpoint.npz"
    model, history = train("torch", np.float32, data, checkpoint_path=path)
    loaded, state, loaded_history, settings = checkpoint.load(path, "numpy")
    assert loaded.be.name == "numpy" and state.step == 2 * 32 and loaded_history == history
    assert settings["batch_size"] == 20
    assert evaluate(loaded, data.x_test, data.y_test)["accuracy"] == history[-1]["test_accuracy"]
    np.testing.assert_array_equal(predict(loaded, data.x_test), predict(model, data.x_test))
    # no temporary files left; the metrics stream is the run's
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.npz", "metrics.jsonl"]


def test_divergence_names_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data = small_data()
    path = tmp_path / "checkpoint.npz"
    train("numpy", np.float64, data, epochs=1, checkpoint_path=path)
    good = path.read_bytes()
    model = MLP([data.num_features, 32, 16, data.num_classes], seed=5, dtype=np.float64)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step \d+: .*Lower the learning rate"):
        fit(model, data, epochs=3, resume=path, checkpoint_path=path, progress=False, log=None, lr=1e6)
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch 1, step \d+"):
        fit(MLP([data.num_features, 32, 16, data.num_classes], seed=5), data, lr=1e8, momentum=0.0,
            nesterov=False, lr_schedule="constant", epochs=1, progress=False, log=None)
    assert path.read_bytes() == good


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def failing(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(path, failing)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a softgrad checkpoint or is damaged"):
        checkpoint.load(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.npz")


def test_data_that_does_not_fit_the_model():
    data = small_data()
    with pytest.raises(ValueError, match="the data has 20 features and 4 classes; the model expects 784 and 10"):
        fit(classic_mlp(), data, epochs=1, progress=False, log=None)


# ---- accuracy on real MNIST: the shipped 20,000-image subset, the official test set -------------


@pytest.mark.parametrize("backend", [b for b in ("numpy", "torch") if b in AVAILABLE])
@pytest.mark.parametrize("model_name, target", [("mlp", 0.975), ("linear", 0.91)])
def test_accuracy_on_mnist_with_the_defaults(backend, model_name, target):
    data = datasets.load("mnist")
    model = classic_mlp(seed=0) if model_name == "mlp" else MLP([784, 10], seed=0)
    history = fit(model, data, backend=backend, epochs=10, progress=False, log=None)
    assert len(data.y_test) == 10_000
    accuracy = float(np.mean(predict(model, data.x_test) == data.y_test))  # against the official labels
    assert accuracy == pytest.approx(history[-1]["test_accuracy"])
    assert accuracy >= target, f"{model} on {backend}: {accuracy:.2%} < {target:.1%}"


def test_plain_sgd_with_the_default_nesterov_flag():
    # momentum 0 with fit's default Nesterov is plain SGD; Nesterov asked for with momentum 0 is refused before
    # any work, as torch.optim.SGD and sgd_step refuse it (issue 20: it used to train without Nesterov, silently)
    model, history = train("numpy", np.float64, small_data(), epochs=1, momentum=0.0, nesterov=None)
    assert np.isfinite(history[-1]["train_loss"])
    with pytest.raises(ValueError, match="nesterov momentum requires momentum > 0"):
        train("numpy", np.float64, small_data(), epochs=1, momentum=0.0, nesterov=True)


def test_bad_data_is_named_before_training_starts():
    data = small_data()
    x = data.x_train.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="training sample 3 holds NaN or inf features"):
        train("numpy", np.float64, datasets.Dataset(**{**data.__dict__, "x_train": x}))
    y = data.y_test.copy()
    y[5] = 9
    with pytest.raises(ValueError, match=r"test label 9 \(sample 5\) is out of range for 4 classes"):
        train("numpy", np.float64, datasets.Dataset(**{**data.__dict__, "y_test": y}))


def test_resume_with_auto_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTGRAD_CACHE", str(tmp_path))
    data = small_data()
    path = tmp_path / "checkpoint.npz"
    train("numpy", np.float64, data, epochs=1, checkpoint_path=path)
    model = MLP([data.num_features, 32, 16, data.num_classes], seed=5, dtype=np.float64)
    history = fit(model, data, backend="auto", epochs=2, resume=path, progress=False, log=None)
    assert [r["epoch"] for r in history] == [1, 2]


def test_predict_on_no_rows_and_model_copies():
    model = MLP([4, 3])
    assert predict(model, np.zeros((0, 4), np.float32)).shape == (0,)
    mine = [p.copy() for p in model.params]
    restored = MLP.from_config(model.config(), mine)
    restored.params[0] += 1.0
    assert not np.shares_memory(restored.params[0], mine[0]) and np.array_equal(mine[0], model.params[0])


@pytest.mark.parametrize("backend", [b for b in ("numpy", "torch", "jax") if b in AVAILABLE])
def test_a_chunked_head_trains_as_the_dense_path(backend):
    """fit(chunked_head=True) fuses the last layer with cross-entropy (linear_cross_entropy, no logits kept
    for the batch): the same losses and parameters as the dense forward, cross_entropy_and_grad and backward, whose
    gradients the suite holds to torch's autograd; label smoothing passes through."""
    data = small_data(n_train=200, n_test=60, num_classes=30)
    options = {"loss_options": {"label_smoothing": 0.1}}
    dense_model, dense_history = train(backend, np.float64, data, **options)
    chunked_model, chunked_history = train(backend, np.float64, data, chunked_head=True, **options)
    for a, b in zip(dense_model.params, chunked_model.params):
        np.testing.assert_allclose(chunked_model.be.to_numpy(b), dense_model.be.to_numpy(a), rtol=1e-9, atol=1e-12)
    for a, b in zip(dense_history, chunked_history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-10)
        assert b["test_accuracy"] == a["test_accuracy"] and b["train_accuracy"] is None


def test_a_chunked_head_needs_cross_entropy():
    data = small_data(n_train=40, n_test=20)
    with pytest.raises(ValueError, match="chunked_head fuses the last layer with cross_entropy"):
        train("numpy", np.float32, data, loss="nll_loss", chunked_head=True)
