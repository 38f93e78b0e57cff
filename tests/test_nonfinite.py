"""Non-finite logits: -inf marks a masked class; NaN, +inf and all -inf rows are errors.

PyTorch returns NaN in several of these cases; softgrad returns the finite
value the mathematics gives, or raises.
"""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.backends.conformance import reference as ref

torch = pytest.importorskip("torch")
NEG_INF = -np.inf


def test_masked_class_without_target_mass_is_finite(be):
    z = np.array([[1.0, NEG_INF, 0.5], [NEG_INF, 2.0, 0.0]])
    p = np.array([[0.7, 0.0, 0.3], [0.0, 0.5, 0.5]])
    loss, grad = be.cross_entropy_and_grad(be.asarray(z), be.asarray(p))
    torch_loss = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(p))
    assert torch.isnan(torch_loss)  # PyTorch: 0 * -inf = NaN
    assert float(be.to_numpy(loss)) == pytest.approx(ref.cross_entropy(z, p), rel=1e-12)
    assert np.all(np.isfinite(be.to_numpy(grad)))
    np.testing.assert_allclose(be.to_numpy(grad), ref.cross_entropy_grad(z, p), atol=1e-15)
    assert be.to_numpy(grad)[0, 1] == 0.0


def test_masked_class_with_zero_weight_under_smoothing(be):
    z = np.array([[1.0, NEG_INF, 0.5]])
    w = np.array([1.0, 0.0, 1.0])
    loss = be.cross_entropy(be.asarray(z), be.asarray(np.array([0])), weight=be.asarray(w), label_smoothing=0.3)
    assert float(be.to_numpy(loss)) == pytest.approx(
        ref.cross_entropy(z, [0], weight=w, label_smoothing=0.3), rel=1e-12)


def test_nll_loss_zero_weight_against_minus_inf(be):
    logp = np.array([[NEG_INF, 0.0], [np.log(0.5), np.log(0.5)]])
    loss = be.nll_loss(be.asarray(logp), be.asarray(np.array([0, 1])), weight=be.asarray(np.array([0.0, 1.0])))
    assert float(be.to_numpy(loss)) == pytest.approx(np.log(2.0), rel=1e-12)


@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"])
def test_target_mass_on_masked_class_is_an_error(be, op):
    z = be.asarray(np.array([[0.0, 1.0], [NEG_INF, 1.0]]))
    with pytest.raises(ValueError, match="loss of sample 1 is infinite"):
        getattr(be, op)(z, be.asarray(np.array([0, 0])))
    with pytest.raises(ValueError, match="loss of sample 1 is infinite"):  # smoothing puts eps/C there
        getattr(be, op)(z, be.asarray(np.array([1, 1])), label_smoothing=0.1)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"])
@pytest.mark.parametrize(
    "row, why", [([NEG_INF, NEG_INF], "is all -inf"), ([np.nan, 1.0], "holds NaN"), ([np.inf, 1.0], r"holds \+inf")]
)
def test_rows_without_a_softmax(be, op, row, why):
    z = be.asarray(np.array([[0.0, 1.0], row]))
    args = (z,) if op in ("softmax", "log_softmax") else (z, be.asarray(np.array([0, 1])))
    with pytest.raises(ValueError, match=f"row 1 of the logits {why}"):
        getattr(be, op)(*args)


def test_nan_log_probabilities_in_nll_loss(be):
    with pytest.raises(ValueError, match="loss of sample 0 is NaN"):
        be.nll_loss(be.asarray(np.array([[np.nan, 0.0]])), be.asarray(np.array([0])))


def test_smoothing_on_an_ignored_row_with_a_masked_class(be):
    # found in review: 0 * inf in the smoothing term of an ignored sample used to give NaN
    z = np.array([[0.0, NEG_INF, 1.0], [0.5, 0.2, 0.1]])
    y = np.array([-100, 0])
    loss = be.cross_entropy(be.asarray(z), be.asarray(y), label_smoothing=0.1)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y), label_smoothing=0.1)
    assert float(be.to_numpy(loss)) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("row", [[np.nan, 1.0], [NEG_INF, NEG_INF]])
def test_a_bad_row_is_reported_even_when_its_sample_weighs_nothing(be, row):
    # its loss term is 0, but its gradient would be NaN: an error, never a silent NaN
    z = be.asarray(np.array([row, [0.0, 1.0]]))
    with pytest.raises(ValueError, match="row 0 of the logits"):
        be.cross_entropy_and_grad(z, be.asarray(np.array([-100, 1])))
    with pytest.raises(ValueError, match="row 0 of the logits"):
        be.cross_entropy_and_grad(z, be.asarray(np.array([0, 1])), weight=be.asarray(np.array([0.0, 1.0])))
