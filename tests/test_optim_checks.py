"""The optimizers' input checks (softgrad.numerics.optim.checks): bad parameters, hyperparameters and states are
named, and a state from another backend is named as such."""

from __future__ import annotations

import numpy as np
import pytest
from softgrad.backends import get_backend


def test_sgd_names_bad_parameters_hyperparameters_and_states(be):
    from softgrad.numerics import SGDState

    p = [be.asarray(np.ones(3))]
    with pytest.raises(ValueError, match="lr must be finite and >= 0"):
        be.sgd_step(p, [be.asarray(np.ones(3))], be.sgd_init(p), lr=10**400)
    for dtype in (np.int64, np.bool_):
        q = [be.asarray(np.ones(3, dtype))]
        with pytest.raises(TypeError, match="parameter 0 must be float32 or float64"):
            be.sgd_step(q, q, be.sgd_init(q), lr=0.1)
    with pytest.raises(TypeError, match="the state's step must be an int"):
        be.sgd_step(p, [be.asarray(np.ones(3))], SGDState("one", None), lr=0.1)
    with pytest.raises(TypeError, match="momentum_buffers must be None or one array per parameter"):
        be.sgd_step(p, [be.asarray(np.ones(3))], SGDState(1, 5), lr=0.1, momentum=0.9)


def test_a_state_from_another_backend_is_named_as_such():
    torch_backend = pytest.importorskip("torch") and get_backend("torch")
    from softgrad.numerics import SGDState

    p = [torch_backend.asarray(np.ones(3))]
    with pytest.raises(TypeError, match="momentum buffer 0 of the state is a numpy.ndarray, not an array of the "
                                        "'torch' backend"):
        torch_backend.sgd_step(p, [torch_backend.asarray(np.ones(3))], SGDState(1, (np.ones(3),)), lr=0.1,
                               momentum=0.9)
