"""The CNN row's contenders: LeNet (MNIST-shaped input) on softgrad's backends and in idiomatic torch.

Every contender trains the same network from the same weights (:data:`LENET_SPEC`, the ConvNet's seed-0
initialisation) on the shipped MNIST rows, with plain SGD (lr 0.01, momentum 0.9, no Nesterov, no weight
decay: the LeNet tutorial run's recipe), in float32, on batches already in memory. The anchor is what a
torch user writes: ``nn.Sequential(nn.Conv2d, nn.ReLU, nn.MaxPool2d, ..., nn.Linear)``, ``CrossEntropyLoss``,
autograd and ``torch.optim.SGD``, on images already shaped (N, 1, 28, 28) (a DataLoader hands them so).
They have the interface of :mod:`bench.contenders` (``prepare`` returns a :class:`~bench.contenders.Case`),
so :class:`bench.worker.IsolatedContender` runs each in a process of its own (kind ``"cnn"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from softgrad.bench.contenders import Case
from softgrad.bench.tutorial_recipes import LENET_SPEC

CNN_MODEL = "lenet"
LR, MOMENTUM = 0.01, 0.9
ANCHOR_NAME = "anchor:torch-autograd-cnn"


def lenet(seed: int = 0, backend="numpy"):
    """softgrad's LeNet at its seed's initialisation."""
    from softgrad.training.convnet import ConvNet

    return ConvNet(LENET_SPEC, (28, 28), 10, seed=seed, dtype=np.float32, backend=backend)


def _check_model(model: str) -> None:
    if model != CNN_MODEL:
        raise ValueError(f"bench: the CNN row trains {CNN_MODEL!r}, not {model!r}")


def _settings():
    from softgrad.training.settings import TrainSettings

    return TrainSettings(optimizer="sgd", lr=LR, lr_schedule="constant",
                         hyperparameters={"momentum": MOMENTUM, "nesterov": False, "weight_decay": 0.0})


class SoftgradCNNContender:
    """softgrad's LeNet on one backend, through ``train_step`` (what ``fit`` runs per batch)."""

    def __init__(self, backend_name: str) -> None:
        from softgrad.numerics.registry import get_backend

        self.be = get_backend(backend_name)
        self.name = backend_name
        self.on_gpu = bool(self.be.on_gpu)

    def prepare(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> Case:
        from softgrad.bench.contenders import step_case

        _check_model(model)
        return step_case(lenet(backend=self.be), data, batch_size, _settings())


class TorchCNNContender:
    """The idiomatic torch loop on LeNet: zero_grad, forward, CrossEntropyLoss, backward, SGD step."""

    name = ANCHOR_NAME
    on_gpu = False

    @staticmethod
    def network():
        """The torch LeNet with softgrad's seed-0 LeNet's initial weights (dense weights transposed)."""
        import torch
        from softgrad.bench.tutorial_recipes import RECIPES, torch_network

        net = torch_network(RECIPES["lenet"], (1, 28, 28), 10)
        host = lenet()
        layers = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            for layer, w, b in zip(layers, host.params[::2], host.params[1::2]):
                w = np.asarray(w)
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T if w.ndim == 2 else w)))
                layer.bias.copy_(torch.from_numpy(np.asarray(b)))
        return net

    def prepare(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> Case:
        import torch

        _check_model(model)
        net = self.network()
        sgd = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
        criterion = torch.nn.CrossEntropyLoss()
        x = torch.from_numpy(np.ascontiguousarray(data.x_train.reshape(-1, 1, 28, 28)))
        y = torch.from_numpy(data.y_train)
        batches = len(data.y_train) // batch_size
        position = [0]

        def run(steps: int) -> None:
            for _ in range(steps):
                s = slice((position[0] % batches) * batch_size, (position[0] % batches + 1) * batch_size)
                sgd.zero_grad()
                criterion(net(x[s]), y[s]).backward()
                sgd.step()
                position[0] += 1

        return Case(run, lambda: None, lambda: None)


def make_cnn_contender(argument: str | None):
    """``"anchor"`` (the torch loop) or a softgrad backend's name."""
    return TorchCNNContender() if argument in (None, "anchor") else SoftgradCNNContender(argument)


@dataclass(frozen=True)
class MNISTRows:
    """The shipped MNIST with its first ``rows`` training rows only (a quick run; the tests' tiny sizes): a
    :class:`bench.worker.DataSpec` stand-in each worker loads itself."""

    rows: int

    def load(self):
        from dataclasses import replace

        from softgrad import datasets

        data = datasets.load("mnist")
        return replace(data, x_train=data.x_train[:self.rows], y_train=data.y_train[:self.rows])
