"""``python -m core.evaluate RUN``: evaluate a trained run, or predict for your own files.

    python -m core.evaluate runs/mnist-mlp-numpy-...            # test accuracy, per class, confusion matrix
    python -m core.evaluate runs/... --predict digits.npy 7.png  # predictions for arrays or images

``RUN`` is a run folder (``run.json`` names its data set) or a ``checkpoint.npz``.
For a classifier (binary ones included) the evaluation prints the test accuracy
and the per-class table and writes ``confusion.png`` and ``confusion.csv`` into
the run folder (or ``--out``); for a regressor it prints the test RMSE, MAE and
R² in the data's units and writes ``fit.png`` (predicted against true values).
``--predict`` takes ``.npy`` files of samples (``(N, features)``, ``(N, 28, 28)``
or one sample) in the data set's raw pixel scale (0-255 or 0-1), and image
files (PNG, JPEG) of the data set's image size; both are normalised like the
training data.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

import datasets
from core.base.errors import BackendUnavailableError
from core.base.files import atomic_write_text
from core.base.losses import LOSSES
from core.base.registry import backend_names
from core.training import checkpoint, reports
from core.training.loop import as_rows, check_data, evaluate, predict
from core.training.metrics import confusion_matrix, per_class_accuracy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.evaluate",
                                description="Evaluate a trained run on its test set, or predict classes for .npy "
                                "arrays and image files.")
    p.add_argument("run", metavar="RUN", help="a run folder (from python -m core.train) or a checkpoint.npz")
    p.add_argument("--backend", default="numpy", help=f"where to run it: {', '.join(backend_names())} "
                   "(default numpy)")
    p.add_argument("--dataset", choices=list(datasets.NAMES), help="the data set (default: the run's, from run.json)")
    p.add_argument("--root", help="folder of the full data sets (default: the run's)")
    p.add_argument("--out", help="folder for confusion.png and confusion.csv (default: the run folder)")
    p.add_argument("--predict", nargs="+", metavar="FILE", help=".npy arrays or image files to classify "
                   "(instead of evaluating on the test set)")
    return p


def _run_files(run: Path) -> tuple[Path, dict]:
    path = run if run.suffix == ".npz" else run / "checkpoint.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no checkpoint.npz there (give a run folder or a checkpoint file)")
    run_json = path.parent / "run.json"
    settings: dict = {}
    if run_json.is_file():
        try:
            settings = json.loads(run_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ValueError(f"{run_json} is damaged or unreadable ({error})") from None
        if not isinstance(settings, dict):
            raise ValueError(f"{run_json} does not hold a run's settings")
    return path, settings


def _load_samples(path: Path, data: datasets.Dataset) -> np.ndarray:
    """Samples from a .npy file or an image file, scaled and normalised as the data set's training data."""
    if path.suffix.lower() == ".npy":
        try:
            samples = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read it as a NumPy array ({error})") from None
        if not np.issubdtype(samples.dtype, np.number) or np.iscomplexobj(samples):
            raise ValueError(f"{path}: holds {samples.dtype}, not real numbers")
        samples = samples.astype(np.float32)
        if samples.size and samples.max() > 1.0:  # raw 0-255 pixels
            samples = samples / 255.0
    else:
        import matplotlib.image

        try:
            image = matplotlib.image.imread(path)
        except Exception as error:  # PIL's and matplotlib's errors for files that are not images
            raise ValueError(f"{path}: cannot read it as an image ({type(error).__name__}: {error})") from None
        image = image.astype(np.float32)
        if image.max() > 1.0:
            image = image / 255.0
        if data.image_shape is not None and len(data.image_shape) == 2 and image.ndim == 3:
            image = image[..., :3].mean(axis=2)  # grayscale data: average the colour channels
        elif data.image_shape is not None and len(data.image_shape) == 3 and image.ndim == 3:
            image = image[..., :3]
        if data.image_shape is not None and image.shape != tuple(data.image_shape):
            raise ValueError(f"{path}: the image is {image.shape[1]}x{image.shape[0]}; {data.name} images are "
                             f"{data.image_shape[1]}x{data.image_shape[0]}")
        samples = image
    channels = len(data.mean)
    flat = samples.reshape(-1, channels)
    flat = (flat - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    return flat.reshape(samples.shape)


def run(args: argparse.Namespace) -> int:
    path, saved = _run_files(Path(args.run))
    model, _, _, trained = checkpoint.load(path, args.backend)
    loss = LOSSES.lookup(trained.get("loss") or saved.get("loss") or "cross_entropy")
    name = args.dataset or saved.get("dataset", "mnist")
    options = {"binary": saved["binary"]} if saved.get("binary") is not None and not args.dataset else {}
    data = datasets.load(name, root=args.root if args.root is not None else saved.get("root"), **options)
    if data.num_features != model.widths[0]:
        raise ValueError(f"{name} has {data.num_features} features; the model in {path} takes {model.widths[0]}")
    check_data(data, model, loss)
    scale = {"target_mean": data.target_mean, "target_std": data.target_std}
    if args.predict:
        for file in map(Path, args.predict):
            samples = as_rows(model, _load_samples(file, data), f"{file}")
            if loss.targets == "value":
                values = predict(model, samples, loss=loss, **scale)
                shown = ", ".join(" ".join(f"{v:.4g}" for v in row) for row in values[:20])
            else:
                labels = predict(model, samples, loss=loss)
                shown = ", ".join(data.classes[i] for i in labels[:20])
            print(f"{file}: {shown}{' ...' if len(samples) > 20 else ''}")
        return 0
    out = Path(args.out) if args.out else path.parent
    if loss.targets == "value":
        figures = evaluate(model, data.x_test, data.y_test, loss=loss, **scale)
        print(f"{model}; {data.source}")
        print(f"test RMSE {figures['rmse']:.4g}  MAE {figures['mae']:.4g}  R² {figures['r2']:.4f}  "
              f"({loss.name} {figures['loss']:.4g})")
        reports.plot_regression(data, lambda x: predict(model, x, loss=loss, **scale), out / "fit.png",
                                title=f"{data.name}: {model}")
        print(f"wrote {out}/: fit.png")
        return 0
    predictions = predict(model, data.x_test, loss=loss)
    cm = confusion_matrix(data.y_test, predictions, data.num_classes)
    print(f"{model}; {data.source}")
    print(f"test accuracy {np.mean(predictions == data.y_test):.2%}; per class:")
    for label, value, total in zip(data.classes, per_class_accuracy(cm), cm.sum(axis=1)):
        print(f"  {label:>12}  {'n/a' if np.isnan(value) else f'{value:.2%}'}  ({total} images)")
    buffer = io.StringIO()
    np.savetxt(buffer, cm, fmt="%d", delimiter=",", header="rows: true class, columns: predicted class; "
               + ",".join(data.classes))
    atomic_write_text(out / "confusion.csv", buffer.getvalue())
    reports.plot_confusion_matrix(cm, data.classes, out / "confusion.png", title=f"{data.name}: {model}")
    print(f"wrote {out}/: confusion.png, confusion.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except (BackendUnavailableError, datasets.DatasetError, OSError, ValueError, TypeError) as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
