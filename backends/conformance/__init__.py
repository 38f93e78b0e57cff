"""The conformance kit: the protocol's checks, runnable on any registered backend.

    softgrad conformance NAME [--examples N] [--json PATH]

runs every check of :func:`all_checks` (the same checks softgrad's own suite
runs on its backends: softmax and cross-entropy in ``checks.py``, the
elementwise losses in ``elementwise_checks.py``, the optimizers in
``optimizer_checks.py``, ``linear_cross_entropy`` in ``linear_checks.py``, convolution and pooling in
``conv_checks.py``, the losses and optimizers
plugged in from outside softgrad in ``plugged_in_checks.py``) on the backend registered as
``NAME``, in float32 and float64, prints a table (operation x dtype: pass or
fail, the largest error against the references) and exits 0 only when
everything passes. A plugin author installs ``softgrad[conformance]`` and runs
it on their backend, as NetworkX's backend authors run its test suite.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PIP_CONFORMANCE = "pip install 'softgrad[conformance]'  (or: pip install hypothesis)"


@dataclass
class Result:
    check: str
    op: str
    dtype: str
    passed: bool
    largest_error: float | None  # the largest |error| against the references
    error_over_tolerance: float | None  # the largest error as a fraction of the tolerance it was allowed
    seconds: float
    message: str = ""


def _first_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:count])


def run_checks(be: Any, *, examples: int = 30, checks: tuple | None = None, seed: int = 0,
               progress: Callable[[str], None] = lambda _: None) -> list[Result]:
    """Run ``checks`` (default: all) on backend ``be``; one :class:`Result` per check and dtype."""
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError:
        raise ImportError(f"the conformance kit needs Hypothesis: {PIP_CONFORMANCE}") from None
    from softgrad.backends.conformance.checks import recording_errors

    results = []
    for check in checks or all_checks():
        for dtype in check.dtypes:
            name = np.dtype(dtype).name
            progress(f"{check.name} ({name})")
            start = time.perf_counter()
            with recording_errors() as largest:
                try:
                    if check.generated:
                        _property(check, be, dtype, given, settings(
                            max_examples=examples, deadline=None, derandomize=True, database=None,
                            suppress_health_check=list(HealthCheck), print_blob=False), st)()
                    else:
                        check.fn(be, dtype, None)
                except Exception as error:  # a failing check, whatever it raised, is a result
                    detail = "".join(traceback.format_exception_only(type(error), error))
                    results.append(Result(check.name, check.op, name, False, largest[1] or None,
                                          largest[0] or None, time.perf_counter() - start, _first_lines(detail)))
                    continue
            results.append(Result(check.name, check.op, name, True, largest[1], largest[0],
                                  time.perf_counter() - start))
    return results


def all_checks() -> tuple:
    """Every check of the kit, in the order of its table."""
    from softgrad.backends.conformance.checks import CHECKS
    from softgrad.backends.conformance.conv_checks import CONV_CHECKS
    from softgrad.backends.conformance.elementwise_checks import ELEMENTWISE_CHECKS
    from softgrad.backends.conformance.linear_checks import LINEAR_CHECKS
    from softgrad.backends.conformance.optimizer_checks import OPTIMIZER_CHECKS
    from softgrad.backends.conformance.plugged_in_checks import PLUGGED_IN_CHECKS

    return (*CHECKS, *ELEMENTWISE_CHECKS, *OPTIMIZER_CHECKS, *LINEAR_CHECKS, *CONV_CHECKS, *PLUGGED_IN_CHECKS)


def _property(check, be, dtype, given, settings, st):
    @settings
    @given(data=st.data())
    def run(data):
        check.fn(be, dtype, data)

    return run


__all__ = ["PIP_CONFORMANCE", "Result", "all_checks", "run_checks"]
