"""softgrad's side of a tutorial run: ``softgrad.fit`` on the numpy backend, from the torch run's weights.

The model is the ConvNet of the recipe's spec (softmax regression: the one-layer MLP), its parameters set
to the recipe's initial weights (torch's layout; dense weights transposed to softgrad's (in, out)); fit
trains with plain SGD as ``torch.optim.SGD`` does (momentum, no Nesterov, no weight decay, constant rate),
shuffling epoch ``e`` with ``default_rng([seed, e])``, the order the torch side replays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from softgrad.bench.tutorial_data import TutorialData
from softgrad.bench.tutorial_recipes import Recipe, initial_weights, per_class_accuracy


def softgrad_model(recipe: Recipe, data: TutorialData, *, dtype=np.float32, backend: str = "numpy"):
    """The recipe's softgrad model with the recipe's initial weights."""
    if recipe.spec is None:
        from softgrad.training.models import softmax_regression

        model = softmax_regression(data.x_train.shape[1], len(data.classes), dtype=dtype)
    else:
        from softgrad.training.convnet import ConvNet

        model = ConvNet(recipe.spec, data.image_shape, len(data.classes), seed=recipe.seed, dtype=dtype)
    shapes = [tuple(np.shape(p)) for p in model.params]
    # torch's layout: dense weights (out, in), softgrad's (in, out); conv weights are alike
    torch_shapes = [s[::-1] if len(s) == 2 else s for s in shapes]
    values = [w.T if w.ndim == 2 else w for w in initial_weights(recipe, torch_shapes)]
    model.params = [np.ascontiguousarray(v, dtype=dtype) for v in values]
    return model.to(backend)


def run_softgrad(recipe: Recipe, data: TutorialData, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train softgrad's side; per-epoch records (fit's history) and the final per-class test accuracy."""
    from softgrad import datasets
    from softgrad.training.fitting import fit
    from softgrad.training.inference import predict

    dataset = datasets.from_arrays(data.x_train, data.y_train, data.x_test, data.y_test, classes=data.classes,
                                   name=data.label, image_shape=data.image_shape)
    model = softgrad_model(recipe, data)
    history = fit(model, dataset, backend="numpy", optimizer="sgd", epochs=recipe.epochs,
                  batch_size=recipe.batch_size, lr=recipe.lr, lr_schedule="constant", seed=recipe.seed,
                  progress=False, log=lambda line: log(f"softgrad {recipe.name} {line}"),
                  momentum=recipe.momentum, nesterov=False, weight_decay=0.0)
    predicted = predict(model, data.x_test)
    return {"history": [dict(r) for r in history],
            "per_class": per_class_accuracy(predicted, data.y_test, len(data.classes)),
            "model": repr(model)}
