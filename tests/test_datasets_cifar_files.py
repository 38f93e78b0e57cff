"""CIFAR-10's file layouts on small folders written here: the JPEG layout (train-jpeg-bytes.npz, as in
shared/data/cifar10-jpeg) and the np.savez arrays (as in shared/data/cifar10), their damaged and ambiguous
variants, each refused in one line naming the file, and the run folder named after an altered copy."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.commands import train as train_command
from softgrad.datasets import DatasetError

from tests import in_process

Image = pytest.importorskip("PIL.Image")
MEAN, STD = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])  # CIFAR-10's usual ones


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def write_jpeg_folder(folder: Path, n_train: int = 12, n_test: int = 4, *, files: list[bytes] | None = None,
                      offsets=None, labels=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A folder in the cifar10-jpeg layout; the training images' JPEG files and labels as written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    files = files if files is not None else [jpeg_bytes(image) for image in images]
    offsets = offsets if offsets is not None else np.cumsum([0, *map(len, files)])
    labels = labels if labels is not None else rng.integers(0, 10, n_train).astype(np.uint8)
    np.savez(folder / "train-jpeg-bytes.npz", jpeg=np.frombuffer(b"".join(files), np.uint8),
             offsets=np.asarray(offsets, np.int64), labels=labels)
    np.savez(folder / "test-images.npz", rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8))
    np.savez(folder / "test-labels.npz", rng.integers(0, 10, n_test).astype(np.uint8))
    return images, labels


def raw_pixels(rows: np.ndarray) -> np.ndarray:
    """The 0..255 pixels behind normalised HWC rows, undone in float64."""
    return np.rint((rows.reshape(len(rows), 32, 32, 3) * STD + MEAN) * 255).astype(np.uint8)


def decoded(files: list[bytes]) -> np.ndarray:
    """Pillow's own decode, as shared/data/README.md writes it."""
    return np.stack([np.array(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])


def test_the_jpeg_layout_is_decoded_named_and_cached(tmp_path):
    folder = tmp_path / "cifar10-jpeg"
    images, labels = write_jpeg_folder(folder)
    files = [jpeg_bytes(image) for image in images]
    data = datasets.load("cifar10", root=folder)
    assert data.name == "cifar10-jpeg" and data.x_train.shape == (12, 3072) and data.x_test.shape == (4, 3072)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert f"JPEG-recompressed copy in {folder} (not the official pixels)" in data.source
    np.testing.assert_array_equal(raw_pixels(data.x_train), decoded(files))
    np.testing.assert_array_equal(data.y_train, labels)
    test = np.load(folder / "test-images.npz")["arr_0"]
    np.testing.assert_array_equal(raw_pixels(data.x_test), test)
    np.testing.assert_array_equal(data.y_test, np.load(folder / "test-labels.npz")["arr_0"])
    assert data.recipe["name"] == "cifar10" and data.recipe["root"] == str(folder.resolve())
    again = datasets.load("cifar10", root=folder)  # from the cache: arrays of its own, writable as before
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    assert again.y_train is not data.y_train and again.x_train.flags.writeable and again.y_train.flags.writeable
    again.y_train[:] = 0
    np.testing.assert_array_equal(datasets.load("cifar10", root=folder).y_train, labels)  # the cache unharmed
    stamp = (folder / "train-jpeg-bytes.npz").stat()
    write_jpeg_folder(folder, labels=(labels + 1) % 10)  # the file changed: decoded again, not the cached one,
    os.utime(folder / "train-jpeg-bytes.npz", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even at one size and time
    assert (folder / "train-jpeg-bytes.npz").stat().st_size == stamp.st_size
    np.testing.assert_array_equal(datasets.load("cifar10", root=folder).y_train, (labels + 1) % 10)


def test_a_folder_of_another_name_is_still_called_a_jpeg_copy(tmp_path):
    write_jpeg_folder(tmp_path / "mine")
    data = datasets.load("cifar10", root=tmp_path / "mine")
    assert data.name == "cifar10-jpeg" and "not the official pixels" in data.source


def corrupt(files: list[bytes]) -> list[bytes]:
    return [*files[:3], b"\x00" * len(files[3]), *files[4:]]


def truncated(files: list[bytes]) -> list[bytes]:
    return [*files[:2], files[2][:len(files[2]) // 2], *files[3:]]


@pytest.mark.parametrize(("damage", "message"), [
    ("npz", r"cannot read .*train-jpeg-bytes.npz: "),
    ("corrupt", r"train-jpeg-bytes.npz: training image 3 \(bytes .*\) is not a readable JPEG"),
    ("truncated", r"train-jpeg-bytes.npz: training image 2 \(bytes .*\) is not a readable JPEG"),
    ("small", r"training image 5 decodes to 16x16 pixels; CIFAR-10 images are 32x32"),
    ("offsets", r"'offsets' are not increasing from 0 to the end of 'jpeg' \(image 6 ends at byte"),
    ("short offsets", r"'offsets' are not increasing .*they run from 0 to"),
    ("labels", r"train-jpeg-bytes.npz holds 11 labels but .*train-jpeg-bytes.npz holds 12 images"),
    ("label range", r"train-jpeg-bytes.npz: label 10 \(sample 0\) is not one of the 10 classes"),
    ("keys", r"train-jpeg-bytes.npz has no array 'offsets'"),
    ("test images", r"has train-jpeg-bytes.npz but no test-images.npz"),
    ("test labels", r"test-labels.npz holds 3 labels but .*test-images.npz holds 4 images"),
])
def test_damaged_jpeg_folders_are_refused_in_one_line_naming_the_file(tmp_path, damage, message):
    rng = np.random.default_rng(1)
    files = [jpeg_bytes(image) for image in rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)]
    ends = np.cumsum([0, *map(len, files)])
    folder = tmp_path / "cifar10-jpeg"
    changes = {
        "corrupt": {"files": corrupt(files)}, "truncated": {"files": truncated(files)},
        "small": {"files": [*files[:5], jpeg_bytes(np.zeros((16, 16, 3), np.uint8)), *files[6:]]},
        "offsets": {"files": files, "offsets": np.concatenate([ends[:7], [ends[5]], ends[8:]])},
        "short offsets": {"files": files, "offsets": ends[:-1]},
        "labels": {"files": files, "labels": np.zeros(11, np.uint8)},
        "label range": {"files": files, "labels": np.full(12, 10, np.uint8)},
    }
    write_jpeg_folder(folder, **changes.get(damage, {"files": files}))
    if damage == "npz":
        whole = (folder / "train-jpeg-bytes.npz").read_bytes()
        (folder / "train-jpeg-bytes.npz").write_bytes(whole[:len(whole) // 2])
    elif damage == "keys":
        np.savez(folder / "train-jpeg-bytes.npz", jpeg=np.zeros(3, np.uint8), labels=np.zeros(1, np.uint8))
    elif damage == "test images":
        (folder / "test-images.npz").unlink()
    elif damage == "test labels":
        np.savez(folder / "test-labels.npz", np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load("cifar10", root=folder)
    assert "\n" not in str(error.value) and str(error.value).startswith("cifar10: ")


def test_without_pillow_one_line_says_what_to_install(tmp_path, monkeypatch):
    write_jpeg_folder(tmp_path / "cifar10-jpeg", seed=5)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DatasetError, match=r"needs Pillow, which is not installed: pip install pillow$"):
        datasets.load("cifar10", root=tmp_path / "cifar10-jpeg")


def test_softgrad_train_names_the_copy_in_its_log_and_run_folder(tmp_path, monkeypatch):
    write_jpeg_folder(tmp_path / "cifar10-jpeg", n_train=40, n_test=10, seed=2)
    monkeypatch.chdir(tmp_path)  # the default run folder is runs/... in the working directory
    result = in_process.run(train_command.main, "--dataset", "cifar10", "--root", "cifar10-jpeg", "--model",
                            "linear", "--epochs", "1", "--batch-size", "8", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert "data: CIFAR-10 JPEG-recompressed copy in cifar10-jpeg (not the official pixels)" in result.stdout
    assert "run folder: runs/cifar10-jpeg-linear-numpy-" in result.stdout
    write_jpeg_folder(tmp_path / "bad", files=corrupt([jpeg_bytes(np.zeros((32, 32, 3), np.uint8))] * 12))
    result = in_process.run(train_command.main, "--dataset", "cifar10", "--root", "bad", "--out", "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "training image 3 (bytes" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_folder_with_no_layout_is_one_line(tmp_path):
    (tmp_path / "train-jpeg-bytes.npy").write_bytes(b"")
    with pytest.raises(DatasetError, match="it holds none of CIFAR-10's layouts .*--download") as error:
        datasets.load("cifar10", root=tmp_path)
    assert "\n" not in str(error.value)


# --- the np.savez layout ----------------------------------------------------------------------------------

def save(folder: Path, name: str, array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, array)


def arrays_folder(folder: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The shared/data/cifar10 layout in small: a first-n file beside a first-4 one, both label files, the
    official-length label sequences, no test images."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    full = rng.integers(0, 10, 50_000).astype(np.uint8)
    save(folder, f"train-images-first{n}.npz", images)
    save(folder, "train-images-first4.npz", images[:4])
    save(folder, f"train-labels-first{n}.npz", full[:n])
    save(folder, "train-labels-first4.npz", full[:4, None])
    save(folder, "train-labels.npz", full)
    save(folder, "test-labels.npz", rng.integers(0, 10, 10_000).astype(np.uint8))
    return images, full


def test_the_largest_image_file_is_taken_with_its_labels_and_a_held_out_test_set(tmp_path):
    images, full = arrays_folder(tmp_path)
    data = datasets.load("cifar10", root=tmp_path)
    assert data.name == "cifar10" and data.x_train.shape == (16, 3072) and data.x_test.shape == (4, 3072)
    np.testing.assert_array_equal(raw_pixels(np.concatenate([data.x_train, data.x_test])), images)
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), full[:20])
    assert "train-images-first20.npz with train-labels-first20.npz" in data.source
    assert "no test images (test-labels.npz holds labels only): the last 4 of the 20 training images are held " \
           "out as the test set" in data.source
    (tmp_path / "train-labels-first20.npz").unlink()  # then the first 20 of the official sequence
    data = datasets.load("cifar10", root=tmp_path)
    assert "with the first 20 of train-labels.npz (the official train label sequence)" in data.source
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), full[:20])


@pytest.mark.parametrize(("change", "message"), [
    ("twin", r"holds train-images-first20.npz and train-images-x.npz, each of 20 images: which is meant is "
             r"ambiguous"),
    ("not a prefix", r"holds train-images-first20.npz \(20 images\) and train-images-first4.npz \(4\), which are "
                     r"not its first images"),
    ("disagree", r"train-labels-first20.npz and train-labels.npz in .* disagree on the first 20 train labels"),
    ("no match", r"train-images-first20.npz holds 20 images, but no label file matches: train-labels-first4.npz "
                 r"\(4\), train-labels.npz \(49,999\)"),
    ("paired count", r"train-labels-first20.npz holds 19 labels but .*train-images-first20.npz holds 20 images"),
    ("damaged", r"cannot read .*train-images-first4.npz: "),
    ("floats", r"train-images-first20.npz holds float64 \(20, 32, 32, 3\); expected uint8"),
    ("one image", r"has no test images and 1 training image\(s\): too few to hold some out as the test set"),
])
def test_ambiguous_or_inconsistent_array_files_are_refused(tmp_path, change, message):
    images, full = arrays_folder(tmp_path)
    if change == "twin":
        save(tmp_path, "train-images-x.npz", images)
    elif change == "not a prefix":
        save(tmp_path, "train-images-first4.npz", images[1:5])
    elif change == "disagree":
        save(tmp_path, "train-labels.npz", (full + 1) % 10)
    elif change == "no match":
        (tmp_path / "train-labels-first20.npz").unlink()
        save(tmp_path, "train-labels.npz", full[:-1])
    elif change == "paired count":
        save(tmp_path, "train-labels-first20.npz", full[:19])
    elif change == "damaged":
        (tmp_path / "train-images-first4.npz").write_bytes(b"PK\x03\x04 not a zip")
    elif change == "one image":
        for path in tmp_path.glob("train-images-*.npz"):
            path.unlink()
        save(tmp_path, "train-images-first1.npz", images[:1])
    else:
        save(tmp_path, "train-images-first20.npz", images.astype(np.float64))
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load("cifar10", root=tmp_path)
    assert "\n" not in str(error.value)
