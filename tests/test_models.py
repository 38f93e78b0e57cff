"""The models' hand-written backward passes against torch autograd; seeded weights."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.training.models import MLP, classic_mlp

from tests.conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional
TORCH_ACTIVATIONS = {"relu": torch.relu, "leaky_relu": F.leaky_relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def autograd_reference(model: MLP, x: np.ndarray, y: np.ndarray):
    """Loss and gradients of the same network written with torch autograd, in float64."""
    params = [torch.tensor(model.be.to_numpy(p), dtype=torch.float64, requires_grad=True) for p in model.params]
    h = torch.from_numpy(x.astype(np.float64))
    layers = len(model.widths) - 1
    for i in range(layers):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < layers - 1:
            h = TORCH_ACTIVATIONS[model.activation_name](h)
    loss = F.cross_entropy(h, torch.from_numpy(y))
    loss.backward()
    return float(loss.detach()), [p.grad.numpy() for p in params]


# batch 300: the torch backend computes the 10-output layer's products in the transposed layout
# from batch 256 on (see TorchBackend._skinny)
@pytest.mark.parametrize("activation, batch", [("relu", 32), ("leaky_relu", 32), ("sigmoid", 32), ("tanh", 32),
                                               ("relu", 300)])
def test_mlp_gradients_match_autograd(be, dtype, activation, batch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 784)).astype(dtype)
    y = rng.integers(0, 10, batch)
    model = classic_mlp(activation=activation, dtype=dtype, backend=be, seed=3)
    logits, cache = model.forward(be.asarray(x))
    loss, dlogits = be.cross_entropy_and_grad(logits, be.asarray(y))
    grads = model.backward(cache, dlogits)
    expected_loss, expected = autograd_reference(model, x, y)
    assert_close(be.to_numpy(loss), expected_loss, dtype)
    for i, (ours, theirs) in enumerate(zip(grads, expected)):
        assert be.to_numpy(ours).dtype == dtype and ours.shape == theirs.shape
        # float32 gradients pass through five layers of float32 matmuls
        scale = 1.0 if dtype == np.float64 else 20.0
        assert_close(be.to_numpy(ours), theirs, dtype, scale=scale, what=f"gradient {i}")


@pytest.mark.parametrize("n, features", [(8, 5), (300, 784)])
def test_softmax_regression_gradient_is_x_transpose_times_dlogits(be, n, features):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features))
    y = rng.integers(0, 3, n)
    model = MLP([features, 3], dtype=np.float64, backend=be)
    logits, cache = model.forward(be.asarray(x))
    grads = model.backward(cache, be.cross_entropy_grad(logits, be.asarray(y)))
    _, expected = autograd_reference(model, x, y)
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(be.to_numpy(ours), theirs, rtol=1e-12, atol=1e-14)


def test_one_seed_gives_the_same_weights_on_every_backend(be):
    ours = classic_mlp(seed=7, backend=be)
    reference = classic_mlp(seed=7, backend="numpy")
    for a, b in zip(ours.params, reference.params):
        np.testing.assert_array_equal(be.to_numpy(a), reference.be.to_numpy(b))
    other = classic_mlp(seed=8)
    assert not np.array_equal(other.params[0], reference.params[0])


def test_initialisation_scales():
    model = MLP([2000, 1000, 10], activation="relu", seed=0, dtype=np.float64)
    w_hidden, b_hidden, w_out, _ = model.params
    assert np.std(w_hidden) == pytest.approx(np.sqrt(2 / 2000), rel=0.01)  # He
    limit = np.sqrt(6 / (1000 + 10))
    assert np.abs(w_out).max() <= limit and np.std(w_out) == pytest.approx(limit / np.sqrt(3), rel=0.05)  # Glorot
    assert not b_hidden.any()
    tanh = MLP([2000, 1000, 10], activation="tanh", seed=0, dtype=np.float64)
    assert np.abs(tanh.params[0]).max() <= np.sqrt(6 / 3000)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLP([4, 2], activation="gelu")
    with pytest.raises(ValueError, match="at least an input and an output width"):
        MLP([4])
    with pytest.raises(TypeError, match="float32 or float64"):
        MLP([4, 2], dtype=np.float16)


def test_moving_between_backends_keeps_the_weights():
    model = classic_mlp(seed=1)
    before = [p.copy() for p in model.params]
    model.to("torch").to("numpy")
    for a, b in zip(model.params, before):
        np.testing.assert_array_equal(a, b)
