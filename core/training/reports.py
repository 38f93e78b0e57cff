"""Pictures of a run: training curves and a grid of test images with predictions (PNG)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from core.base.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Train and test loss on one axis, train and test accuracy on another, per epoch.

    Loss and accuracy have different scales (a loss of 2.3 would flatten accuracies near 1), so each
    gets its own axis; the accuracy panel is left out for losses without class targets.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    accuracies = [r.get("train_accuracy") for r in history]
    panels = 2 if any(a is not None for a in accuracies) else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.3), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
    loss_ax.plot(epochs, [r["test_loss"] for r in history], "--", label="test loss")
    loss_ax.set_ylabel("loss")
    if panels == 2:
        accuracy_ax = axes[0][1]
        accuracy_ax.plot(epochs, accuracies, "m-", label="train accuracy")
        accuracy_ax.plot(epochs, [r["test_accuracy"] for r in history], "g--", label="test accuracy")
        accuracy_ax.set_ylabel("accuracy")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(min(epochs, default=1), max(epochs, default=1) + (1 if len(epochs) == 1 else 0))
        ax.grid(True)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes, image_shape,
                     mean, std, path: str | Path, count: int = 32) -> None:
    """A grid of test images titled "true / predicted"; wrong predictions in red."""
    plt = _pyplot()
    count = min(count, len(images))
    columns = 8
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= count:
            continue
        picture = images[i].reshape(len(images[i]) // len(mean), len(mean)) * np.asarray(std) + np.asarray(mean)
        picture = np.clip(picture.reshape(image_shape), 0.0, 1.0)
        ax.imshow(picture, cmap="gray" if len(mean) == 1 else None)
        right = labels[i] == predictions[i]
        ax.set_title(f"{classes[labels[i]]} / {classes[predictions[i]]}", fontsize=7,
                     color="black" if right else "red")
    fig.suptitle("test images: true / predicted", fontsize=9)
    _save(fig, Path(path))
    plt.close(fig)


def plot_confusion_matrix(cm: np.ndarray, classes, path: str | Path, title: str = "") -> None:
    """The confusion matrix as a heat map: rows the true class, columns the predicted one, counts written in."""
    plt = _pyplot()
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=[str(c) for c in classes], rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), labels=[str(c) for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                color="white" if count > threshold else "black")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
