"""softgrad's MLP as scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

Both follow scikit-learn's conventions (``validate_data`` for the inputs and ``n_features_in_``, ``classes_``
of any label type, ``partial_fit``, pickling, ``clone``) and pass its estimator checks; what they train is a
:class:`softgrad.MLP` on any softgrad backend, kept as ``model_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data
from softgrad.numerics.registry import get_backend
from softgrad.sklearn._training import Training, build_model, new_state, train_epoch
from softgrad.training.checkpoint import move_state
from softgrad.training.inference import batches
from softgrad.training.step import backend_scope

#: the float dtypes a model computes in; input of any other dtype trains a float64 model
_FLOATS = (np.float64, np.float32)


class _MLPEstimator(BaseEstimator):
    """What both estimators share: the parameters, the input checks, the network, the epochs."""

    _loss = "mse_loss"  # the softgrad loss the estimator trains with

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *, optimizer: str = "adam",
                 lr: float = 1e-3, momentum: float = 0.9, batch_size: int | str = "auto", max_epochs: int = 200,
                 random_state: Any = None, backend: str = "numpy", dtype: Any = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype

    # ---- inputs ---------------------------------------------------------------------------

    def _model_dtype(self, x: np.ndarray) -> np.dtype:
        """The dtype a new model computes in: ``dtype``, else the rows' own (float32 stays float32)."""
        if self.dtype is None:
            return x.dtype
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype.name not in ("float32", "float64"):
            raise ValueError(f"{type(self).__name__}: dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        return dtype

    def _rows(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``x`` in the model's dtype; a ValueError where a float64 value is beyond float32's range."""
        with np.errstate(over="ignore"):
            rows = np.ascontiguousarray(x, dtype=dtype)
        if not np.isfinite(rows).all():
            row = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise ValueError(f"{type(self).__name__}: sample {row} of X holds a value beyond {dtype.name}'s range; "
                             "scale the features (StandardScaler) or pass dtype='float64'")
        return rows

    # ---- training -------------------------------------------------------------------------

    def _start(self, x: np.ndarray, outputs: int | None) -> None:
        """A new network (none for ``outputs`` None: a one-class y) and optimizer state; no epoch yet."""
        self._dtype = self._model_dtype(x)
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.n_iter_, self.loss_curve_ = 0, []
        self.loss_ = None
        Training.of(self, x.shape[0], self._loss)  # the parameters checked before anything is built
        if outputs is None:
            self.model_, self._state = None, None
            return
        self.model_ = build_model(self, [x.shape[1], outputs], self._dtype, self._seed)
        self._state = new_state(self.model_, Training.of(self, x.shape[0], self._loss))

    def _epochs(self, x: np.ndarray, targets: np.ndarray, epochs: int | None) -> None:
        """``epochs`` epochs (None: max_epochs) over the rows ``x`` and their ``targets``, continuing the
        optimizer's state; each epoch's mean loss joins ``loss_curve_``."""
        training = Training.of(self, x.shape[0], self._loss)
        if self.model_ is None:
            return
        be = self.model_.be
        with backend_scope(be):
            rows = (be.asarray(self._rows(x, self._dtype)), be.asarray(targets))
        for _ in range(training.epochs if epochs is None else epochs):
            self.n_iter_ += 1
            self._state, self.loss_ = train_epoch(self.model_, self._state, rows, training,
                                                  [self._seed, self.n_iter_])
            self.loss_curve_.append(self.loss_)

    def _outputs(self, x) -> np.ndarray:
        """The network's outputs for ``x`` (checked against the fit's features), in the model's dtype."""
        check_is_fitted(self)
        x = validate_data(self, x, reset=False, dtype=_FLOATS)
        model = self.model_
        be = model.be
        with backend_scope(be):
            rows = be.asarray(self._rows(x, self._dtype))
            out = [np.asarray(be.to_numpy(model.logits(rows[s, ...])), dtype=self._dtype)
                   for s in batches(x.shape[0], 4096)]
        return np.concatenate(out)

    # ---- pickling: the optimizer's state as NumPy arrays, moved back to the model's backend ------

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # BaseEstimator's is the instance's own __dict__: a copy to change
        if getattr(self, "model_", None) is not None and state.get("_state") is not None:
            state["_state"] = move_state(state["_state"], self.model_.be, get_backend("numpy"))
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if getattr(self, "model_", None) is not None and getattr(self, "_state", None) is not None:
            self._state = move_state(self._state, get_backend("numpy"), self.model_.be)


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A softgrad MLP trained with cross-entropy, as a scikit-learn classifier.

    ``classes_`` are the labels of ``y`` (any type: ints, strings), sorted; ``predict`` returns them,
    ``predict_proba`` the softmax of the outputs, a column per class. A ``y`` of one class trains no network
    (``model_`` is None): ``predict`` returns that class and ``predict_proba`` a column of ones.
    """

    _loss = "cross_entropy"

    def fit(self, X, y) -> MLPClassifier:  # noqa: N803 - scikit-learn's names
        """Train a new network for ``max_epochs`` epochs on ``(X, y)``."""
        X, y = validate_data(self, X, y, dtype=_FLOATS)
        check_classification_targets(y)
        self.classes_, indices = np.unique(y, return_inverse=True)
        self._start(X, len(self.classes_) if len(self.classes_) > 1 else None)
        self._epochs(X, indices.astype(np.int64), None)
        return self

    def partial_fit(self, X, y, classes=None) -> MLPClassifier:  # noqa: N803
        """One epoch over ``(X, y)``, continuing the network and optimizer state of the calls before (or of
        ``fit``); the first call names every class with ``classes``."""
        first = getattr(self, "classes_", None) is None
        X, y = validate_data(self, X, y, dtype=_FLOATS, reset=first)
        check_classification_targets(y)
        self._classes_named(classes, first)
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"MLPClassifier.partial_fit: y holds labels {unknown.tolist()[:5]} that are not among "
                             f"classes_ {self.classes_.tolist()[:10]} (the first call's classes=)")
        if first:
            self._start(X, len(self.classes_) if len(self.classes_) > 1 else None)
        self._epochs(X, np.searchsorted(self.classes_, y).astype(np.int64), 1)
        return self

    def _classes_named(self, classes, first: bool) -> None:
        """``classes_`` from the first partial_fit call's ``classes``; a later call's must be the same."""
        if classes is None:
            if first:
                raise ValueError("MLPClassifier.partial_fit: classes must be passed on the first call to partial_fit "
                                 "(every label y may hold, in any call)")
            return
        given = unique_labels(classes)
        if first:
            self.classes_ = given
        elif not np.array_equal(given, self.classes_):
            raise ValueError(f"MLPClassifier.partial_fit: classes={given.tolist()[:10]} differs from the first "
                             f"call's {self.classes_.tolist()[:10]}")

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        """The probability of each class (``classes_``'s order), ``(N, classes)``, in the model's dtype."""
        if getattr(self, "model_", True) is None:  # one class
            x = validate_data(self, X, reset=False, dtype=_FLOATS)
            return np.ones((x.shape[0], 1), dtype=self._dtype)
        logits = self._outputs(X)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:  # noqa: N803
        """The log of :meth:`predict_proba`, computed without underflow to -inf."""
        if getattr(self, "model_", True) is None:
            return np.log(self.predict_proba(X))
        logits = self._outputs(X)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:  # noqa: N803
        """The most probable class of each row: labels from ``classes_``, not indices."""
        probabilities = self.predict_proba(X)  # first: unfitted, it raises NotFittedError
        return self.classes_[np.argmax(probabilities, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class MLPRegressor(RegressorMixin, _MLPEstimator):
    """A softgrad MLP trained with mean squared error, as a scikit-learn regressor: one target ``(N,)`` or
    several ``(N, k)``; ``predict`` answers in the same shape (one target: ``(N,)``), in the model's dtype.
    The targets are not scaled (as in scikit-learn's MLPRegressor): wrap targets far from unit scale in
    ``TransformedTargetRegressor(regressor, transformer=StandardScaler())``."""

    _loss = "mse_loss"

    def fit(self, X, y) -> MLPRegressor:  # noqa: N803
        """Train a new network for ``max_epochs`` epochs on ``(X, y)``."""
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, y_numeric=True)
        targets = y.reshape(len(y), -1)
        self.n_outputs_ = targets.shape[1]
        self._start(X, self.n_outputs_)
        self._epochs(X, self._targets(targets), None)
        return self

    def partial_fit(self, X, y) -> MLPRegressor:  # noqa: N803
        """One epoch over ``(X, y)``, continuing the network and optimizer state of the calls before (or of
        ``fit``)."""
        first = getattr(self, "model_", None) is None
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, y_numeric=True, reset=first)
        targets = y.reshape(len(y), -1)
        if first:
            self.n_outputs_ = targets.shape[1]
            self._start(X, self.n_outputs_)
        elif targets.shape[1] != self.n_outputs_:
            raise ValueError(f"MLPRegressor.partial_fit: y has {targets.shape[1]} target(s); the model was "
                             f"trained on {self.n_outputs_}")
        self._epochs(X, self._targets(targets), 1)
        return self

    def _targets(self, targets: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            cast = np.ascontiguousarray(targets, dtype=self._dtype)
        if not np.isfinite(cast).all():
            raise ValueError(f"MLPRegressor: y holds a value beyond {self._dtype.name}'s range; scale the targets "
                             "(TransformedTargetRegressor with StandardScaler)")
        return cast

    def predict(self, X) -> np.ndarray:  # noqa: N803
        """The predicted targets: ``(N,)`` for one target, ``(N, k)`` for k, in the model's dtype."""
        out = self._outputs(X)
        return out[:, 0] if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


__all__ = ["MLPClassifier", "MLPRegressor"]
