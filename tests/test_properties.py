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

from tests.conftest import AVAILABLE, EXAMPLES_DIVISOR, assert_close

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


def _agree(names, dtype, data):
    """Softmax, log-softmax, the loss and its gradient of one drawn case on each of ``names``, against the first."""
    z, target, kwargs, scale = data.draw(loss_case(dtype))
    results = {}
    for name in names:
        be = get_backend(name)
        zb, tb = be.asarray(z), be.asarray(target)
        loss, grad = be.cross_entropy_and_grad(zb, tb, **_on(be, kwargs))
        results[name] = [be.to_numpy(x) for x in
                         (be.softmax(zb), be.log_softmax(zb), loss, grad)]
    first, *others = names
    for name in others:
        for what, a, b, s in zip(("softmax", "log_softmax", "loss", "grad"), results[first], results[name],
                                 (1.0, scale, scale, 1.0)):
            assert_close(b, a, dtype, scale=s, what=f"{name} vs {first}: {what}")


# The backends that compile each new shape (JAX) are held to the others apart, on a tenth of the examples
# (conftest.EXAMPLES_DIVISOR, the rule of every property test on them): with JAX among them, the agreement of
# all the backends took about a minute of a 2-core run, nearly all of it XLA compiling each drawn shape.
COMPILED = [name for name in AVAILABLE if name in EXAMPLES_DIVISOR]
EAGER = [name for name in AVAILABLE if name not in EXAMPLES_DIVISOR]
# a third of the profile's examples: each one runs every backend, and each backend is held to the references
# on its own by the tests above
AGREEMENT_EXAMPLES = max(5, settings.default.max_examples // 3)


@pytest.mark.skipif(len(EAGER) < 2, reason="needs two available backends that do not compile per shape")
@settings(max_examples=AGREEMENT_EXAMPLES)
@given(data=st.data())
def test_backends_agree_with_each_other(dtype, data):
    _agree(EAGER, dtype, data)


@pytest.mark.skipif(not (COMPILED and EAGER), reason="needs a backend that compiles per shape and another one")
@settings(max_examples=max(3, AGREEMENT_EXAMPLES // max(EXAMPLES_DIVISOR.values())))
@given(data=st.data())
def test_compiled_backends_agree_with_the_others(dtype, data):
    _agree([EAGER[0], *COMPILED], dtype, data)
