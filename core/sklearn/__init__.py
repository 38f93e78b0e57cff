"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor` (docs/sklearn.md).

They need scikit-learn (``pip install 'softgrad[sklearn]'``); ``import softgrad`` alone never imports it.
"""

try:
    import sklearn  # noqa: F401  (the estimators' base classes; one line saying what to install where missing)
except ImportError:  # pragma: no cover - the test environment has it
    raise ImportError("softgrad.sklearn needs scikit-learn: pip install 'softgrad[sklearn]'") from None

from softgrad.sklearn._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
