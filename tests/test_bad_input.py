"""Bad input: each gets a clear ValueError or TypeError that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

Z = np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
Y = np.array([2, 0])


def call(be, op, z=Z, y=Y, **kwargs):
    return getattr(be, op)(be.asarray(z), be.asarray(y), **kwargs)


LOSSES = ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad", "nll_loss"]


@pytest.mark.parametrize("op", LOSSES)
def test_label_out_of_range_names_label_and_classes(be, op):
    with pytest.raises(ValueError, match=r"label 3 \(sample 1\) is out of range for C=3 classes"):
        call(be, op, y=np.array([0, 3]))
    with pytest.raises(ValueError, match=r"label -1 \(sample 0\) is out of range for C=3"):
        call(be, op, y=np.array([-1, 0]))


def test_ignore_index_is_not_out_of_range(be):
    loss = call(be, "cross_entropy", y=np.array([-100, 1]))
    assert np.isfinite(float(be.to_numpy(loss)))
    with pytest.raises(ValueError, match="label -100 .* ignore_index=-1"):
        call(be, "cross_entropy", y=np.array([-100, 1]), ignore_index=-1)


@pytest.mark.parametrize("op", LOSSES)
def test_float_labels(be, op):
    with pytest.raises(TypeError, match=r"class indices must be integers .*astype\('int64'\)"):
        call(be, op, y=np.array([2.0, 0.0]))


@pytest.mark.parametrize("op", LOSSES)
def test_bool_labels(be, op):
    with pytest.raises(TypeError, match="target is bool"):
        call(be, op, y=np.array([True, False]))


@pytest.mark.parametrize("op", LOSSES)
def test_n_mismatch(be, op):
    with pytest.raises(ValueError, match="3 labels for 2 samples"):
        call(be, op, y=np.array([0, 1, 2]))


@pytest.mark.parametrize("op", LOSSES)
def test_wrong_ndim(be, op):
    with pytest.raises(ValueError, match=r"must have shape \(N, C\), got 1 dimensions"):
        call(be, op, z=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"must have shape \(N, C\), got 3 dimensions"):
        call(be, op, z=np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"class-index target must have shape \(N,\)"):
        call(be, op, y=np.array([[0], [1]]))


@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_grad"])
def test_probability_target_of_wrong_shape(be, op):
    with pytest.raises(ValueError, match=r"probability target must have the shape of the logits \(2, 3\)"):
        call(be, op, y=np.full((2, 4), 0.25))
    with pytest.raises(TypeError, match="probability target is float32 but logits are float64"):
        call(be, op, y=np.full((2, 3), 1 / 3, dtype=np.float32))
    with pytest.raises(ValueError, match="ignore_index=1 applies to class indices only"):
        call(be, op, y=np.full((2, 3), 1 / 3), ignore_index=1)


def test_nll_loss_refuses_probabilities(be):
    with pytest.raises(TypeError, match="for class probabilities use cross_entropy"):
        call(be, "nll_loss", y=np.full((2, 3), 1 / 3))


@pytest.mark.parametrize("op", LOSSES)
def test_logit_dtypes_the_backend_cannot_use(be, op):
    with pytest.raises(TypeError, match="must be float32 or float64, got int64"):
        call(be, op, z=np.array([[1, 2], [3, 4]]), y=np.array([0, 1]))
    with pytest.raises(TypeError, match="must be float32 or float64, got float16"):
        call(be, op, z=Z.astype(np.float16))


def test_asarray_refuses_unsupported_dtypes(be):
    for bad in (np.array([1 + 2j]), np.array(["a", "b"]), np.array([object()], dtype=object)):
        with pytest.raises(TypeError, match="not supported|cannot make an array"):
            be.asarray(bad)


def test_asarray_keeps_float_dtypes(be):
    for dtype in (np.float32, np.float64, np.int64, np.uint8):
        assert be.to_numpy(be.asarray(np.zeros(3, dtype))).dtype == dtype
    assert be.to_numpy(be.asarray([0.5, 1.5])).dtype == np.float64  # as NumPy does, on every backend
    assert be.to_numpy(be.asarray(np.zeros(3), dtype="float32")).dtype == np.float32


@pytest.mark.parametrize("op", LOSSES)
def test_empty_batch(be, op):
    with pytest.raises(ValueError, match=r"empty batch: .* \(N = 0\)"):
        call(be, op, z=np.zeros((0, 3)), y=np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_input_errors(be, op):
    fn = getattr(be, op)
    with pytest.raises(ValueError, match="is empty"):
        fn(be.asarray(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        fn(be.asarray(Z), axis=2)
    with pytest.raises(TypeError, match="must be float32 or float64"):
        fn(be.asarray(np.array([[1, 2]])))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(label_smoothing=1.5), ValueError, r"label_smoothing must lie in \[0, 1\]"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing must be a float"),
        (dict(ignore_index=1.0), TypeError, "ignore_index must be an int"),
    ],
)
def test_bad_options(be, kwargs, error, message):
    with pytest.raises(error, match=message):
        call(be, "cross_entropy", **kwargs)


def test_bad_weight(be):
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\), got \(2,\)"):
        call(be, "cross_entropy", weight=be.asarray(np.ones(2)))
    with pytest.raises(TypeError, match="weight is float32 but logits are float64"):
        call(be, "cross_entropy", weight=be.asarray(np.ones(3, np.float32)))


def test_mean_over_no_samples(be):
    with pytest.raises(ValueError, match="reduction='mean' over no weight"):
        call(be, "cross_entropy", y=np.array([-100, -100]))
    with pytest.raises(ValueError, match="reduction='mean' over no weight"):
        call(be, "cross_entropy", weight=be.asarray(np.array([1.0, 1.0, 0.0])), y=np.array([2, 2]))
    total = call(be, "cross_entropy", y=np.array([-100, -100]), reduction="sum")
    assert float(be.to_numpy(total)) == 0.0


def test_arrays_of_another_library_are_named(be):
    # a list where the backend's arrays are NumPy's (numpy, cupy-on-cpu), else a NumPy array
    other = [1.0, 2.0] if isinstance(np.ones(1), be.array_type) else np.ones((2, 3))
    with pytest.raises(TypeError, match="not an array of the .* backend; convert it once with be.asarray"):
        be.softmax(other)
    with pytest.raises(TypeError, match="cross_entropy: target is a .*convert it once"):
        be.cross_entropy(be.asarray(Z), Y.tolist())
