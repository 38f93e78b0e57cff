"""Pictures of a run (PNG): training curves, test images with predictions, the confusion matrix, the fit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from softgrad.numerics.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _finish(plt, fig, axes, path: str | Path, title: str) -> None:
    """What every line plot ends with: grids, legends, the title, then the PNG written atomically."""
    for ax in axes:
        ax.grid(True)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Train and test loss on one axis, train and test accuracy on another, per epoch.

    Loss and accuracy have different scales (a loss of 2.3 would flatten accuracies near 1), so each
    gets its own axis; for regression the second panel is the test RMSE in the data's units.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    accuracies = [r.get("train_accuracy") for r in history]
    test_accuracies = [r.get("test_accuracy") for r in history]
    rmse = [r.get("test_rmse") for r in history]
    panels = 2 if any(a is not None for a in accuracies + test_accuracies + rmse) else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.3), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
    loss_ax.plot(epochs, [r["test_loss"] for r in history], "--", label="test loss")
    loss_ax.set_ylabel("loss")
    if panels == 2 and any(r is not None for r in rmse):  # regression: the test error in the data's units
        rmse_ax = axes[0][1]
        rmse_ax.plot(epochs, rmse, "g--", label="test RMSE")
        rmse_ax.set_ylabel("RMSE")
    elif panels == 2:
        accuracy_ax = axes[0][1]
        if any(a is not None for a in accuracies):  # None with a chunked head, which keeps no logits
            accuracy_ax.plot(epochs, accuracies, "m-", label="train accuracy")
        accuracy_ax.plot(epochs, test_accuracies, "g--", label="test accuracy")
        accuracy_ax.set_ylabel("accuracy")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(min(epochs, default=1), max(epochs, default=1) + (1 if len(epochs) == 1 else 0))
    _finish(plt, fig, axes[0], path, title)


_TITLE_CHARS = 18  # what fits above a 1.3-inch picture at 7 pt: longer class names are shortened


def _short(name: str) -> str:
    """``name`` shortened to fit, keeping its start and its end (where names often differ: "... number 3")."""
    name = str(name)
    if len(name) <= _TITLE_CHARS:
        return name
    head = (_TITLE_CHARS - 1) // 2
    return f"{name[:head]}…{name[len(name) - (_TITLE_CHARS - 1 - head):]}"


def _prediction_title(true: str, predicted: str) -> str:
    """"true / predicted" on one line where it fits above the picture, else the two on two lines."""
    one_line = f"{true} / {predicted}"
    return one_line if len(one_line) <= _TITLE_CHARS else f"{_short(true)}\n/ {_short(predicted)}"


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes, *, image_shape,
                     mean, std, path: str | Path, count: int = 32) -> None:
    """A grid of test images titled "true / predicted" (two lines for long class names, each shortened to
    fit above its picture); wrong predictions in red."""
    plt = _pyplot()
    count = min(count, len(images))
    columns = 8
    rows = max(1, -(-count // columns))
    titles = [_prediction_title(str(classes[labels[i]]), str(classes[predictions[i]])) for i in range(count)]
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * (1.3 + 0.2 * lines)))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= count:
            continue
        picture = images[i].reshape(len(images[i]) // len(mean), len(mean)) * np.asarray(std) + np.asarray(mean)
        picture = np.clip(picture.reshape(image_shape), 0.0, 1.0)
        ax.imshow(picture, cmap="gray" if len(mean) == 1 else None)
        right = labels[i] == predictions[i]
        ax.set_title(titles[i], fontsize=7, color="black" if right else "red")
    fig.suptitle("test images: true / predicted (red: wrong)", fontsize=9)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)


_COUNTS_UP_TO = 30  # classes whose counts are written in the cells; beyond, the cells are too small to read


def plot_confusion_matrix(cm: np.ndarray, classes, path: str | Path, title: str = "") -> None:
    """The confusion matrix as a heat map: rows the true class, columns the predicted one, counts written in.

    The colour scale is logarithmic, with a colour bar: a linear one leaves the few mistakes of a good
    model (1 against 1,000 on the diagonal) as white as the cells with none; empty cells are white.
    """
    from matplotlib.colors import ListedColormap, LogNorm

    plt = _pyplot()
    n = len(classes)
    counts = n <= _COUNTS_UP_TO
    cell = 0.6 if n <= 12 else 0.45 if counts else 0.2  # inches: room for a 5-digit count at 9 or 8 pt
    size = min(max(5.0, cell * n + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    # Blues from a visible light blue, so that a count of 1 differs from an empty (white) cell
    cmap = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.2, 1.0, 256))).with_extremes(bad="white")
    norm = LogNorm(vmin=1, vmax=max(int(cm.max()) if cm.size else 1, 2))
    image = ax.imshow(np.ma.masked_less(cm, 1), cmap=cmap, norm=norm)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("samples (log scale; white: none)", fontsize=9)
    step = max(1, -(-n // 60))  # at most 60 tick labels
    labels = [str(c) for c in classes]
    ax.set_xticks(range(0, n, step), labels=labels[::step], rotation=90, fontsize=9 if n <= 12 else 8)
    ax.set_yticks(range(0, n, step), labels=labels[::step], fontsize=9 if n <= 12 else 8)
    ax.set_xlabel("predicted", fontsize=10)
    ax.set_ylabel("true", fontsize=10)
    if counts:
        for (i, j), count in np.ndenumerate(cm):
            dark = count >= 1 and norm(count) > 0.6
            ax.text(j, i, str(count), ha="center", va="center", fontsize=9 if n <= 12 else 8,
                    color="white" if dark else "black")
    if title or not counts:
        ax.set_title(title + ("" if counts else f" ({n} classes: counts not written in)"), fontsize=10)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)


def plot_fit(x: np.ndarray, y: np.ndarray, line_x: np.ndarray, line_y: np.ndarray, path: str | Path,
             title: str = "") -> None:
    """The data points and the fitted line through them (one feature, one target), as the tutorials draw it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(x, y, "ro", label="data")
    ax.plot(line_x, line_y, "b-", label="fitted line")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    _finish(plt, fig, [ax], path, title)


def plot_predicted_against_true(y_true: np.ndarray, y_pred: np.ndarray, names, path: str | Path,
                                title: str = "") -> None:
    """Predicted against true values, one panel per target, with the diagonal a perfect model lies on."""
    plt = _pyplot()
    targets = y_true.shape[1]
    fig, axes = plt.subplots(1, targets, figsize=(3.8 * targets, 3.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.plot(y_true[:, k], y_pred[:, k], "o", markersize=3, alpha=0.7)
        low, high = float(min(y_true[:, k].min(), y_pred[:, k].min())), float(max(y_true[:, k].max(),
                                                                                   y_pred[:, k].max()))
        ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
        name = names[k] if k < len(names) else f"target {k}"
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
    _finish(plt, fig, axes[0], path, title)


def plot_regression(data, predict_values, path: str | Path, title: str = "") -> None:
    """``fit.png`` of a regression run: for one feature and one target the fitted line over the training
    points, as the tutorials draw it; else the test set's predicted against true values.

    ``data`` is a regression :class:`datasets.Dataset`; ``predict_values(x)`` gives the model's
    predictions for rows ``x`` in the data's units.
    """
    def original(y):
        return np.asarray(y, np.float64) * np.asarray(data.target_std) + np.asarray(data.target_mean)

    if data.num_features == 1 and data.num_outputs == 1:
        line_x = np.linspace(float(data.x_train.min()), float(data.x_train.max()), 100)[:, None]
        plot_fit(data.x_train[:, 0], original(data.y_train)[:, 0], line_x[:, 0], predict_values(line_x)[:, 0], path,
                 title=title)
    else:
        plot_predicted_against_true(original(data.y_test), predict_values(data.x_test), data.target_names, path,
                                    title=f"test set: {title}")
