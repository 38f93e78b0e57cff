"""The flags of ``softgrad train``: its parser, the settings they make (a
:class:`~softgrad.training.settings.RunSettings`, the object the library's settings are part of), and what is
checked of them before any work, each error naming the flag given."""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from softgrad import datasets
from softgrad.commands.cli import OneLineErrorParser
from softgrad.numerics.losses import LOSSES, get_loss
from softgrad.numerics.optim import OPTIMIZERS, get_optimizer
from softgrad.numerics.registry import backend_names, get_backend
from softgrad.training.convnet import GRAMMAR
from softgrad.training.layers import ACTIVATIONS
from softgrad.training.settings import MODEL_NAMES, RunSettings, TrainSettings, hyperparameter_names

PROG = "softgrad train"
# what --resume takes from the run it continues: the model and the data must not change
FROM_RUN = ("model", "hidden", "layers", "activation", "dataset", "binary", "root", "seed", "dtype", "data", "target", "task",
            "test_fraction")
#: the flags that belong to a named data set, and those that belong to your own file (--data)
NAMED_DATA_FLAGS = ("dataset", "binary", "root", "download")
FILE_DATA_FLAGS = ("target", "task", "test_fraction")
LOSS_RULE = "cross_entropy for classes, mse for regression data, bce_with_logits with --binary"


def run_defaults() -> dict[str, Any]:
    """The defaults as run.json records them; its keys are the only ones a run.json may hold. Read when the
    command runs, with the optimizers registered then (one key per hyperparameter of any of them)."""
    return RunSettings().to_record()


def _betas(text: str) -> tuple[float, float]:
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers such as 0.9,0.999, got {text!r}") from None
    return first, second


def _option(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def _optimizers_epilog(losses: list[str]) -> str:
    lines = ["optimizers and their hyperparameters (defaults: torch.optim's, but fit's own for SGD):"]
    for name in OPTIMIZERS:
        training = TrainSettings(optimizer=name)  # fit's defaults for the optimizer, as a run takes them
        settings = ", ".join(f"{key} {_show(value)}" for key, value in training.resolved_hyperparameters.items())
        lines.append(f"  {name}: lr {training.lr:g}, {settings}")
    lines.append("losses: " + ", ".join(losses) + f" (default: {LOSS_RULE})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The parser, built when the command runs: the losses and optimizers it offers are the registry's then,
    plugged-in ones included."""
    losses = LOSSES.names()
    p = OneLineErrorParser(
        prog=PROG,
        description="Train softmax regression, linear regression or an MLP with hand-written backprop on any "
                    "softgrad backend.",
        argument_default=None, epilog=_optimizers_epilog(losses), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_and_data_flags(p)
    _training_flags(p, losses)
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<backend>-<time>)")
    p.add_argument("--json", metavar="PATH", help="also write the history to PATH")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN (or from its checkpoint.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    p.add_argument("--tensorboard", metavar="DIR", help="also write each epoch's figures as TensorBoard scalars "
                   "in DIR (tensorboard --logdir DIR; needs tensorboardX: pip install 'softgrad[tensorboard]')")
    _distributed_flags(p)
    return p


def _distributed_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("data-parallel training (docs/distributed.md)")
    group.add_argument("--distributed", action="store_true", help="one rank of a data-parallel run, launched "
                       "by torchrun: torchrun --nproc-per-node K -m softgrad train --distributed --out RUN ... "
                       "(--batch-size is then the global batch, all ranks together; --out is required, and a "
                       "checkpoint there is resumed, so torchrun --max-restarts continues the run)")
    group.add_argument("--dist-timeout", type=float, metavar="MINUTES", help="with --distributed: how long a rank "
                       "waits for a dead or hung one before every rank stops with an error (default 5)")


def _model_and_data_flags(p: argparse.ArgumentParser) -> None:
    d = run_defaults()
    p.add_argument("--backend", help=f"{', '.join(backend_names())}, or auto: the fastest here for this "
                   f"network and batch size, from a short cached probe (default {d['backend']})")
    p.add_argument("--model", choices=list(MODEL_NAMES), help=f"linear (softmax regression for classes, linear "
                   f"regression for values), mlp, lenet (for 28x28 images), tutorial-cnn (PyTorch's CIFAR-10 "
                   f"tutorial network) or convnet (with --layers) (default {d['model']}; docs/convolutions.md)")
    p.add_argument("--hidden", help=f"MLP hidden widths, comma-separated (default {d['hidden']})")
    p.add_argument("--layers", metavar="SPEC", help="a convolutional network of your own (implies --model convnet), "
                   f"tokens separated by spaces or commas: {GRAMMAR}; the output dense layer is added, e.g. "
                   "'conv(6,5) relu maxpool(2) dense(84) relu'")
    p.add_argument("--activation", choices=list(ACTIVATIONS),
                   help=f"hidden activation (default {d['activation']})")
    p.add_argument("--dataset", choices=list(datasets.NAMES),
                   help=f"data set (default {d['dataset']}: the shipped subset unless --root holds the full one)")
    p.add_argument("--binary", metavar="CLASSES", help="a binary task: these classes against the rest, e.g. 0, "
                   "'0,6', even, odd or a class name (trains one output with bce_with_logits unless --loss says)")
    p.add_argument("--root", help="folder torchvision reads and downloads to (default $SOFTGRAD_DATA or ~/.cache/softgrad/data)")
    p.add_argument("--download", action="store_true", default=None, help="download missing data files with torchvision")
    p.add_argument("--data", metavar="FILE", help="your own data instead of --dataset: an .npz with x_train, y_train "
                   "(optionally x_test, y_test) or a .csv with a header row (name the target with --target)")
    p.add_argument("--target", metavar="COLUMN", help="with --data FILE.csv: the column to predict; every other "
                   "column is a numeric feature")
    p.add_argument("--task", choices=list(datasets.TASKS), help="with --data: classification or regression (default: "
                   f"inferred: text, or integers with at most {datasets.CLASS_LIMIT} distinct values, are classes)")
    p.add_argument("--test-fraction", type=float, metavar="F", help="with --data and no x_test/y_test: the rows held "
                   f"out to test on, drawn with a fixed seed (default {datasets.DEFAULT_TEST_FRACTION:g}; 0: no test "
                   "split)")


def _training_flags(p: argparse.ArgumentParser, losses: list[str]) -> None:
    d = run_defaults()
    p.add_argument("--epochs", type=int, help=f"epochs in all, counting resumed ones (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"samples per SGD step (default {d['batch_size']}); with "
                   "--distributed the global batch, shared out among the ranks (not per rank)")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d['lr']:g} for {d['optimizer']}, else "
                   "the optimizer's torch default: adam 0.001, rmsprop 0.01, ...)")
    p.add_argument("--loss", choices=losses, help=f"the loss (default {LOSS_RULE})")
    p.add_argument("--loss-option", dest="loss_options", metavar="NAME=VALUE", action="append", type=_option,
                   help="an option of the loss, e.g. delta=0.5 (huber), beta=0.5 (smooth_l1), pos_weight=3.0 "
                   "(bce_with_logits), label_smoothing=0.1 or weight=[1,2,...] (cross_entropy) (repeatable)")
    p.add_argument("--chunked-head", action="store_true", default=None,
                   help="fuse the last layer with cross-entropy, chunk by chunk (linear_cross_entropy): the batch's "
                   "logits are never held, for many classes; same results, no train accuracy")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"the optimizer (default {d['optimizer']})")
    for key, takers in hyperparameter_names().items():  # one flag per hyperparameter of any optimizer
        sample = next(iter(takers.values()))
        defaults = ", ".join(f"{name} {_show(value)}" for name, value in takers.items())
        kwargs: dict = ({"action": argparse.BooleanOptionalAction} if isinstance(sample, bool)
                        else {"type": _betas, "metavar": "B1,B2"} if isinstance(sample, tuple) else {"type": float})
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, help=f"default: {defaults}", **kwargs)
    p.add_argument("--optimizer-option", dest="optimizer_options", metavar="NAME=VALUE", action="append",
                   type=_option, help="any hyperparameter of the optimizer as NAME=VALUE, e.g. dampening=0.1 or "
                   "betas=(0.9,0.99) (repeatable; for optimizers added as plugins)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], help=f"learning-rate schedule (default {d['lr_schedule']})")
    p.add_argument("--seed", type=int, help=f"seeds the weights and the batch order (default {d['seed']})")
    p.add_argument("--dtype", choices=["float32", "float64"], help=f"parameter and data type (default {d['dtype']})")


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line named, under run.json's keys (NAME=VALUE options as mappings)."""
    keys = run_defaults()
    given = {k: v for k, v in vars(args).items() if v is not None and k in keys}
    for key in ("optimizer_options", "loss_options"):
        if key in given:
            given[key] = dict(given[key])
    return given


def checked_flags(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`given_flags` with --data checked and made absolute, as :func:`resolve_settings` takes them: what
    another rank of a --distributed run compares with rank 0's."""
    given = given_flags(args)
    _check_data_flags(given)
    return given


@dataclass(frozen=True)
class Resolved:
    """The run's settings and where they came from: the flags named (``given``), the checkpoint a resumed run
    continues (``resume_from``; None for a new run), and the folder of a run that stopped before its first
    checkpoint (``restarted``), which ``--resume`` starts again from the beginning."""

    settings: RunSettings
    given: dict[str, Any]
    resume_from: Path | None = None
    restarted: Path | None = None


def resolve_settings(args: argparse.Namespace) -> Resolved:
    """The run's settings: flags given, else the resumed run's (its run.json), else the defaults."""
    given = given_flags(args)
    _check_data_flags(given)
    if "layers" in given:  # a spec of your own: a ConvNet, unless --model says otherwise (refused by the check)
        given.setdefault("model", "convnet")
    if not args.resume:
        settings = RunSettings.from_record({**given, "dataset": None} if "data" in given else given)
        _check_file_settings(settings, given)
        return Resolved(settings, given)
    run = Path(args.resume)
    resume_from, restarted = (run if run.suffix == ".npz" else run / "checkpoint.npz"), None
    run_json = resume_from.parent / "run.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no checkpoint.npz and run.json there")
    if not resume_from.exists():  # stopped before its first epoch ended: nothing to continue from
        print(f"{PROG}: {resume_from.parent} has no checkpoint (the run stopped before its first epoch "
              "ended): starting it again from the beginning", file=sys.stderr)
        resume_from, restarted = None, resume_from.parent
    try:
        saved = json.loads(run_json.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"--resume: {run_json} is damaged or unreadable ({error})") from None
    if not isinstance(saved, dict) or not set(saved) <= set(run_defaults()):
        raise ValueError(f"--resume: {run_json} does not hold a run's settings")
    changed = [k for k in FROM_RUN if k in given and given[k] != saved.get(k)]
    if changed:
        raise ValueError(f"--resume continues the same model and data; drop {', '.join('--' + k for k in changed)}")
    settings = RunSettings.from_record({**saved, **given})
    _check_file_settings(settings, given)
    return Resolved(settings, given, resume_from, restarted)


def _check_data_flags(given: dict[str, Any]) -> None:
    """--data and the flags of a named data set exclude each other; --data's path is made absolute (run.json
    records it so, and --resume compares it so); --test-fraction is checked before any work."""
    if "data" not in given:
        return
    if "dataset" in given:
        raise ValueError(f"--data {given['data']} and --dataset {given['dataset']}: give one or the other")
    named = [f"--{k}" for k in NAMED_DATA_FLAGS if k in given]
    if named:
        raise ValueError(f"--data {given['data']}: {', '.join(named)} {'is' if len(named) == 1 else 'are'} for the "
                         "data sets softgrad ships or downloads (--dataset), not for your own file")
    path = Path(given["data"]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--data {given['data']}: no such file")
    given["data"] = str(path.resolve())


def _check_file_settings(settings: RunSettings, given: dict[str, Any]) -> None:
    """The flags of your own file, only with one, and --test-fraction in [0, 1)."""
    data = settings.data
    if data.data is None:
        stray = [f"--{k.replace('_', '-')}" for k in FILE_DATA_FLAGS if k in given]
        if stray:
            raise ValueError(f"{', '.join(stray)}: for your own data file (--data FILE)")
        return
    fraction = data.test_fraction
    if fraction is not None and not 0 <= fraction < 1:
        raise ValueError(f"--test-fraction must be in [0, 1) (0: no test split), got {fraction:g}")


def _flag(name: str, settings: RunSettings) -> str:
    """The flag that sets the optimizer's hyperparameter ``name`` (``--optimizer-option`` where it came there)."""
    if name in settings.by_option or (name not in hyperparameter_names() and name != "lr"):
        return f"--optimizer-option {name}"
    return f"--{name.replace('_', '-')}"


def in_flag_terms(message: str, settings: RunSettings) -> str:
    """An optimizer's message (``sgd_step: momentum must be ...``) in the command line's terms
    (``--momentum must be ...``): the flags the user typed, not the functions that checked them."""
    message = re.sub(r"^\w+_(?:step|init): ", "", message)
    if message.startswith("nesterov momentum requires"):
        return (f"{_flag('nesterov', settings)} needs {_flag('momentum', settings)} above 0 and "
                f"{_flag('dampening', settings)} 0, as torch.optim.SGD does")
    message = message.replace("betas[0]", "the first of --betas").replace("betas[1]", "the second of --betas")
    names = sorted({*hyperparameter_names(), *settings.by_option, "lr"}, key=len, reverse=True)
    return re.sub(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w\[])",
                  lambda m: _flag(m.group(1), settings), message)


def check_optimizer_flags(settings: RunSettings) -> None:
    """The optimizer's hyperparameters as torch.optim checks them, each error naming the flag given."""
    training = settings.training
    optimizer = get_optimizer(training.optimizer)
    takes = ", ".join(["--lr", *(_flag(k, RunSettings()) for k in optimizer.defaults)])
    for key in training.hyperparameters:
        if key not in settings.by_option and key not in optimizer.defaults:
            raise ValueError(f"--{key.replace('_', '-')}: {optimizer.name} has no hyperparameter {key!r}; it takes "
                             f"{takes}")
    for key in settings.by_option:
        if key == "lr":
            raise ValueError("--optimizer-option lr: give the learning rate with --lr")
        if key not in optimizer.defaults:
            raise ValueError(f"--optimizer-option {key}: {optimizer.name} has no hyperparameter {key!r}; it takes "
                             f"{takes}")
    try:  # the loss's options and the fused head are checked on their own, with their flags' messages
        replace(training, loss_options={}, chunked_head=False).check()
    except (TypeError, ValueError) as error:
        raise type(error)(in_flag_terms(str(error), settings)) from None


def check_settings(settings: RunSettings, hidden_given: bool, activation_given: bool = False) -> None:
    """Every setting, checked before the data is read and before anything is written (``hidden_given``,
    ``activation_given``: the command line named ``--hidden``, ``--activation``, which only the MLP takes)."""
    training = settings.training
    if settings.backend != "auto":
        get_backend(settings.backend)
    settings.model.hidden_widths(hidden_given)
    if settings.model.is_convnet:
        from softgrad.training.convnet import parse_layers

        try:  # a bad token named before any work, in the flag's terms
            parse_layers(settings.model.conv_layers(activation_given))
        except ValueError as error:
            text = str(error)
            raise ValueError(f"--{text}" if text.startswith("layers:") else text) from None
        if training.chunked_head:
            raise ValueError(f"--chunked-head fuses the MLP's last layer with cross_entropy; --model "
                             f"{settings.model.model} has no such head")
    if not isinstance(training.seed, int) or training.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {training.seed!r}")
    epochs, batch_size = training.epochs, training.batch_size
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        # 0 epochs would leave a folder with no checkpoint that neither evaluate nor --resume could use
        raise ValueError(f"--epochs must be at least 1 (it counts every epoch, resumed ones too), got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size!r}")
    check_optimizer_flags(settings)
    if training.chunked_head and training.loss not in (None, "cross_entropy"):
        raise ValueError(f"--chunked-head fuses the last layer with cross_entropy; --loss is {training.loss}")
    if settings.data.binary is not None and training.loss is not None \
            and get_loss(training.loss).targets == "value":
        raise ValueError(f"--binary makes a classification task; --loss {training.loss} is a regression loss")


__all__ = ["FILE_DATA_FLAGS", "FROM_RUN", "NAMED_DATA_FLAGS", "PROG", "run_defaults", "Resolved", "build_parser", "check_optimizer_flags",
           "check_settings", "given_flags", "in_flag_terms", "resolve_settings"]
