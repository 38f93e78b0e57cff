"""``softgrad train``: train a classifier or a regressor on any backend and write a run folder.

    softgrad train --backend numpy --model mlp --dataset mnist --epochs 10
    softgrad train --dataset mnist --binary 0 --optimizer adam --lr 1e-3     # "is it a 0?"
    softgrad train --dataset diabetes --model linear --optimizer adam --lr 0.01

(``python -m softgrad train`` is the same command; in a checkout, so is ``python -m softgrad.commands.train``.)

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
import re
import sys
import time
from pathlib import Path

import numpy as np
from softgrad import datasets
from softgrad.commands.cli import OneLineErrorParser, run_main
from softgrad.numerics.files import (
    LOCK_NAME,
    FolderBusyError,
    atomic_write_text,
    check_folder_writable,
    check_writable,
    claim_folder,
    writable_target,
)
from softgrad.numerics.losses import LOSSES, Loss
from softgrad.numerics.optim import OPTIMIZERS, get_optimizer
from softgrad.numerics.registry import backend_names, get_backend
from softgrad.training import reports
from softgrad.training.auto import resolve_backend
from softgrad.training.layers import ACTIVATIONS
from softgrad.training.loop import (
    TrainingDivergedError,
    check_data,
    check_loss_options,
    check_resume,
    fit,
    predict,
)
from softgrad.training.metrics import confusion_matrix, per_class_accuracy, regression_metrics
from softgrad.training.models import CLASSIC_MLP_HIDDEN, MLP, MODELS, check_fits_in_memory
from softgrad.training.step import TRAINING_DEFAULTS, TRAINING_LR, TrainSettings

_TRAINING = TrainSettings()
PROG = "softgrad train"


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
#: every file a run writes in its folder: a new run never writes into a folder holding one of them
RUN_FILES = ("run.json", "checkpoint.npz", "history.json", "curves.png", "predictions.png", "fit.png")


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
    p = OneLineErrorParser(
        prog=PROG,
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
    """The run's settings: flags given, else the resumed run's, else the defaults.

    Also where to resume from: None for a new run, and for a run stopped before its first checkpoint
    (its folder holds run.json alone), which ``--resume`` starts again from the beginning.
    """
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
        if not run_json.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no checkpoint.npz and run.json there")
        if not resume_from.exists():  # stopped before its first epoch ended: nothing to continue from
            print(f"{PROG}: {resume_from.parent} has no checkpoint (the run stopped before its first epoch "
                  "ended): starting it again from the beginning", file=sys.stderr)
            args.restarted_run = resume_from.parent
            resume_from = None
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


def _flag(name: str, settings: dict) -> str:
    """The flag that sets the optimizer's hyperparameter ``name`` (``--optimizer-option`` where it came there)."""
    if name in dict(settings.get("optimizer_options") or {}) or (name not in HYPERPARAMETERS and name != "lr"):
        return f"--optimizer-option {name}"
    return f"--{name.replace('_', '-')}"


def in_flag_terms(message: str, settings: dict) -> str:
    """An optimizer's message (``sgd_step: momentum must be ...``) in the command line's terms
    (``--momentum must be ...``): the flags the user typed, not the functions that checked them."""
    message = re.sub(r"^\w+_(?:step|init): ", "", message)
    if message.startswith("nesterov momentum requires"):
        return (f"{_flag('nesterov', settings)} needs {_flag('momentum', settings)} above 0 and "
                f"{_flag('dampening', settings)} 0, as torch.optim.SGD does")
    message = message.replace("betas[0]", "the first of --betas").replace("betas[1]", "the second of --betas")
    names = sorted({*HYPERPARAMETERS, *dict(settings.get("optimizer_options") or {}), "lr"}, key=len, reverse=True)
    return re.sub(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w\[])",
                  lambda m: _flag(m.group(1), settings), message)


def check_optimizer_flags(settings: dict) -> None:
    """The optimizer's hyperparameters as torch.optim checks them, each error naming the flag given."""
    optimizer = get_optimizer(settings["optimizer"])
    takes = ", ".join(["--lr", *(_flag(k, {}) for k in optimizer.defaults)])
    for key in HYPERPARAMETERS:
        if settings.get(key) is not None and key not in optimizer.defaults:
            raise ValueError(f"--{key.replace('_', '-')}: {optimizer.name} has no hyperparameter {key!r}; it takes "
                             f"{takes}")
    for key in dict(settings.get("optimizer_options") or {}):
        if key == "lr":
            raise ValueError("--optimizer-option lr: give the learning rate with --lr")
        if key not in optimizer.defaults:
            raise ValueError(f"--optimizer-option {key}: {optimizer.name} has no hyperparameter {key!r}; it takes "
                             f"{takes}")
    try:
        training = TrainSettings.from_dict(
            {k: settings[k] for k in ("epochs", "batch_size", "lr", "lr_schedule", "seed", "loss", "optimizer")}
            | {"hyperparameters": hyperparameters(settings)})
        training.check()
    except (TypeError, ValueError) as error:
        raise type(error)(in_flag_terms(str(error), settings)) from None


def check_arguments(settings: dict, given: dict, args: argparse.Namespace, out: Path | None = None,
                    pick_free: bool = False) -> None:
    """Everything that can be checked before the data is read and before anything is written (``pick_free``:
    ``out`` is the default folder, which passes over to another name if a run takes it meanwhile)."""
    if settings["backend"] != "auto":
        get_backend(settings["backend"])
    hidden_widths(settings, given)
    if not isinstance(settings["seed"], int) or settings["seed"] < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {settings['seed']!r}")
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        # 0 epochs would leave a folder with no checkpoint that neither evaluate nor --resume could use
        raise ValueError(f"--epochs must be at least 1 (it counts every epoch, resumed ones too), got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size!r}")
    check_optimizer_flags(settings)
    if settings.get("chunked_head") and settings["loss"] not in (None, "cross_entropy"):
        raise ValueError(f"--chunked-head fuses the last layer with cross_entropy; --loss is {settings['loss']}")
    if settings["binary"] is not None and settings["loss"] is not None \
            and LOSSES.lookup(settings["loss"]).targets == "value":
        raise ValueError(f"--binary makes a classification task; --loss {settings['loss']} is a regression loss")
    out = Path(args.out) if out is None and args.out else out
    if out is not None:
        check_folder_can_be_made(out)
        if not continues_run(args, out) and not pick_free:
            check_new_run_folder(out)
        for name in RUN_FILES:  # a file the run will replace must be one it can replace (no folder, FIFO, device)
            try:
                writable_target(out / name)
            except OSError as error:
                raise type(error)(f"--out {out}: {error}") from None
    if args.json:
        check_json_target(Path(args.json), out)


def continues_run(args: argparse.Namespace, out: Path) -> bool:
    """Whether ``out`` is the folder of the run ``--resume`` continues: then its files are the run's own."""
    folder = getattr(args, "restarted_run", None) or (
        None if not args.resume else Path(args.resume).parent if Path(args.resume).suffix == ".npz"
        else Path(args.resume))
    return folder is not None and os.path.realpath(folder) == os.path.realpath(out)


def check_new_run_folder(out: Path) -> None:
    """A new run's folder is new, or holds none of the files a run writes: nothing of anyone's is replaced."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if (out / "checkpoint.npz").exists() or (out / "run.json").exists():
        raise FileExistsError(f"--out {out} holds a run already: continue it with --resume {out}, or give "
                              "--out a new folder")
    found = [name for name in RUN_FILES if os.path.lexists(out / name)]
    if found:
        raise FileExistsError(f"--out {out} holds {', '.join(found)}, which this run would write: give --out a new "
                              "folder (a run never replaces files it did not write)")


def check_json_target(path: Path, out: Path | None) -> None:
    """``--json``: writable, none of the run's own files, and no file of anyone else's (an earlier history
    that this command wrote may be replaced)."""
    target = os.path.realpath(path)
    for name in (*RUN_FILES, LOCK_NAME) if out is not None else ():
        if target == os.path.realpath(out / name):
            raise ValueError(f"--json {path} is the run's own {name} in {out}: give another path")
    folder = Path(target).parent
    if Path(target).name in RUN_FILES and any((folder / name).is_file() for name in ("run.json", "checkpoint.npz")):
        raise ValueError(f"--json {path} is the {Path(target).name} of the run in {folder}: give another path")
    check_writable(path, "--json")
    if os.path.exists(target):
        try:
            with open(target, "rb") as handle:
                held = json.loads(handle.read(64 << 20))
            ours = isinstance(held, list) and all(isinstance(r, dict) and "epoch" in r for r in held)
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"--json {path} exists and holds something other than a training history: give "
                                  "a new path (a run never replaces files it did not write)")


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
    check_folder_writable(folder, "--out")  # by a probe: root passes os.access on a read-only /proc


def build_model(settings: dict, num_features: int, num_outputs: int, given: dict | None = None) -> MLP:
    hidden = hidden_widths(settings, given or {})
    try:  # before anything is allocated: a clear line, not NumPy's MemoryError
        check_fits_in_memory([num_features, *hidden, num_outputs], np.dtype(settings["dtype"]))
    except ValueError as error:
        raise ValueError(f"--hidden {settings['hidden']}: {error}" if settings["model"] == "mlp" else str(error)) from None
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


def default_out(settings: dict) -> Path:
    """runs/<dataset>-<model>-<backend>-<time>, with -2, -3, ... where two runs start in the same second."""
    base = Path("runs") / (f"{settings['dataset']}-{settings['model']}-{settings['backend'].replace(':', '-')}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    out, n = base, 1
    while os.path.lexists(out):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run(args: argparse.Namespace) -> int:
    settings, resume_from = resolve_settings(args)
    restarted = getattr(args, "restarted_run", None)
    out = Path(args.out) if args.out else (resume_from.parent if resume_from else restarted or default_out(settings))
    pick_free = not (args.out or resume_from or restarted)  # the default folder: another name if it is taken
    try:
        return _claimed_run(args, settings, resume_from, out, pick_free)
    except KeyboardInterrupt:
        if (out / "checkpoint.npz").is_file():
            print(f"{PROG}: interrupted; the last finished epoch is in {out / 'checkpoint.npz'} "
                  f"(continue with --resume {out})", file=sys.stderr)
        elif (out / "run.json").is_file():
            print(f"{PROG}: interrupted before the first epoch finished; nothing was saved to resume (--resume "
                  f"{out} starts the run again from the beginning)", file=sys.stderr)
        else:
            print(f"{PROG}: interrupted before the first epoch finished; nothing was saved to resume",
                  file=sys.stderr)
        return 130


def _claimed_run(args: argparse.Namespace, settings: dict, resume_from: Path | None, out: Path,
                 pick_free: bool = False) -> int:
    """The run with its folder claimed first: made (a clear error where it cannot be) and locked, so a
    second run into it is refused; a folder this run made and wrote nothing in is removed again. With
    ``pick_free`` (the default folder) a folder another run took meanwhile is passed over for the next name."""
    check_arguments(settings, given_flags(args), args, out, pick_free)  # before the data is read or anything written
    for _ in range(100):
        try:
            with claim_folder(out, "--out"):  # a refused run's folder, empty, goes with the claim
                if not continues_run(args, out):  # again, now that no other run can write there
                    if pick_free and any(os.path.lexists(out / name) for name in RUN_FILES):
                        raise FolderBusyError(f"{out} was taken by another run")
                    check_new_run_folder(out)
                return _run(args, settings, resume_from, out)
        except FolderBusyError:
            if not pick_free:
                raise
            out = default_out(settings)  # two runs started in the same second: the next name
    raise FolderBusyError(f"no free run folder beside {out}: give one with --out")


def _run(args: argparse.Namespace, settings: dict, resume_from: Path | None, out: Path) -> int:
    say = (lambda _: None) if args.quiet else print

    options = {"binary": settings["binary"]} if settings["binary"] is not None else {}
    data = datasets.load(settings["dataset"], root=settings["root"], download=bool(settings["download"]), **options)
    loss = choose_loss(settings, data)
    settings["loss"] = loss.name
    model = build_model(settings, data.num_features, 1 if loss.targets == "binary" else data.num_outputs)
    check_data(data, model, loss)  # the loss suits the data: checked before the run folder is written in
    loss_options = dict(settings["loss_options"] or {})
    check_loss_options(model, data, loss, loss_options,
                       label="--loss-option " + " ".join(f"{k}={v!r}" for k, v in loss_options.items()))
    if resume_from is not None:  # and the checkpoint continues this model and optimizer, before run.json changes
        trained = len(check_resume(model, resume_from, settings["optimizer"])[2])
        if settings["epochs"] < trained:
            raise ValueError(f"--epochs {settings['epochs']}: the run in {resume_from.parent} has trained {trained} "
                             f"epochs already (--epochs counts them all: give {trained + 1} or more to train on)")
    say(f"data: {data.source}: {len(data.y_train):,} train / {len(data.y_test):,} test")
    model.to(resolve_backend(settings["backend"], model.widths, min(settings["batch_size"], len(data.y_train)),
                             settings["dtype"], log=say))
    say(f"model: {model}; run folder: {out}")
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
    """``softgrad train``'s exit status: 0; 2 for bad input, 1 for a run that diverged or a bug, each with one
    line (:func:`softgrad.commands.cli.run_main` maps them); 130 when interrupted."""
    return run_main(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.restarted_run = None
    try:
        return run(args)
    except TrainingDivergedError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
