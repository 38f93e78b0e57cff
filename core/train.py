"""``python -m core.train``: train a classifier or a regressor on any backend and write a run folder.

    python -m core.train --backend numpy --model mlp --dataset mnist --epochs 10
    python -m core.train --dataset mnist --binary 0 --optimizer adam --lr 1e-3     # "is it a 0?"
    python -m core.train --dataset diabetes --model linear --optimizer adam --lr 0.01

One line per epoch, then per-class accuracy (classification) or RMSE, MAE and
R² (regression). The run folder holds ``checkpoint.npz``, ``history.json``,
``curves.png``, ``predictions.png`` (images) or ``fit.png`` (regression) and
``run.json`` (the settings, which ``--resume`` reads back).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import datasets
from core.base.errors import BackendUnavailableError
from core.base.files import atomic_write_text, writable_target
from core.base.losses import LOSSES, Loss
from core.base.optim import OPTIMIZERS
from core.base.registry import backend_names, get_backend
from core.training import reports
from core.training.auto import resolve_backend
from core.training.layers import ACTIVATIONS
from core.training.loop import (
    TrainingDivergedError,
    check_data,
    check_loss_options,
    check_resume,
    fit,
    predict,
)
from core.training.metrics import confusion_matrix, per_class_accuracy, regression_metrics
from core.training.models import CLASSIC_MLP_HIDDEN, MLP, MODELS
from core.training.step import TRAINING_DEFAULTS, TRAINING_LR, TrainSettings

_TRAINING = TrainSettings()


def _hyperparameter_flags() -> dict[str, dict[str, object]]:
    """Every optimizer's hyperparameters (but lr), each with the optimizers that take it and their defaults."""
    flags: dict[str, dict[str, object]] = {}
    for optimizer in OPTIMIZERS.values():
        for key, value in optimizer.defaults.items():
            value = TRAINING_DEFAULTS.get(optimizer.name, {}).get(key, value)
            flags.setdefault(key, {})[optimizer.name] = value
    return flags


HYPERPARAMETERS = _hyperparameter_flags()
DEFAULTS = {
    "backend": "numpy", "model": "mlp", "hidden": ",".join(map(str, CLASSIC_MLP_HIDDEN)),
    "activation": "relu", "dataset": "mnist", "binary": None, "root": None, "download": False, "dtype": "float32",
    # fit's own defaults; lr None: 0.05 for SGD, else the optimizer's (torch's); loss None: by the data
    "epochs": _TRAINING.epochs, "batch_size": _TRAINING.batch_size, "lr": None,
    "lr_schedule": _TRAINING.lr_schedule, "seed": _TRAINING.seed, "loss": None,
    "optimizer": _TRAINING.optimizer,
    # the optimizer's hyperparameters: None takes fit's default for the optimizer (TRAINING_DEFAULTS, torch's)
    **{key: None for key in HYPERPARAMETERS}, "optimizer_options": {}, "loss_options": {},
    "chunked_head": False,
}
SGD_DEFAULTS = TRAINING_DEFAULTS["sgd"]
# what --resume takes from the run it continues: the model and the data must not change
FROM_RUN = ("model", "hidden", "activation", "dataset", "binary", "root", "seed", "dtype")


def _betas(text: str) -> tuple[float, float]:
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers such as 0.9,0.999, got {text!r}") from None
    return first, second


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def _optimizers_epilog() -> str:
    lines = ["optimizers and their hyperparameters (defaults: torch.optim's, but fit's own for SGD):"]
    for optimizer in OPTIMIZERS.values():
        lr = TRAINING_LR.get(optimizer.name, optimizer.lr)
        values = {**optimizer.defaults, **TRAINING_DEFAULTS.get(optimizer.name, {})}
        settings = ", ".join(f"{key} {_show(value)}" for key, value in values.items())
        lines.append(f"  {optimizer.name}: lr {lr:g}, {settings}")
    lines.append("losses: " + ", ".join(LOSSES.names()) + " (default: cross_entropy for classes, mse for "
                 "regression data, bce_with_logits with --binary)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train softmax regression, linear regression or an MLP with hand-written backprop on any "
                    "softgrad backend.",
        argument_default=None, epilog=_optimizers_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument("--backend", help=f"{', '.join(backend_names())}, or auto: the fastest here for this "
                   f"network and batch size, from a short cached probe (default {d['backend']})")
    p.add_argument("--model", choices=list(MODELS), help=f"linear (softmax regression for classes, linear "
                   f"regression for values) or MLP (default {d['model']})")
    p.add_argument("--hidden", help=f"MLP hidden widths, comma-separated (default {d['hidden']})")
    p.add_argument("--activation", choices=list(ACTIVATIONS),
                   help=f"hidden activation (default {d['activation']})")
    p.add_argument("--dataset", choices=list(datasets.NAMES),
                   help=f"data set (default {d['dataset']}: the shipped subset unless --root holds the full one)")
    p.add_argument("--binary", metavar="CLASSES", help="a binary task: these classes against the rest, e.g. 0, "
                   "'0,6', even, odd or a class name (trains one output with bce_with_logits unless --loss says)")
    p.add_argument("--root", help="folder torchvision reads and downloads to (default $SOFTGRAD_DATA or ~/.cache/softgrad/data)")
    p.add_argument("--download", action="store_true", default=None, help="download missing data files with torchvision")
    p.add_argument("--epochs", type=int, help=f"epochs in all, counting resumed ones (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"samples per SGD step (default {d['batch_size']})")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.05 for sgd, else the optimizer's "
                   "torch default: adam 0.001, rmsprop 0.01, ...)")
    p.add_argument("--loss", choices=LOSSES.names(), help="the loss (default cross_entropy for classes, mse for "
                   "regression data, bce_with_logits with --binary)")
    p.add_argument("--loss-option", dest="loss_options", metavar="NAME=VALUE", action="append", type=_option,
                   help="an option of the loss, e.g. delta=0.5 (huber), beta=0.5 (smooth_l1), pos_weight=3.0 "
                   "(bce_with_logits), label_smoothing=0.1 or weight=[1,2,...] (cross_entropy) (repeatable)")
    p.add_argument("--chunked-head", action="store_true", default=None,
                   help="fuse the last layer with cross-entropy, chunk by chunk (linear_cross_entropy): the batch's "
                   "logits are never held, for many classes; same results, no train accuracy")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"the optimizer (default {d['optimizer']})")
    for key, takers in HYPERPARAMETERS.items():  # one flag per hyperparameter of any optimizer
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
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<backend>-<time>)")
    p.add_argument("--json", metavar="PATH", help="also write the history to PATH")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN (or from its checkpoint.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p


def _option(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def given_flags(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if v is not None and k in DEFAULTS}


def resolve_settings(args: argparse.Namespace) -> tuple[dict, Path | None]:
    """The run's settings: flags given, else the resumed run's, else the defaults."""
    given = given_flags(args)
    for key in ("optimizer_options", "loss_options"):
        if key in given:
            given[key] = dict(given[key])
    settings = dict(DEFAULTS)
    resume_from = None
    if args.resume:
        run = Path(args.resume)
        resume_from = run if run.suffix == ".npz" else run / "checkpoint.npz"
        run_json = resume_from.parent / "run.json"
        if not resume_from.is_file() or not run_json.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no checkpoint.npz and run.json there")
        try:
            saved = json.loads(run_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ValueError(f"--resume: {run_json} is damaged or unreadable ({error})") from None
        if not isinstance(saved, dict) or not set(saved) <= set(DEFAULTS):
            raise ValueError(f"--resume: {run_json} does not hold a run's settings")
        settings.update(saved)
        changed = [k for k in FROM_RUN if k in given and given[k] != saved.get(k)]
        if changed:
            raise ValueError(f"--resume continues the same model and data; drop {', '.join('--' + k for k in changed)}")
    settings.update(given)
    return settings, resume_from


def hidden_widths(settings: dict, given: dict) -> list[int]:
    """The hidden widths: the model's, or --hidden for the MLP; a clear error for anything else."""
    if settings["model"] != "mlp":
        if "hidden" in given:
            raise ValueError(f"--hidden shapes the MLP; --model {settings['model']} has no hidden layers")
        return list(MODELS[settings["model"]])
    text = str(settings["hidden"])
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ValueError(f"--hidden must be positive widths separated by commas, such as 512,256; got {text!r}")
    return widths


def check_arguments(settings: dict, given: dict, args: argparse.Namespace) -> None:
    """Everything that can be checked before the data is read and before anything is written."""
    if settings["backend"] != "auto":
        get_backend(settings["backend"])
    hidden_widths(settings, given)
    if not isinstance(settings["seed"], int) or settings["seed"] < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {settings['seed']!r}")
    TrainSettings.from_dict({k: settings[k] for k in ("epochs", "batch_size", "lr", "lr_schedule", "seed", "loss",
                                                      "optimizer")} | {"hyperparameters": hyperparameters(settings)}
                            ).check()
    if settings.get("chunked_head") and settings["loss"] not in (None, "cross_entropy"):
        raise ValueError(f"--chunked-head fuses the last layer with cross_entropy; --loss is {settings['loss']}")
    if settings["binary"] is not None and settings["loss"] is not None \
            and LOSSES.lookup(settings["loss"]).targets == "value":
        raise ValueError(f"--binary makes a classification task; --loss {settings['loss']} is a regression loss")
    if args.json:
        writable_target(args.json)
    if args.out:
        check_folder_can_be_made(Path(args.out))
    if args.out and not args.resume:
        out = Path(args.out)
        if (out / "checkpoint.npz").exists() or (out / "run.json").exists():
            raise FileExistsError(f"--out {out} holds a run already: continue it with --resume {out}, or give "
                                  "--out a new folder")
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file, not a folder")


def check_folder_can_be_made(folder: Path) -> None:
    """A clear error, before any work, for a run folder that could not be created or written."""
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in folder.parts:
        if len(part.encode()) > limit:
            raise ValueError(f"--out: the name {part[:40]}... is {len(part.encode())} bytes long; this file "
                             f"system allows {limit}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {folder}: cannot create or write in {existing}")


def build_model(settings: dict, num_features: int, num_outputs: int, given: dict | None = None) -> MLP:
    hidden = hidden_widths(settings, given or {})
    return MLP([num_features, *hidden, num_outputs], settings["activation"], seed=settings["seed"],
               dtype=settings["dtype"])


def hyperparameters(settings: dict) -> dict:
    """The optimizer's hyperparameters the run sets (the rest take fit's defaults)."""
    chosen = {k: settings[k] for k in HYPERPARAMETERS if settings.get(k) is not None}
    return {**chosen, **dict(settings.get("optimizer_options") or {})}


def choose_loss(settings: dict, data: datasets.Dataset) -> Loss:
    """--loss, else what suits the data: mse for regression, bce_with_logits for --binary, else cross-entropy."""
    if settings["loss"] is not None:
        return LOSSES.lookup(settings["loss"])
    if data.task == "regression":
        return LOSSES.lookup("mse_loss")
    return LOSSES.lookup("binary_cross_entropy_with_logits" if settings["binary"] is not None else "cross_entropy")


def run(args: argparse.Namespace) -> int:
    settings, resume_from = resolve_settings(args)
    out = Path(args.out) if args.out else (resume_from.parent if resume_from else Path("runs") / (
        f"{settings['dataset']}-{settings['model']}-{settings['backend'].replace(':', '-')}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}"))
    try:
        return _run(args, settings, resume_from, out)
    except KeyboardInterrupt:
        if (out / "checkpoint.npz").is_file():
            print(f"train: interrupted; the last finished epoch is in {out / 'checkpoint.npz'} "
                  f"(continue with --resume {out})", file=sys.stderr)
        else:
            print("train: interrupted before the first epoch finished; nothing was saved to resume",
                  file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, settings: dict, resume_from: Path | None, out: Path) -> int:
    say = (lambda _: None) if args.quiet else print

    check_arguments(settings, given_flags(args), args)  # before the data is read and anything is written
    options = {"binary": settings["binary"]} if settings["binary"] is not None else {}
    data = datasets.load(settings["dataset"], root=settings["root"], download=bool(settings["download"]), **options)
    loss = choose_loss(settings, data)
    settings["loss"] = loss.name
    model = build_model(settings, data.num_features, 1 if loss.targets == "binary" else data.num_outputs)
    check_data(data, model, loss)  # the loss suits the data: checked before the run folder is made
    check_loss_options(model, data, loss, dict(settings["loss_options"] or {}))
    if resume_from is not None:  # and the checkpoint continues this model and optimizer, before run.json changes
        check_resume(model, resume_from, settings["optimizer"])
    say(f"data: {data.source}: {len(data.y_train):,} train / {len(data.y_test):,} test")
    model.to(resolve_backend(settings["backend"], model.widths, min(settings["batch_size"], len(data.y_train)),
                             settings["dtype"], log=say))
    say(f"model: {model}; run folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    settings["backend"] = model.be.name  # the backend that runs, never "auto"
    atomic_write_text(out / "run.json", json.dumps({k: settings[k] for k in DEFAULTS}, indent=2))

    history = fit(model, data, loss=settings["loss"], loss_options=dict(settings["loss_options"] or {}),
                  optimizer=settings["optimizer"], epochs=settings["epochs"],
                  batch_size=settings["batch_size"], lr=settings["lr"], lr_schedule=settings["lr_schedule"],
                  seed=settings["seed"], checkpoint_path=out / "checkpoint.npz", resume=resume_from,
                  progress=False if args.quiet else None, log=say,
                  chunked_head=bool(settings.get("chunked_head")), **hyperparameters(settings))

    history_text = json.dumps(history, indent=2)
    atomic_write_text(out / "history.json", history_text)
    if args.json:
        atomic_write_text(args.json, history_text)
    if history:
        reports.plot_curves(history, out / "curves.png", title=f"{data.name} {model}")
    if loss.targets == "value":
        report_regression(model, data, loss, out, quiet=args.quiet)
    else:
        report_classification(model, data, loss, out, quiet=args.quiet)
    written = [name for name in ("run.json", "checkpoint.npz", "history.json", "curves.png", "predictions.png",
                                 "fit.png") if (out / name).is_file()]
    say(f"wrote {out}/: {', '.join(written)}")
    return 0


def report_classification(model: MLP, data: datasets.Dataset, loss: Loss, out: Path, quiet: bool) -> None:
    """The test accuracy and the accuracy of each class; the test images with their predictions."""
    predictions = predict(model, data.x_test, loss=loss)
    cm = confusion_matrix(data.y_test, predictions, data.num_classes)
    accuracy = f"test accuracy {np.mean(predictions == data.y_test):.2%}"
    if quiet:  # one line: the result and where the run is
        print(f"{accuracy}; run folder: {out}")
    else:
        print(f"{accuracy}; per class:")
        for name, value, total in zip(data.classes, per_class_accuracy(cm), cm.sum(axis=1)):
            print(f"  {name:>12}  {'n/a' if np.isnan(value) else f'{value:.2%}'}  ({total} samples)")
    if data.image_shape is not None:
        reports.plot_predictions(data.x_test, data.y_test, predictions, data.classes, data.image_shape,
                                 data.mean, data.std, out / "predictions.png")


def report_regression(model: MLP, data: datasets.Dataset, loss: Loss, out: Path, quiet: bool) -> None:
    """RMSE, MAE and R² on the test set, in the data's units; fit.png: the fitted line over the points for
    one feature and one target (as the tutorials draw it), else predicted against true values."""
    def original(y):
        return np.asarray(y, np.float64) * np.asarray(data.target_std) + np.asarray(data.target_mean)

    predictions = predict(model, data.x_test, loss=loss, target_mean=data.target_mean, target_std=data.target_std)
    figures = regression_metrics(original(data.y_test), predictions)
    line = f"test RMSE {figures['rmse']:.4g}  MAE {figures['mae']:.4g}  R² {figures['r2']:.4f}"
    print(f"{line}; run folder: {out}" if quiet else line)
    reports.plot_regression(data, lambda x: predict(model, x, loss=loss, target_mean=data.target_mean,
                                                    target_std=data.target_std), out / "fit.png",
                            title=f"{data.name}: {model}")


def main(argv: list[str] | None = None) -> int:
    from datasets import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except TrainingDivergedError as error:
        print(f"train: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return 0
    except (BackendUnavailableError, DatasetError, OSError, ValueError, TypeError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
