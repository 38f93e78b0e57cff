"""``softgrad evaluate RUN`` and ``softgrad predict RUN FILE...``: evaluate a trained run, or predict for your
own files.

    softgrad evaluate runs/mnist-mlp-numpy-...        # test accuracy, per class, confusion matrix
    softgrad predict runs/... digits.npy 7.png        # predictions for arrays or images

(``softgrad evaluate RUN --predict FILE...`` is the same as ``softgrad predict``; ``python -m softgrad`` is the
same command as ``softgrad``; in a checkout, ``python -m softgrad.commands.evaluate`` is ``softgrad evaluate``.)

``RUN`` is a run folder or a ``checkpoint.npz``. What the model was trained on
comes from the run's ``run.json``, else from the checkpoint, which records the
data set, its options and its input scaling; ``--dataset`` may only repeat it.

For a classifier (binary ones included) the evaluation prints the test accuracy
and the per-class table and writes ``confusion-<backend>.png`` and
``confusion-<backend>.csv``; for a regressor it prints the test RMSE, MAE and R²
in the data's units and writes ``fit-<backend>.png`` (predicted against true
values). The files go into the run folder (or ``--out``) under names the
training run never writes, one set per backend, so an evaluation never
replaces the run's own files nor another backend's evaluation.

``predict`` takes ``.npy`` files of raw samples, in the units of the data
set's own files: 0..255 pixels for the image sets (``(N, 28, 28)``,
``(N, 784)`` or one image), the raw features for diabetes, the arrays as given
for data made with ``datasets.from_arrays``, the file's own units for a run
trained on your file (``--data``). Image files (PNG, JPEG) of the data set's
image size are read as intensities; for a run trained on a csv file, ``.csv``
files of raw rows with a header naming the training file's feature columns
(in any order; the target column, where present, is ignored). Both are scaled exactly as the
training data were, from what the run recorded, so a model trained on your own
arrays can classify files without its data.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from softgrad import datasets
from softgrad.commands.cli import OneLineErrorParser, run_main
from softgrad.numerics.files import atomic_write_text, check_writable
from softgrad.numerics.losses import LOSSES
from softgrad.numerics.registry import backend_names
from softgrad.training import checkpoint, reports
from softgrad.training.data_checks import check_data
from softgrad.training.inference import as_rows, evaluate, predict
from softgrad.training.metrics import confusion_matrix, per_class_accuracy

PROG = "softgrad evaluate"
PREDICT_PROG = "softgrad predict"


def _run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments ``evaluate`` and ``predict`` share: the run, where to run it, its data."""
    p.add_argument("run", metavar="RUN", help="a run folder (from softgrad train) or a checkpoint.npz")
    p.add_argument("--backend", default="numpy", help=f"where to run it: {', '.join(backend_names())} "
                   "(default numpy)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=PROG,
                           description="Evaluate a trained run on its test set, or predict classes for .npy "
                           "arrays and image files (as softgrad predict does).")
    _run_arguments(p)
    p.add_argument("--dataset", choices=list(datasets.NAMES), help="the data set (default: the one the run "
                   "recorded; needed only for checkpoints that record none)")
    p.add_argument("--root", help="folder of the full data sets (default: the run's)")
    p.add_argument("--out", help="folder for the evaluation's files, confusion-<backend>.png and .csv or "
                   "fit-<backend>.png (default: the run folder)")
    p.add_argument("--predict", nargs="+", metavar="FILE", help=".npy arrays of raw samples, image files or (for "
                   "a run trained on a csv file) .csv files of raw rows to classify (instead of evaluating on the test set; the same as softgrad predict RUN FILE...)")
    return p


def build_predict_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=PREDICT_PROG,
                           description="Predict with a trained run: classes (or values, for a regressor) for .npy "
                           "arrays of raw samples, in the units of the data set's own files (0..255 pixels for "
                           "the image sets), and for image files of the data set's image size. They are scaled "
                           "as the training data were, from what the run recorded.")
    _run_arguments(p)
    p.add_argument("predict", nargs="+", metavar="FILE", help=".npy arrays of raw samples, image files, or .csv "
                   "files of raw rows for a run trained on a csv file")
    p.add_argument("--dataset", choices=list(datasets.NAMES), help="the data set (needed only for checkpoints "
                   "that record none)")
    p.add_argument("--root", help="folder of the full data sets (default: the run's)")
    return p


def _run_files(run: Path) -> tuple[Path, dict]:
    path = run if run.suffix == ".npz" or run.is_file() else run / "checkpoint.npz"  # a file is the checkpoint
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


def _data_to_load(args: argparse.Namespace, path: Path, saved: dict,
                  record: datasets.DataRecord | None) -> dict | None:
    """``load``'s arguments for the data the model was trained on: run.json's (the command line's record),
    else the checkpoint's, else ``--dataset`` for a checkpoint that records nothing. None for arrays given
    by hand, which cannot be loaded. ``--dataset`` that differs from the recorded data set is an error."""
    if saved.get("dataset") is not None:
        recorded, where = str(saved["dataset"]), f"{path.parent / 'run.json'}"
        spec = {"name": recorded, "binary": saved.get("binary"), "root": saved.get("root"), "options": {}}
    elif record is not None:
        recorded, where = record.dataset, f"the checkpoint {path}"
        spec = None if record.recipe is None else {"options": {}, **record.recipe}
    else:
        recorded, where, spec = None, "", None
    if args.dataset is not None and recorded is not None and args.dataset != recorded:
        raise ValueError(f"--dataset {args.dataset}: the model was trained on {recorded} (as {where} records); "
                         f"it cannot be evaluated on {args.dataset}. Drop --dataset")
    if recorded is None:
        if args.dataset is None:
            raise ValueError(f"{path} does not record the data it was trained on (a checkpoint written before "
                             "softgrad recorded it, with no run.json beside it): name the data set with --dataset")
        spec = {"name": args.dataset, "binary": None, "root": None, "options": {}}
    if spec is not None and args.root is not None:
        spec["root"] = args.root
    return spec


def _load_data(spec: dict) -> datasets.Dataset:
    options = {"binary": spec["binary"]} if spec.get("binary") is not None else {}
    return datasets.load(spec["name"], root=spec.get("root"), **options, **dict(spec.get("options") or {}))


def _as_raw_rows(samples: np.ndarray, record: datasets.DataRecord, path: Path) -> np.ndarray:
    """The samples as ``(N, features)`` rows, checked: real, finite and, for pixels, in the pixels' range."""
    if not np.issubdtype(samples.dtype, np.number) or np.iscomplexobj(samples):
        raise ValueError(f"{path}: holds {samples.dtype}, not real numbers")
    width, shape = record.num_features, samples.shape
    if samples.ndim >= 2 and int(np.prod(shape[1:])) == width:
        rows = samples.reshape(shape[0], width)
    elif samples.ndim >= 1 and samples.size == width:
        rows = samples.reshape(1, width)  # one sample: a (784,) vector or a (28, 28) image
    else:
        raise ValueError(f"{path}: the model takes samples of {width} features, (N, {width})"
                         f"{f' or images (N, {record.image_shape})' if record.image_shape else ''}; got an array "
                         f"of shape {shape}")
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise ValueError(f"{path}: sample {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    scaling = record.scaling
    if scaling.pixels and rows.size:
        low, high = rows.min(), rows.max()
        if low < 0 or high > scaling.raw_scale:
            raise ValueError(f"{path}: holds values from {low:g} to {high:g}; {record.dataset}'s raw pixels are "
                             f"0..{scaling.raw_scale:g}, as its files hold them")
        if np.issubdtype(rows.dtype, np.floating) and 0 < high <= 1:
            # read as the data set's raw pixels, as documented; the values hint at 0..1 intensities
            print(f"{PREDICT_PROG}: note: {path} holds values in 0..1, read as {record.dataset}'s raw 0..{scaling.raw_scale:g} "
                  f"pixels (nearly black); multiply by {scaling.raw_scale:g} if they are intensities",
                  file=sys.stderr)
    return rows


def _image_intensities(path: Path, record: datasets.DataRecord) -> np.ndarray:
    """An image file as one row of 0..1 intensities in the data set's image layout."""
    import matplotlib.image

    shape = record.image_shape
    if shape is None:
        raise ValueError(f"{path}: {record.dataset} takes {record.num_features} features, not images; give a .npy "
                         f"array of raw samples, (N, {record.num_features})")
    if not record.scaling.pixels:
        raise ValueError(f"{path}: the model was trained on {record.dataset}, images given as arrays whose pixel "
                         "scale softgrad does not know; give a .npy array of samples as they were given")
    try:
        image = matplotlib.image.imread(path)
    except Exception as error:  # PIL's and matplotlib's errors for files that are not images
        raise ValueError(f"{path}: cannot read it as an image ({type(error).__name__}: {error})") from None
    if np.issubdtype(image.dtype, np.integer):  # JPEG: 0..255; divided as the loaders divide raw pixels
        image = image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    image = np.asarray(image, dtype=np.float32)  # PNG: matplotlib's 0..1 already
    if image.ndim == 3:
        image = image[..., :3] if image.shape[2] >= 3 else image[..., :1]  # no alpha
        if len(shape) == 2:  # grey data: one channel (exactly, where the file's channels are equal)
            same = (image == image[..., :1]).all()
            image = image[..., 0] if same else image.mean(axis=2)
    if len(shape) == 3 and image.ndim == 2:  # a grey image for colour data: the grey in every channel
        image = np.repeat(image[..., None], shape[2], axis=2)
    if image.shape != tuple(shape):
        raise ValueError(f"{path}: the image is {image.shape[1]}x{image.shape[0]}; {record.dataset} images are "
                         f"{shape[1]}x{shape[0]}")
    return image.reshape(1, -1)


def _csv_rows(path: Path, record: datasets.DataRecord) -> np.ndarray:
    """Raw rows from a csv file with the training file's feature columns (a run trained on a csv file)."""
    recipe = record.recipe or {}
    options = recipe.get("options") or {}
    if recipe.get("name") != datasets.FILE_RECIPE or not options.get("columns"):
        raise ValueError(f"{path}: .csv samples are for a model trained on a csv file (--data FILE.csv); this one "
                         f"was trained on {record.dataset}: give a .npy array of raw samples, "
                         f"(N, {record.num_features})")
    return datasets.csv_feature_rows(path, options["columns"], options.get("target"))


def _load_samples(path: Path, record: datasets.DataRecord) -> np.ndarray:
    """Samples from a .npy file, a .csv file or an image file, scaled exactly as the training data were."""
    if path.suffix.lower() == ".csv":
        return record.scaling.apply(_csv_rows(path, record))
    if path.suffix.lower() == ".npy":
        try:
            samples = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read it as a NumPy array ({datasets.npz_problem(error)})") from None
        return record.scaling.apply(_as_raw_rows(samples, record, path))
    return record.scaling.apply(_image_intensities(path, record), intensities=True)


def _output_name(stem: str, backend: str, suffix: str) -> str:
    """``confusion-numpy.png``: the backend in the name, so no evaluation replaces another's, and never a
    name the training run writes (``fit.png``)."""
    return f"{stem}-{backend.replace(':', '-')}.{suffix}"


def run(args: argparse.Namespace) -> int:
    path, saved = _run_files(Path(args.run))
    out = Path(args.out) if args.out else path.parent
    names = []
    if not args.predict:  # where the files go is checked before any work
        names = [_output_name(stem, args.backend, suffix) for stem, suffix in
                 (("confusion", "png"), ("confusion", "csv"), ("fit", "png"))]
        for name in names:
            check_writable(out / name, "--out" if args.out else "the run folder")
    model, _, _, trained = checkpoint.load(path, args.backend)
    loss = LOSSES.lookup(trained.get("loss") or saved.get("loss") or "cross_entropy")
    data, record = _data_and_record(args, path, saved, model)
    scale = {} if data is None else {"target_mean": data.target_mean, "target_std": data.target_std}
    if args.predict:
        _predict_files(model, loss, record, [Path(file) for file in args.predict], scale)
        return 0
    if len(data.y_test) == 0:
        raise ValueError(f"the model in {path} was trained on {data.name} with no test split (--test-fraction 0): "
                         "nothing to evaluate on; predict with softgrad predict RUN FILE")
    check_data(data, model, loss)
    confusion_png, confusion_csv, fit_png = names
    if loss.targets == "value":
        figures = evaluate(model, data.x_test, data.y_test, loss=loss, **scale)
        print(f"{model}; {data.source}")
        print(f"test RMSE {figures['rmse']:.4g}  MAE {figures['mae']:.4g}  R² {figures['r2']:.4f}  "
              f"({loss.name} {figures['loss']:.4g})")
        reports.plot_regression(data, lambda x: predict(model, x, loss=loss, **scale), out / fit_png,
                                title=f"{data.name}: {model}")
        print(f"wrote {out}/: {fit_png}")
        return 0
    _report_classification(model, data, loss, out, (confusion_png, confusion_csv))
    return 0


def _data_and_record(args: argparse.Namespace, path: Path, saved: dict,
                     model) -> tuple[datasets.Dataset | None, datasets.DataRecord]:
    """The data the model was trained on (None where only the record is needed, for --predict, or where it
    was arrays given by hand) and its record, checked to fit the model."""
    record = getattr(model, "trained_on", None)
    spec = _data_to_load(args, path, saved, record)
    data = None
    if spec is not None and (record is None or not args.predict):  # --predict needs only the record
        data = _load_data(spec)
        record = data.record()
    if data is None and not args.predict:  # arrays given by hand: nothing to evaluate on but what the user gives
        raise ValueError(f"the model in {path} was trained on arrays given by hand ({record.describe()}), which "
                         "cannot be loaded again: classify raw samples with --predict FILE.npy, or evaluate it from "
                         "Python with softgrad.evaluate(model, x_test, y_test)")
    if record.num_features != model.num_features:
        raise ValueError(f"{record.dataset} has {record.num_features} features; the model in {path} takes "
                         f"{model.num_features}")
    return data, record


def _predict_files(model, loss, record: datasets.DataRecord, files: list[Path], scale: dict) -> None:
    """One line per file: its predictions (the first 20), classes by name or values in the data's units."""
    for file in files:
        samples = as_rows(model, _load_samples(file, record), f"{file}")
        if loss.targets == "value":
            values = predict(model, samples, loss=loss, **scale)
            shown = ", ".join(" ".join(f"{v:.4g}" for v in row) for row in values[:20])
        else:
            labels = predict(model, samples, loss=loss)
            shown = ", ".join(record.classes[i] for i in labels[:20])
        print(f"{file}: {shown}{' ...' if len(samples) > 20 else ''}")


def _report_classification(model, data: datasets.Dataset, loss, out: Path, names: tuple[str, str]) -> None:
    """The test accuracy per class, and the confusion matrix as a figure and a CSV file (``names``)."""
    confusion_png, confusion_csv = names
    predictions = predict(model, data.x_test, loss=loss)
    cm = confusion_matrix(data.y_test, predictions, data.num_classes)
    print(f"{model}; {data.source}")
    print(f"test accuracy {np.mean(predictions == data.y_test):.2%}; per class:")
    for label, value, total in zip(data.classes, per_class_accuracy(cm), cm.sum(axis=1)):
        print(f"  {label:>12}  {'n/a' if np.isnan(value) else f'{value:.2%}'}  ({total} "
              f"{'images' if data.image_shape is not None else 'samples'})")
    buffer = io.StringIO()
    np.savetxt(buffer, cm, fmt="%d", delimiter=",", header=f"{data.name} test set on {model.be.name}: {data.source}\n"
               "rows: true class, columns: predicted class; " + ",".join(data.classes))
    atomic_write_text(out / confusion_csv, buffer.getvalue())
    reports.plot_confusion_matrix(cm, data.classes, out / confusion_png, title=f"{data.name}: {model}")
    print(f"wrote {out}/: {confusion_png}, {confusion_csv}")


def main(argv: list[str] | None = None) -> int:
    """``softgrad evaluate``'s exit status: 0; 2 for bad input, 1 for a bug, each with one line
    (:func:`softgrad.commands.cli.run_main` maps them)."""
    return run_main(PROG, lambda args: run(build_parser().parse_args(args)), argv)


def predict_main(argv: list[str] | None = None) -> int:
    """``softgrad predict RUN FILE...``: what ``softgrad evaluate RUN --predict FILE...`` does."""
    def predict_files(args: list[str] | None) -> int:
        parsed = build_predict_parser().parse_args(args)
        parsed.out = None
        return run(parsed)

    return run_main(PREDICT_PROG, predict_files, argv)


if __name__ == "__main__":
    sys.exit(main())
