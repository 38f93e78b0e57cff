"""What a run is set by, as frozen values with their defaults written once.

- :class:`TrainSettings`: what :func:`softgrad.fit` trains with (epochs, batch, learning rate and schedule,
  seed, loss and its options, optimizer and its hyperparameters); checkpoints store it.
- :class:`ModelSettings` and :class:`DataSettings`: the network and the data ``softgrad train`` builds and
  loads; :class:`RunSettings` holds all three and the backend. The command line parses into it, and
  ``run.json`` is its record (:meth:`RunSettings.to_record`, :meth:`RunSettings.from_record`).
- :func:`default_loss`: the loss a run trains with when none is named (the one rule, for fit and the command).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from softgrad.numerics.losses import Loss, get_loss
from softgrad.numerics.optim import OPTIMIZERS, Optimizer, get_optimizer
from softgrad.training.convnet import NAMED as CONVNETS
from softgrad.training.models import CLASSIC_MLP_HIDDEN, MODELS

#: ``--model``'s choices: the MLPs by their widths, the named ConvNets, and ``convnet`` (its layers in ``--layers``)
MODEL_NAMES = (*MODELS, *CONVNETS, "convnet")

#: fit's own hyperparameters per optimizer where they differ from torch's defaults: SGD with Nesterov
#: momentum 0.9 and weight decay 2e-3 reaches 97.5-97.8% on the shipped MNIST subset in 10 epochs
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9, "nesterov": True, "weight_decay": 2e-3}}
#: fit's learning rate per optimizer where it differs from torch's default (the optimizer's ``lr``)
TRAINING_LR: dict[str, float] = {"sgd": 0.05}


def default_loss(data, outputs: int) -> str:
    """The loss a run trains with when none is named, for ``data`` and a model of ``outputs`` outputs: mean
    squared error for regression data, binary cross-entropy for one output on two classes, else cross-entropy.

    :func:`softgrad.fit` asks with its model's outputs; ``softgrad train`` with the outputs it will build (one
    with ``--binary``)."""
    if getattr(data, "task", "classification") == "regression":
        return "mse_loss"
    if outputs == 1 and data.num_classes == 2:
        return "binary_cross_entropy_with_logits"
    return "cross_entropy"


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`fit` trains with.

    ``hyperparameters`` are the optimizer's besides ``lr`` (for SGD: momentum,
    dampening, nesterov, weight_decay); those not given take
    :data:`TRAINING_DEFAULTS`, then the optimizer's own (torch's) defaults.
    ``lr`` not given is 0.05 for SGD and torch's default for the others.
    ``loss`` not given is chosen by the data when training starts (:func:`default_loss`); a step taken
    without data (:func:`train_step`) uses cross-entropy.
    ``loss_options`` are the loss's keyword arguments (``label_smoothing=0.1``).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: TRAINING_LR's for the optimizer, else torch's default (Adam 1e-3)
    lr_schedule: str = "cosine"  # "cosine" (to 0 over the epochs) or "constant"
    seed: int = 0
    loss: str | None = None  # None: by the data, default_loss
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    #: fuse the last layer with cross-entropy (be.linear_cross_entropy_and_grad): the batch's logits are never
    #: held, for a large number of classes; the same loss and gradients, but no training accuracy
    chunked_head: bool = False

    def __post_init__(self) -> None:
        if self.lr is None:
            optimizer = get_optimizer(self.optimizer)
            object.__setattr__(self, "lr", TRAINING_LR.get(optimizer.name, optimizer.lr))

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> TrainSettings:
        """Settings as saved by a checkpoint or run.json, in this format or the first one (flat SGD keys)."""
        saved = dict(saved)
        hyperparameters = dict(saved.pop("hyperparameters", None) or {})
        for key in get_optimizer("sgd").defaults:  # the first format kept SGD's hyperparameters at the top
            if key in saved:
                value = saved.pop(key)
                if value is not None:
                    hyperparameters[key] = value
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise TypeError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**{k: v for k, v in saved.items() if v is not None}, hyperparameters=hyperparameters)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["loss_options"], out["hyperparameters"] = dict(self.loss_options), dict(self.resolved_hyperparameters)
        return out

    def with_loss_for(self, data, outputs: int) -> TrainSettings:
        """These settings with the loss named: the given one, else :func:`default_loss`'s for the data."""
        return self if self.loss is not None else dataclasses.replace(self, loss=default_loss(data, outputs))

    @cached_property
    def loss_definition(self) -> Loss:
        return get_loss(self.loss if self.loss is not None else "cross_entropy")

    @cached_property
    def optimizer_definition(self) -> Optimizer:
        return get_optimizer(self.optimizer)

    @cached_property
    def resolved_hyperparameters(self) -> dict[str, Any]:
        optimizer = self.optimizer_definition
        if "lr" in self.hyperparameters:
            raise TypeError("lr is a setting of its own, not one of the optimizer's other hyperparameters: pass lr= "
                            "(--lr on the command line)")
        optimizer.check_names(self.hyperparameters)
        values = {**optimizer.defaults, **TRAINING_DEFAULTS.get(optimizer.name, {}), **self.hyperparameters}
        if optimizer.name == "sgd" and values["momentum"] == 0 and "nesterov" not in self.hyperparameters:
            # fit's default Nesterov needs momentum: momentum=0 alone is plain SGD; nesterov=True asked for
            # with momentum 0 is refused by the check below, as torch.optim.SGD refuses it
            values["nesterov"] = False
        return optimizer.check(lr=self.lr, **values)

    def check(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        self.loss_definition  # noqa: B018  (raises for an unknown loss)
        if not isinstance(self.chunked_head, bool):
            raise TypeError(f"chunked_head must be True or False, got {self.chunked_head!r}")
        if self.chunked_head and self.loss_definition.name != "cross_entropy":
            raise ValueError(f"chunked_head fuses the last layer with cross_entropy; the loss is {self.loss!r}")
        self.resolved_hyperparameters  # noqa: B018  (raises for an unknown optimizer or a bad hyperparameter)

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The learning rate of one step; ``epoch`` counts from 1."""
        if self.lr_schedule == "constant" or self.epochs == 0:
            return self.lr
        progress = ((epoch - 1) * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ModelSettings:
    """The network ``softgrad train`` builds: a name of :data:`MODEL_NAMES`, the MLP's hidden widths (as
    ``run.json`` records them: ``"512,256,128,64"``), the activation and the dtype; for ``convnet`` the layer
    spec ``layers`` (:mod:`softgrad.training.convnet`)."""

    model: str = "mlp"
    hidden: str = ",".join(map(str, CLASSIC_MLP_HIDDEN))
    activation: str = "relu"
    dtype: str = "float32"
    layers: str | None = None

    @property
    def is_convnet(self) -> bool:
        return self.model in CONVNETS or self.model == "convnet"

    def conv_layers(self, activation_given: bool = False) -> str:
        """A ConvNet's layers: its name (``lenet``) or ``layers`` for ``convnet``; a clear error for flags that
        shape only the MLP (``activation_given``: the command line named ``--activation``)."""
        if not self.is_convnet:
            raise ValueError(f"--layers describes a convolutional network; --model {self.model} is an MLP "
                             "(give --model convnet, or --layers alone)")
        if activation_given:
            raise ValueError(f"--activation sets the MLP's hidden activation; --model {self.model} names its "
                             "activations in its layers (relu, tanh, sigmoid)")
        if self.model == "convnet":
            if not self.layers:
                raise ValueError('--model convnet needs --layers SPEC, such as --layers "conv(6,5) relu '
                                 'maxpool(2) dense(84) relu"')
            return self.layers
        if self.layers is not None:
            raise ValueError(f"--layers describes a network of your own (--model convnet); --model {self.model} "
                             "names its own layers")
        return self.model

    def hidden_widths(self, hidden_given: bool = False) -> list[int]:
        """The hidden widths: the model's, or ``hidden`` for the MLP; a clear error for anything else
        (``hidden_given``: the command line named ``--hidden``, which only the MLP takes). A ConvNet has none."""
        if self.is_convnet:
            if hidden_given:
                raise ValueError(f"--hidden shapes the MLP; --model {self.model} has no hidden widths (its layers "
                                 "are named in --layers or by its name)")
            return []
        if self.layers is not None:
            self.conv_layers()  # the clear error: --layers with an MLP
        if self.model != "mlp":
            if hidden_given:
                raise ValueError(f"--hidden shapes the MLP; --model {self.model} has no hidden layers")
            return list(MODELS[self.model])
        text = str(self.hidden)
        try:
            widths = [int(w) for w in text.split(",")]
        except ValueError:
            widths = []
        if not widths or min(widths) < 1:
            raise ValueError(f"--hidden must be positive widths separated by commas, such as 512,256; got {text!r}")
        return widths


@dataclass(frozen=True)
class DataSettings:
    """The data ``softgrad train`` loads: a data set's name, the classes of a binary task (``--binary``),
    the folder of the full sets, and whether to download them; or your own file (``data``, its absolute path;
    ``dataset`` is then None) with its ``target`` column, ``task`` and ``test_fraction`` (see
    :func:`softgrad.datasets.load_file`)."""

    dataset: str | None = "mnist"
    binary: str | None = None
    root: str | None = None
    download: bool = False
    data: str | None = None
    target: str | None = None
    task: str | None = None
    test_fraction: float | None = None


def hyperparameter_names() -> dict[str, dict[str, Any]]:
    """Every optimizer's hyperparameters (but lr), each with the optimizers that take it and fit's default for
    each (:data:`TRAINING_DEFAULTS`, else torch's): the command line's flags, one per name."""
    names: dict[str, dict[str, Any]] = {}
    for optimizer in OPTIMIZERS.values():
        for key, value in optimizer.defaults.items():
            value = TRAINING_DEFAULTS.get(optimizer.name, {}).get(key, value)
            names.setdefault(key, {})[optimizer.name] = value
    return names


@dataclass(frozen=True)
class RunSettings:
    """Everything ``softgrad train`` runs with: the backend (a name or ``auto``), the model, the data and the
    training. ``by_option`` names the hyperparameters given as ``--optimizer-option NAME=VALUE`` rather than by
    their own flag: ``run.json`` records them apart, and messages name the flag that set them."""

    backend: str = "numpy"
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainSettings = field(default_factory=TrainSettings)
    by_option: frozenset[str] = frozenset()

    def to_record(self) -> dict[str, Any]:
        """The settings as ``run.json`` holds them: one flat mapping, every optimizer's hyperparameter named
        (None where the run takes fit's default), those given as options under ``optimizer_options``."""
        training, given = self.training, dict(self.training.hyperparameters)
        flags = {key: (None if key in self.by_option else given.get(key)) for key in hyperparameter_names()}
        model, data = self.model, self.data
        return {"backend": self.backend, "model": model.model, "hidden": model.hidden, "layers": model.layers,
                "activation": model.activation,
                "dataset": data.dataset, "binary": data.binary, "root": data.root, "download": data.download,
                "data": data.data, "target": data.target, "task": data.task, "test_fraction": data.test_fraction,
                "dtype": model.dtype, "epochs": training.epochs, "batch_size": training.batch_size, "lr": training.lr,
                "lr_schedule": training.lr_schedule, "seed": training.seed, "loss": training.loss,
                "optimizer": training.optimizer, **flags,
                "optimizer_options": {k: v for k, v in given.items() if k in self.by_option},
                "loss_options": dict(training.loss_options), "chunked_head": training.chunked_head}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunSettings:
        """Settings from a ``run.json`` record (:meth:`to_record`'s keys, any of them missing: the default's)."""
        defaults = cls().to_record()
        unknown = sorted(set(record) - set(defaults))
        if unknown:
            raise TypeError(f"unknown run settings: {', '.join(unknown)}")
        values = {**defaults, **{k: v for k, v in record.items() if k != "lr"}, "lr": record.get("lr")}
        options = dict(values["optimizer_options"] or {})
        chosen = {k: values[k] for k in hyperparameter_names() if values.get(k) is not None}
        training = TrainSettings(
            epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
            lr_schedule=values["lr_schedule"], seed=values["seed"], loss=values["loss"],
            loss_options=dict(values["loss_options"] or {}), optimizer=values["optimizer"],
            hyperparameters={**chosen, **options}, chunked_head=bool(values["chunked_head"]))
        return cls(backend=values["backend"],
                   model=ModelSettings(**{f: values[f] for f in ModelSettings.__dataclass_fields__}),
                   data=DataSettings(**{f: values[f] for f in DataSettings.__dataclass_fields__}),
                   training=training, by_option=frozenset(options))


__all__ = ["MODEL_NAMES", "TRAINING_DEFAULTS", "TRAINING_LR", "DataSettings", "ModelSettings", "RunSettings", "TrainSettings",
           "default_loss", "hyperparameter_names"]
