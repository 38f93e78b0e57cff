"""The losses' input checks (softgrad.numerics.validation and the losses' finite checks): errors that name the
bad input, and NumPy scalar arguments accepted as torch accepts them."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.backends import get_backend


@pytest.mark.parametrize("row, why", [([1.0, np.nan], "holds NaN"), ([np.inf, 1.0], r"holds \+inf"),
                                      ([-np.inf, -np.inf], "is all -inf")])
def test_one_dimensional_inputs_without_a_softmax_are_named(be, row, why):
    for op in (be.softmax, be.log_softmax):
        with pytest.raises(ValueError, match=f"the input {why}"):
            op(be.asarray(np.array(row)))


def test_numpy_scalar_arguments_are_accepted_as_torch_accepts_them(be):
    z, y = be.asarray(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]])), be.asarray(np.array([2, -100]))
    plain = be.to_numpy(be.cross_entropy(z, y, label_smoothing=0.1, ignore_index=-100))
    numpy_args = be.to_numpy(be.cross_entropy(z, y, label_smoothing=np.float32(0.1), ignore_index=np.int64(-100)))
    np.testing.assert_allclose(numpy_args, plain, rtol=1e-7)
    np.testing.assert_allclose(be.to_numpy(be.softmax(z, axis=np.int64(0))), be.to_numpy(be.softmax(z, axis=0)))


def test_huge_unsigned_labels_are_printed_as_they_are():
    be = get_backend("numpy")
    with pytest.raises(ValueError, match=r"label 9223372036854775813 \(sample 0\) is out of range"):
        be.cross_entropy(np.ones((2, 3)), np.array([2**63 + 5, 1], dtype=np.uint64))


def test_losses_name_the_input_that_is_not_finite(be):
    z = be.asarray(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]]))
    y = be.asarray(np.array([0, 1]))
    for bad in (np.nan, np.inf):
        weight = be.asarray(np.array([1.0, bad, 1.0]))
        for op in ("cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"):
            with pytest.raises(ValueError, match=f"the class weight holds {bad} at 1; it must be finite"):
                getattr(be, op)(z, y, weight=weight)
        target = be.asarray(np.array([[0.5, bad, 0.5], [1.0, 0.0, 0.0]]))
        with pytest.raises(ValueError, match=rf"the probability target holds {bad} at \(0, 1\)"):
            be.cross_entropy(z, target)


def test_logits_too_far_apart_for_float32_are_named(be):
    z = be.asarray(np.array([[3e38, -3e38], [0.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match="row 0 of the logits spans more than float32 can hold"):
        be.cross_entropy(z, be.asarray(np.array([1, 0])))
