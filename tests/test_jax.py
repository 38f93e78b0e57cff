"""What is particular to the JAX backend: the 64-bit scope stays inside softgrad, the compiled paths are
reused across epochs, errors raised from compiled code name their cause, arrays come in through DLPack."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad import datasets
from softgrad.backends import available_backends, get_backend
from softgrad.training import MLP, fit

jax = pytest.importorskip("jax")
pytestmark = pytest.mark.skipif(available_backends().get("jax") != "available", reason="the jax backend is unavailable")


def test_float64_works_without_switching_the_users_jax_to_64_bits():
    be = get_backend("jax")
    z = be.asarray(np.random.default_rng(0).standard_normal((8, 5)))
    loss, grad = be.cross_entropy_and_grad(z, be.asarray(np.arange(8) % 5))
    assert z.dtype == np.float64 and loss.dtype == np.float64 and grad.dtype == np.float64
    data = datasets.synthetic(n_train=64, n_test=16, num_features=6, num_classes=3, seed=0)
    model = MLP([6, 8, 3], seed=0, dtype=np.float64)
    fit(model, data, backend="jax", epochs=1, batch_size=16, progress=False, log=None)
    assert all(p.dtype == np.float64 for p in model.params)
    # outside softgrad, JAX behaves as its user left it: 32 bits by default
    assert not jax.config.jax_enable_x64
    assert jax.numpy.asarray(np.ones(3)).dtype == np.float32 and jax.numpy.arange(3).dtype == np.int32


def test_every_method_runs_in_the_64_bit_scope():
    """The explicit table in JaxBackend's body leaves no public method out (a method added to ArrayAPIBackend
    must get its line there), and each keeps float64."""
    from softgrad.backends.jax_backend import JaxBackend

    unscoped = [name for name in dir(JaxBackend) if not name.startswith("_") and name != "scope"
                and callable(getattr(JaxBackend, name)) and not hasattr(getattr(JaxBackend, name), "__wrapped__")]
    assert unscoped == []
    be = get_backend("jax")
    x = be.asarray(np.linspace(-1.0, 1.0, 6).reshape(3, 2))
    with be.scope():  # the test's own arithmetic on float64 arrays needs the scope, as a JAX user's does
        positive, negated = x > 0, -x
    for result in (be.where(positive, x, negated), be.take(x, be.asarray(np.array([2, 0])), axis=0), be.reshape(x, (2, 3)),
                   be.mse_loss(x, x), be.sigmoid(x), be.affine_relu(x, be.asarray(np.eye(2)), be.asarray(np.ones(2)))):
        assert result.dtype == np.float64


def test_the_compiled_step_is_reused_across_epochs_and_for_the_last_partial_batch():
    from softgrad.backends import jax_backend

    data = datasets.synthetic(n_train=100, n_test=20, num_features=6, num_classes=3, seed=0)  # batches 32, 32, 32, 4
    model = MLP([6, 8, 3], seed=0)
    fit(model, data, backend="jax", epochs=1, batch_size=32, progress=False, log=None)
    compiled = [jax_backend._jit(jax_backend._cross_entropy_kernel, ("reduction",)),
                jax_backend._jit(jax_backend._sgd_kernel, jax_backend.SGD_STATIC)]
    sizes = [f._cache_size() for f in compiled]
    fit(model, data, backend="jax", epochs=3, batch_size=32, progress=False, log=None)
    assert [f._cache_size() for f in compiled] == sizes  # two more epochs compiled nothing new


def test_errors_from_compiled_code_name_their_cause():
    be = get_backend("jax")
    z = be.asarray(np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match="row 1 of the logits holds NaN"):
        be.cross_entropy_and_grad(z, be.asarray(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"label 3 \(sample 0\) is out of range for C=3"):
        be.cross_entropy_and_grad(be.asarray(np.zeros((2, 3), np.float32)), be.asarray(np.array([3, 0])))


def test_arrays_come_in_through_dlpack_and_go_back_as_copies():
    torch = pytest.importorskip("torch")
    be = get_backend("jax")
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    array = be.asarray(tensor)
    assert isinstance(array, jax.Array) and array.dtype == np.float32
    np.testing.assert_array_equal(be.to_numpy(array), tensor.numpy())
    host = be.to_numpy(array)
    host[0, 0] = 42.0  # a copy: the device array is untouched
    assert float(be.to_numpy(array)[0, 0]) == 0.0


def test_jax_gpu_is_refused_in_one_line_where_there_is_no_gpu():
    status = available_backends()["jax:gpu"]
    if status == "available":
        pytest.skip("a GPU is here")
    assert "no GPU device" in status and "use 'jax' for the CPU" in status and "\n" not in status
