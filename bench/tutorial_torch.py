"""The torch autograd reference of a tutorial run: ``nn.Sequential``, ``CrossEntropyLoss``, ``torch.optim.SGD``.

The loop is the tutorials' own (d2l's ``train_epoch_ch3``: the epoch's train loss and accuracy are the
running means over its batches, as the batches are trained), on the recipe's initial weights and batch order
(:mod:`softgrad.bench.tutorial_recipes`), in float32 on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from softgrad.bench.tutorial_data import TutorialData
from softgrad.bench.tutorial_recipes import (
    Recipe,
    epoch_order,
    initial_weights,
    per_class_accuracy,
    torch_network,
)

EVAL_BATCH = 1000


def _layers(net) -> list:
    from torch import nn

    return [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]


def torch_initialised(recipe: Recipe, data: TutorialData):
    """The recipe's network with its initial weights (float32)."""
    import torch

    net = torch_network(recipe, data.chw, len(data.classes))
    shapes = [tuple(p.shape) for layer in _layers(net) for p in (layer.weight, layer.bias)]
    with torch.no_grad():
        for p, value in zip((p for layer in _layers(net) for p in (layer.weight, layer.bias)),
                            initial_weights(recipe, shapes)):
            p.copy_(torch.from_numpy(value))
    return net


def _predict(net, x) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([net(x[i:i + EVAL_BATCH]).argmax(1).numpy() for i in range(0, len(x), EVAL_BATCH)])


def run_torch(recipe: Recipe, data: TutorialData, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the torch reference; per-epoch records and the final per-class test accuracy."""
    import torch

    torch.manual_seed(recipe.seed)  # nothing random is drawn by torch; pinned all the same
    net = torch_initialised(recipe, data)
    optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_train, y_train = torch.from_numpy(data.nchw(data.x_train)), torch.from_numpy(data.y_train)
    x_test = torch.from_numpy(data.nchw(data.x_test))
    if recipe.spec is None:  # softmax regression takes the flat rows (nn.Flatten would give the same)
        x_train, x_test = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    n, history = len(y_train), []
    for epoch in range(1, recipe.epochs + 1):
        order = torch.from_numpy(epoch_order(recipe.seed, epoch, n))
        xs, ys = x_train[order], y_train[order]
        total_loss, correct = 0.0, 0
        start = time.perf_counter()
        for s in range(0, n, recipe.batch_size):
            xb, yb = xs[s:s + recipe.batch_size], ys[s:s + recipe.batch_size]
            logits = net(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
        seconds = time.perf_counter() - start
        predicted = _predict(net, x_test)
        record = {"epoch": epoch, "train_loss": total_loss / n, "train_accuracy": correct / n,
                  "test_accuracy": float(np.mean(predicted == data.y_test)), "seconds": seconds,
                  "samples_per_s": n / seconds}
        history.append(record)
        log(f"torch {recipe.name} epoch {epoch}/{recipe.epochs}  loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:.2%}  test {record['test_accuracy']:.2%}  ({seconds:.1f} s)")
    return {"history": history, "per_class": per_class_accuracy(predicted, data.y_test, len(data.classes)),
            "threads": torch.get_num_threads(), "version": torch.__version__}
