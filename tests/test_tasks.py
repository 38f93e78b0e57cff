"""Regression and binary classification end to end: the tutorial's linear regression against torch,
diabetes against scikit-learn, "is it a 0?" on MNIST, every optimizer's checkpoints, the metrics."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad import datasets
from softgrad.numerics import OPTIMIZERS
from softgrad.training import checkpoint, evaluate, fit, predict
from softgrad.training.metrics import regression_metrics
from softgrad.training.models import MLP
from softgrad.training.settings import TrainSettings

from tests.conftest import AVAILABLE

torch = pytest.importorskip("torch")

# ---- the PyTorch tutorial's linear regression -------------------------------------------------------------


def tutorial_losses_with_torch(weight: float, bias: float) -> list[float]:
    """yunjey/pytorch-tutorial's linear regression: nn.Linear(1, 1), MSELoss, SGD(lr=0.001), full batch,
    60 epochs; the loss printed at every 5th epoch (computed before that epoch's step)."""
    data = datasets.load("toy-regression")
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    inputs, targets = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    printed = []
    for epoch in range(60):
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 5 == 0:
            printed.append(loss.item())
    return printed


@pytest.mark.parametrize("backend", [name for name in ("numpy", "torch", "array-api-strict") if name in AVAILABLE])
def test_the_tutorial_linear_regression_follows_torch(backend):
    data = datasets.load("toy-regression")
    reference = torch.nn.Linear(1, 1)  # torch's own initialisation, seeded: the tutorial's starting point
    torch.manual_seed(0)
    reference.reset_parameters()
    weight, bias = reference.weight.item(), reference.bias.item()
    expected = tutorial_losses_with_torch(weight, bias)

    model = MLP([1, 1], dtype=np.float32)
    model.params = [np.array([[weight]], np.float32), np.array([bias], np.float32)]  # x W + b, W = weight^T
    history = fit(model, data, backend=backend, loss="mse", optimizer="sgd", lr=0.001, momentum=0.0,
                  nesterov=False, weight_decay=0.0, lr_schedule="constant", batch_size=len(data.y_train),
                  epochs=60, progress=False, log=None)
    ours = [record["train_loss"] for record in history[4::5]]
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    assert expected[-1] < expected[0]  # it learned something: the comparison is not between two constants


# ---- regression on a real data set, against scikit-learn --------------------------------------------------


def test_linear_regression_on_diabetes_reaches_the_least_squares_solution():
    """Adam on the MSE of a linear model converges to scikit-learn's closed-form LinearRegression."""
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    data = datasets.load("diabetes")
    model = MLP([data.num_features, 1], seed=0, dtype=np.float64)
    # full batch, the step decaying to 0 (cosine): Adam settles on the minimum instead of circling it
    history = fit(model, data, optimizer="adam", lr=0.1, epochs=3000, batch_size=len(data.y_train), progress=False,
                  log=None)
    assert {"test_rmse", "test_mae", "test_r2"} <= set(history[-1]) and "test_accuracy" not in history[-1]
    raw_train = data.y_train[:, 0] * data.target_std[0] + data.target_mean[0]
    raw_test = data.y_test[:, 0] * data.target_std[0] + data.target_mean[0]
    sk = sklearn_linear.LinearRegression().fit(data.x_train, raw_train)
    expected = regression_metrics(raw_test, sk.predict(data.x_test))
    ours = predict(model, data.x_test, loss="mse", target_mean=data.target_mean, target_std=data.target_std)
    np.testing.assert_allclose(ours[:, 0], sk.predict(data.x_test), rtol=0, atol=1e-3)  # predictions of ~150
    assert history[-1]["test_rmse"] == pytest.approx(expected["rmse"], rel=1e-6)
    assert history[-1]["test_r2"] == pytest.approx(expected["r2"], abs=1e-6)


def test_regression_metrics_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    truth = rng.standard_normal((50, 3)) * [1.0, 10.0, 100.0]
    guess = truth + rng.standard_normal((50, 3))
    ours = regression_metrics(truth, guess)
    assert ours["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(truth, guess)), rel=1e-12)
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(truth, guess), rel=1e-12)
    assert ours["r2"] == pytest.approx(metrics.r2_score(truth, guess), rel=1e-12)
    assert regression_metrics(truth[:, 0], guess[:, 0])["r2"] == pytest.approx(
        metrics.r2_score(truth[:, 0], guess[:, 0]), rel=1e-12)


@pytest.mark.parametrize("loss", ["mse", "l1", "smooth_l1", "huber"])
def test_every_regression_loss_trains_an_mlp(loss):
    data = datasets.load("diabetes")
    model = MLP([data.num_features, 16, 1], seed=0, dtype=np.float32)
    history = fit(model, data, loss=loss, optimizer="adam", lr=0.01, epochs=20, batch_size=32, progress=False,
                  log=None)
    assert history[-1]["test_r2"] > 0.2 and history[-1]["train_loss"] < history[0]["train_loss"]


# ---- binary classification ----------------------------------------------------------------------------------


def test_is_it_a_zero_on_mnist():
    data = datasets.load("mnist", binary="0")
    model = MLP([data.num_features, 1], seed=0)
    history = fit(model, data, optimizer="adam", lr=1e-3, epochs=1, progress=False, log=None)  # loss: bce, one logit
    zeros = float(np.mean(data.y_test == 1))
    assert history[-1]["test_accuracy"] > 0.985 > 1 - zeros  # far better than always saying "not 0"
    predictions = predict(model, data.x_test, loss="bce_with_logits")
    assert set(np.unique(predictions)) == {0, 1}
    result = evaluate(model, data.x_test, data.y_test, loss="bce_with_logits")
    assert result["accuracy"] == pytest.approx(np.mean(predictions == data.y_test))
    assert result["accuracy"] == pytest.approx(history[-1]["test_accuracy"])
    # the sigmoid of the logits, through the protocol, is the probability the decision thresholds at 0.5
    logits = model.logits(model.be.asarray(data.x_test[:64]))
    probability = model.be.to_numpy(model.be.sigmoid(logits))[:, 0]
    np.testing.assert_array_equal(probability > 0.5, predictions[:64] == 1)


def test_a_loss_that_does_not_fit_the_data_is_named():
    regression, classes = datasets.load("toy-regression"), datasets.load("synthetic", n_train=50, n_test=20)
    with pytest.raises(ValueError, match="cross_entropy is a classification loss, but toy-regression"):
        fit(MLP([1, 1]), regression, loss="cross_entropy", epochs=1, log=None)
    with pytest.raises(ValueError, match="mse_loss is a regression loss, but synthetic has class labels"):
        fit(MLP([784, 10]), classes, loss="mse", epochs=1, log=None)
    with pytest.raises(ValueError, match=r"trains one output on two classes: synthetic has 10 classes.*--binary"):
        fit(MLP([784, 1]), classes, loss="bce_with_logits", epochs=1, log=None)


# ---- every optimizer: checkpoints resume exactly, on a backend and across them ----------------------------


RESUMABLE = [name for name in AVAILABLE if name in ("numpy", "torch", "array-api-strict", "numpy-immutable", "jax")]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", RESUMABLE)
def test_every_optimizer_resumes_exactly(optimizer, backend, tmp_path):
    """Stopped after epoch 2 and resumed: bit for bit the uninterrupted run, on the backend that wrote the
    checkpoint; on another backend, the same run within float64 rounding."""
    data = datasets.synthetic(n_train=200, n_test=50, num_features=12, num_classes=3, seed=1)
    options = {"amsgrad": True} if optimizer in ("adam", "adamw") else (
        {"centered": True, "momentum": 0.5} if optimizer == "rmsprop" else
        {"initial_accumulator_value": 0.1} if optimizer == "adagrad" else {})
    # a constant schedule: the run of 2 epochs is the first 2 epochs of the run of 3
    settings = dict(optimizer=optimizer, lr=0.01, batch_size=32, lr_schedule="constant", progress=False, log=None,
                    **options)

    straight = MLP([12, 16, 3], seed=2, dtype=np.float64)
    straight_history = fit(straight, data, backend=backend, epochs=3, **settings)
    path = tmp_path / "checkpoint.npz"
    fit(MLP([12, 16, 3], seed=2, dtype=np.float64), data, backend=backend, epochs=2, checkpoint_path=path,
        **settings)
    _, state, _, saved = checkpoint.load(path)
    assert saved["optimizer"] == optimizer and type(state) is OPTIMIZERS[optimizer].state_type
    assert state.step == 2 * 7  # 200 samples in batches of 32
    resumed = MLP([12, 16, 3], seed=2, dtype=np.float64)
    history = fit(resumed, data, backend=backend, epochs=3, resume=path, progress=False, log=None)
    assert resumed.be.name == backend
    for a, b in zip(straight.params, resumed.params):
        np.testing.assert_array_equal(straight.be.to_numpy(a), resumed.be.to_numpy(b))
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in straight_history]
    for other in [name for name in RESUMABLE if name != backend]:
        moved = MLP([12, 16, 3], seed=2, dtype=np.float64)
        fit(moved, data, backend=other, epochs=3, resume=path, progress=False, log=None)
        for a, b in zip(straight.params, moved.params):
            np.testing.assert_allclose(moved.be.to_numpy(b), straight.be.to_numpy(a), rtol=1e-10, atol=1e-12)


# ---- what the review of this work found ---------------------------------------------------------------------


def test_predict_and_evaluate_answer_in_the_terms_the_model_was_trained_in(tmp_path):
    data = datasets.load("diabetes")
    model = MLP([data.num_features, 1], seed=0)
    fit(model, data, optimizer="adam", lr=0.05, epochs=20, checkpoint_path=tmp_path / "c.npz", progress=False,
        log=None)
    explicit = predict(model, data.x_test, loss="mse", target_mean=data.target_mean, target_std=data.target_std)
    np.testing.assert_array_equal(predict(model, data.x_test), explicit)  # the data's units, not class 0
    assert evaluate(model, data.x_test, data.y_test) == evaluate(
        model, data.x_test, data.y_test, loss="mse", target_mean=data.target_mean, target_std=data.target_std)
    loaded = checkpoint.load(tmp_path / "c.npz")[0]
    assert loaded.loss == "mse_loss" and loaded.target_std == pytest.approx(data.target_std)
    np.testing.assert_allclose(predict(loaded, data.x_test), explicit, rtol=1e-6)
    with pytest.raises(ValueError, match="one output is no softmax classifier"):
        predict(MLP([10, 1]), data.x_test)  # never trained: no silent argmax over one column


def test_loss_options_arrays_numbers_and_mistakes():
    data = datasets.load("mnist", binary="even")
    for backend in [name for name in ("numpy", "torch") if name in AVAILABLE]:
        for pos_weight in (np.array([2.0], np.float32), [2.0], 2.0):  # an array, a list, a number
            model = MLP([784, 1], seed=0)
            history = fit(model, data, backend=backend, loss="bce_with_logits", loss_options={"pos_weight": pos_weight},
                          optimizer="adam", epochs=1, batch_size=256, progress=False, log=None)
            assert history[-1]["test_accuracy"] > 0.8
    regression = datasets.load("toy-regression")
    with pytest.raises(ValueError, match=r"loss_options \{'delta': -0.5\}: huber_loss.*delta must be finite and > 0"):
        fit(MLP([1, 1]), regression, loss="huber", loss_options={"delta": -0.5}, epochs=1, log=None)
    with pytest.raises(ValueError, match="'reduction' is not an option of training"):
        fit(MLP([1, 1]), regression, loss="mse", loss_options={"reduction": "none"}, epochs=1, log=None)


def test_a_checkpoint_keeps_array_loss_options_and_resumes_with_them(tmp_path):
    data = datasets.load("mnist", binary="0")
    path = tmp_path / "c.npz"
    settings = dict(loss="bce_with_logits", loss_options={"pos_weight": np.array([3.0], np.float32)},
                    optimizer="adam", batch_size=256, lr_schedule="constant", progress=False, log=None)
    straight = MLP([784, 1], seed=0)
    fit(straight, data, epochs=2, **settings)
    fit(MLP([784, 1], seed=0), data, epochs=1, checkpoint_path=path, **settings)
    assert checkpoint.load(path)[3]["loss_options"] == {"pos_weight": [3.0]}
    resumed = MLP([784, 1], seed=0)
    fit(resumed, data, epochs=2, resume=path, progress=False, log=None)
    for a, b in zip(straight.params, resumed.params):
        np.testing.assert_array_equal(a, b)


def test_clear_errors_for_optimizer_calls():
    from softgrad.numerics.registry import get_backend

    be = get_backend("numpy")
    params, grads = [be.asarray(np.ones(3))], [be.asarray(np.ones(3))]
    new, state = be.adam_step(params, grads, be.adam_init(params))  # lr defaults to torch's, 1e-3
    np.testing.assert_allclose(new[0], 1 - 1e-3)
    with pytest.raises(TypeError, match="adam_step: adam has no hyperparameter 'momentum'; it takes lr, betas"):
        be.adam_step(params, grads, be.adam_init(params), momentum=0.9)
    with pytest.raises(TypeError, match=r"mse_loss: takes the input and the target, then options by keyword"):
        be.mse_loss(params[0], grads[0], "sum")
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        be.rmsprop_step(params, grads, be.rmsprop_init(params), lr=0.01, alpha=1.5)
    with pytest.raises(TypeError, match="lr is a setting of its own"):  # --optimizer-option lr=5
        TrainSettings(optimizer="adam", hyperparameters={"lr": 5}).check()


def test_zero_dimensional_arrays_stay_zero_dimensional(be):
    x, t = be.asarray(np.array(1.5)), be.asarray(np.array(0.5))
    assert tuple(x.shape) == ()
    assert tuple(be.mse_loss(x, t, reduction="none").shape) == ()
    assert float(be.to_numpy(be.mse_loss_grad(x, t))) == pytest.approx(2.0)
    assert tuple(be.sigmoid(x).shape) == ()
