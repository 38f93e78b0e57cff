"""Who trains in the benchmark: softgrad's backends and the anchors, on the same data and network.

Every contender prepares a (model, batch size) case once, then runs blocks of
training steps on batches already in memory; the clock is read only after
the device is synchronised. The anchors are what users compare us with:
idiomatic PyTorch (``nn.Module``, autograd, ``torch.optim.SGD`` or ``Adam``) and
scikit-learn's ``MLPClassifier(solver="sgd")`` or ``"adam"``, all in float32.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from softgrad.numerics.registry import get_backend
from softgrad.training.fitting import fit
from softgrad.training.models import MLP, MODELS
from softgrad.training.settings import TrainSettings
from softgrad.training.step import train_step

# One procedure for every contender's short accuracy run: an epoch of SGD at a
# constant rate, Nesterov momentum 0.9, weight decay 2e-3; or of Adam with torch's defaults (lr 1e-3).
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 2e-3
ADAM_LR = 1e-3
OPTIMIZERS = ("sgd", "adam")


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"bench: optimizer {optimizer!r} is not benchmarked; choose one of {', '.join(OPTIMIZERS)}")


def accuracy_subset(data, samples: int | None):
    """``data`` with its first ``samples`` training rows and half as many test rows (all of them with
    None): the default sweep's short accuracy check, which still tells a fast wrong backend from the rest."""
    if not samples:
        return data
    from dataclasses import replace

    return replace(data, x_train=data.x_train[:samples], y_train=data.y_train[:samples],
                   x_test=data.x_test[:max(1, samples // 2)], y_test=data.y_test[:max(1, samples // 2)])


def widths(model: str, data) -> list[int]:
    return [data.num_features, *MODELS[model], data.num_classes]


@dataclass
class Case:
    """A prepared (contender, model, batch size): ``run(steps)`` trains that many batches; ``timed(steps)``
    runs them between two synchronisations and returns the seconds they took."""

    run: Callable[[int], None]
    synchronize: Callable[[], None]
    peak_memory: Callable[[], int | None]
    #: where the steps run elsewhere (bench.worker): the seconds as the process that ran them measured them
    timed_run: Callable[[int], float] | None = None
    release: Callable[[], None] | None = None  # frees what prepare held, where it lives elsewhere

    def timed(self, steps: int) -> float:
        if self.timed_run is not None:
            return self.timed_run(steps)
        self.synchronize()
        start = time.perf_counter()
        self.run(steps)
        self.synchronize()
        return time.perf_counter() - start


def step_case(net, data, batch_size: int, settings: TrainSettings) -> Case:
    """``net`` (an MLP or a ConvNet on its backend) trained by ``train_step``, what ``fit`` runs per batch, on
    ``data``'s training rows in order, batch after batch; the peak memory is that of a few steps, where the
    backend tracks it (NumPy, GPU pools)."""
    be = net.be
    x, y = be.asarray(data.x_train), be.asarray(data.y_train)
    batches = len(data.y_train) // batch_size
    state = [settings.optimizer_definition.init_on(be, net.params), 0]

    def run(steps: int) -> None:
        for _ in range(steps):
            i = state[1] % batches
            s = slice(i * batch_size, (i + 1) * batch_size)
            _, _, state[0] = train_step(net, x[s, ...], y[s, ...], state[0], settings.lr, settings)
            state[1] += 1

    return Case(run, be.synchronize, lambda: be.peak_memory(lambda: run(3)))


class SoftgradContender:
    def __init__(self, backend_name: str) -> None:
        self.name = backend_name
        self.be = get_backend(backend_name)
        self.on_gpu = bool(self.be.on_gpu)

    @staticmethod
    def settings(optimizer: str) -> TrainSettings:
        _check_optimizer(optimizer)
        if optimizer == "adam":  # torch.optim.Adam's defaults
            return TrainSettings(optimizer="adam", lr=ADAM_LR)
        return TrainSettings(optimizer="sgd", lr=LR, hyperparameters={"momentum": MOMENTUM, "nesterov": True,
                                                                       "weight_decay": WEIGHT_DECAY})

    def prepare(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> Case:
        net = MLP(widths(model, data), seed=0, backend=self.be)
        return step_case(net, data, batch_size, self.settings(optimizer))


    def accuracy(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> float:
        net = MLP(widths(model, data), seed=0, backend=self.be)
        settings = self.settings(optimizer)
        history = fit(net, data, epochs=1, batch_size=batch_size, lr=settings.lr, optimizer=optimizer,
                      lr_schedule="constant", progress=False, log=None, **settings.hyperparameters)
        return history[-1]["test_accuracy"]


class TorchAutogradContender:
    """The classic PyTorch loop: zero_grad, forward, CrossEntropyLoss, backward, step."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = "anchor:torch-autograd" + ("" if device == "cpu" else f":{device}")
        self.on_gpu = self.device.type == "cuda"

    def _network(self, model: str, data, optimizer: str = "sgd"):
        torch = self.torch
        host = MLP(widths(model, data), seed=0)  # the same initial weights as softgrad's models
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(host.widths, host.widths[1:])):
            linear = torch.nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(host.params[2 * i].T.copy()))
                linear.bias.copy_(torch.from_numpy(host.params[2 * i + 1]))
            layers += [linear, torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1]).to(self.device)
        _check_optimizer(optimizer)
        if optimizer == "adam":  # as a user writes it: torch's defaults, its own choice of implementation
            return net, torch.optim.Adam(net.parameters(), lr=ADAM_LR), torch.nn.CrossEntropyLoss()
        return net, torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                                    weight_decay=WEIGHT_DECAY), torch.nn.CrossEntropyLoss()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def prepare(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> Case:
        torch = self.torch
        net, optimizer, criterion = self._network(model, data, optimizer)
        x = torch.from_numpy(data.x_train).to(self.device)
        y = torch.from_numpy(data.y_train).to(self.device)
        batches = len(data.y_train) // batch_size
        position = [0]

        def run(steps: int) -> None:
            for _ in range(steps):
                i = position[0] % batches
                optimizer.zero_grad()
                loss = criterion(net(x[i * batch_size:(i + 1) * batch_size]), y[i * batch_size:(i + 1) * batch_size])
                loss.backward()
                optimizer.step()
                position[0] += 1

        def peak_memory() -> int | None:
            if self.device.type != "cuda":
                return None
            torch.cuda.reset_peak_memory_stats()
            run(3)
            return int(torch.cuda.max_memory_allocated())

        return Case(run, self._synchronize, peak_memory)

    def accuracy(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> float:
        torch = self.torch
        net, optimizer, criterion = self._network(model, data, optimizer)
        x = torch.from_numpy(data.x_train).to(self.device)
        y = torch.from_numpy(data.y_train).to(self.device)
        order = torch.from_numpy(np.random.default_rng([0, 1]).permutation(len(data.y_train))).to(self.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            criterion(net(x[index]), y[index]).backward()
            optimizer.step()
        with torch.no_grad():
            predictions = net(torch.from_numpy(data.x_test).to(self.device)).argmax(1).cpu().numpy()
        return float(np.mean(predictions == data.y_test))


class SklearnContender:
    """scikit-learn's MLPClassifier(solver="sgd") in float32 (it keeps float32 input in float32)."""

    name = "anchor:sklearn"
    on_gpu = False

    def __init__(self) -> None:
        from sklearn.neural_network import MLPClassifier

        self.MLPClassifier = MLPClassifier

    def _classifier(self, model: str, batch_size: int, shuffle: bool = True, optimizer: str = "sgd"):
        _check_optimizer(optimizer)
        common = dict(hidden_layer_sizes=MODELS[model], activation="relu", batch_size=batch_size, max_iter=1,
                      shuffle=shuffle, random_state=0, tol=0.0, n_iter_no_change=10**9)
        if optimizer == "adam":  # scikit-learn's Adam: torch's betas and eps; no weight decay, as the others
            return self.MLPClassifier(solver="adam", alpha=0.0, learning_rate_init=ADAM_LR, **common)
        # scikit-learn adds alpha * W / batch_size to the gradient: the same decay as the others
        return self.MLPClassifier(solver="sgd", alpha=WEIGHT_DECAY * batch_size, learning_rate_init=LR,
                                  momentum=MOMENTUM, nesterovs_momentum=True, **common)

    def _fit(self, classifier, x, y) -> None:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.fit(x, y)

    def prepare(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> Case:
        # no reshuffling inside the timed blocks, as for the other contenders
        classifier = self._classifier(model, batch_size, shuffle=False, optimizer=optimizer)
        x, y = data.x_train, data.y_train
        classes = np.arange(data.num_classes)
        batches = len(y) // batch_size
        classifier.partial_fit(x[:batch_size], y[:batch_size], classes=classes)  # builds the layers
        position = [0]

        def run(steps: int) -> None:
            # partial_fit makes one SGD pass over the rows it is given, batch_size rows at a time
            done = 0
            while done < steps:
                count = min(steps - done, batches - position[0] % batches)
                start = (position[0] % batches) * batch_size
                classifier.partial_fit(x[start:start + count * batch_size], y[start:start + count * batch_size])
                position[0] += count
                done += count

        return Case(run, lambda: None, lambda: None)

    def accuracy(self, model: str, batch_size: int, data, optimizer: str = "sgd") -> float:
        classifier = self._classifier(model, batch_size, optimizer=optimizer)
        self._fit(classifier, data.x_train, data.y_train)
        return float(np.mean(classifier.predict(data.x_test) == data.y_test))
