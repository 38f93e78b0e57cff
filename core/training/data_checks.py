"""What is checked of the data once, before training (:func:`check_data`), and the targets as a loss takes
them on a backend (:func:`targets_on`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.protocol import Backend
from softgrad.training.models import MLP

REGRESSION_HINT = "mse (or l1, smooth_l1, huber)"


def check_data(data, model: MLP, loss: Loss | str = "cross_entropy") -> None:
    """Once, before training: the data fit the model and the loss, labels are in range, values are finite.

    After this, an error from the loss can only mean that training diverged.
    """
    loss = get_loss(loss)
    task, outputs = getattr(data, "task", "classification"), model.num_outputs
    if loss.targets == "value":
        if task != "regression":
            raise ValueError(f"{loss.name} is a regression loss, but {data.name} has class labels; use cross_entropy "
                             "(or bce_with_logits for a binary task)")
        if data.num_features != model.num_features or data.num_outputs != outputs:
            raise ValueError(f"the data has {data.num_features} features and {data.num_outputs} targets; "
                             f"the model expects {model.num_features} and {outputs}")
    elif task == "regression":
        raise ValueError(f"{loss.name} is a classification loss, but {data.name} has real-valued targets; use "
                         f"{REGRESSION_HINT}")
    elif loss.targets == "binary":
        if data.num_classes != 2 or outputs != 1 or data.num_features != model.num_features:
            raise ValueError(f"{loss.name} trains one output on two classes: {data.name} has {data.num_classes} "
                             f"classes and {data.num_features} features, the model {model.num_features} inputs and "
                             f"{outputs} outputs (pick the positive classes with datasets.binary, --binary on "
                             "the command line)")
    elif data.num_features != model.num_features or data.num_classes > model.num_classes:
        raise ValueError(f"the data has {data.num_features} features and {data.num_classes} classes; "
                         f"the model expects {model.num_features} and {model.num_classes}")
    splits = [("training", data.x_train, data.y_train)]
    if has_test_split(data):
        splits.append(("test", data.x_test, data.y_test))
    for split, x, y in splits:
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"the {split} set has {len(x)} samples and {len(y)} labels; it needs as many "
                             "of each, at least one")
        if loss.targets != "value":
            classes = 2 if loss.targets == "binary" else model.num_classes
            bad = np.flatnonzero((np.asarray(y) < 0) | (np.asarray(y) >= classes))
            if len(bad):
                raise ValueError(f"{split} label {int(y[bad[0]])} (sample {int(bad[0])}) is out of range for "
                                 f"{classes} classes")
        else:
            rows = np.flatnonzero(~np.isfinite(np.asarray(y, dtype=np.float64)).reshape(len(y), -1).all(axis=1))
            if len(rows):
                raise ValueError(f"{split} sample {int(rows[0])} has a NaN or inf target")
        rows = np.flatnonzero(~np.isfinite(np.asarray(x)).reshape(len(x), -1).all(axis=1))
        if len(rows):
            raise ValueError(f"{split} sample {int(rows[0])} holds NaN or inf features")


def has_test_split(data) -> bool:
    """Whether ``data`` has a test split: a Dataset may have none (``x_test`` and ``y_test`` None or empty),
    and then trains without test figures; one of the two without the other is an error."""
    x, y = getattr(data, "x_test", None), getattr(data, "y_test", None)
    x_none, y_none = x is None or len(x) == 0, y is None or len(y) == 0
    if x_none != y_none:
        raise ValueError(f"the test set has {0 if x is None else len(x)} samples and {0 if y is None else len(y)} "
                         "labels; give both, or neither for no test split")
    return not x_none


def targets_on(be: Backend, y, loss: Loss, dtype) -> Any:
    """The targets as ``loss`` takes them on ``be``: labels as they are; for binary cross-entropy 0/1 as
    probabilities, one column; for regression real values ``(N, k)``, in the model's dtype."""
    if loss.targets == "class":
        return be.asarray(y)
    host = np.asarray(y if isinstance(y, np.ndarray) else be.to_numpy(be.asarray(y)), dtype=dtype)
    return be.asarray(np.ascontiguousarray(host.reshape(len(host), -1)))


__all__ = ["REGRESSION_HINT", "check_data", "has_test_split", "targets_on"]
