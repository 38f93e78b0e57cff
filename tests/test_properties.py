"""Property tests: every backend, float32 and float64, generated shapes and scales.

The checks themselves live in ``backends/conformance/`` (``all_checks()``): the conformance kit
(``python -m backends.conformance NAME``) runs the very same functions on any registered
backend. References: the float64 NumPy functions in ``backends/conformance/reference.py``,
PyTorch's ``torch.nn.functional`` and autograd, central finite differences, the NumPy
backend's training trajectory, and the other backends. Tolerances per dtype are in
``checks.TOLERANCES``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from softgrad.backends import get_backend
from softgrad.backends.conformance import all_checks
from softgrad.backends.conformance.checks import Check
from softgrad.backends.conformance.strategies import loss_case

from tests.conftest import AVAILABLE, assert_close

torch = pytest.importorskip("torch")


def _on(be, kwargs):
    """The keyword arguments with the weight moved to the backend."""
    out = dict(kwargs)
    if out.get("weight") is not None:
        out["weight"] = be.asarray(out["weight"])
    return out


def _test_for(check: Check):
    """A pytest test running ``check`` on the ``be`` fixture, in each of its dtypes."""
    dtypes = pytest.mark.parametrize("dtype", check.dtypes, ids=[np.dtype(d).name for d in check.dtypes])
    if check.generated:
        @dtypes
        @given(data=st.data())
        def test(be, dtype, data):
            check.fn(be, dtype, data)
    else:
        @dtypes
        def test(be, dtype):
            check.fn(be, dtype, None)
    test.__name__ = f"test_{check.name}"
    test.__doc__ = check.fn.__doc__
    return test


for _check in all_checks():
    globals()[f"test_{_check.name}"] = _test_for(_check)


# a third of the profile's examples: each one runs every backend (JAX compiles each new shape, ~1 s), and each
# backend is held to the references on its own by the tests above
@pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs two available backends")
@settings(max_examples=max(5, settings.default.max_examples // 3))
@given(data=st.data())
def test_backends_agree_with_each_other(dtype, data):
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    results = {}
    for name in AVAILABLE:
        be = get_backend(name)
        zb, tb = be.asarray(z), be.asarray(target)
        loss, grad = be.cross_entropy_and_grad(zb, tb, **_on(be, kwargs))
        results[name] = [be.to_numpy(x) for x in
                         (be.softmax(zb), be.log_softmax(zb), loss, grad)]
    first, *others = AVAILABLE
    for name in others:
        for what, a, b, s in zip(("softmax", "log_softmax", "loss", "grad"), results[first], results[name],
                                 (1.0, scale, scale, 1.0)):
            assert_close(b, a, dtype, scale=s, what=f"{name} vs {first}: {what}")
