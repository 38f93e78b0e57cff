"""Data sets: the shipped MNIST subset, real files from ../shared/data, and broken files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import datasets
from datasets import DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytest.importorskip("torchvision")


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool = False) -> None:
    """IDX files as MNIST distributes them (magic 2051 images, 2049 labels, big-endian sizes)."""
    folder.mkdir(parents=True, exist_ok=True)
    image_bytes = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    label_bytes = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    for name, payload in ((f"{prefix}-images-idx3-ubyte", image_bytes), (f"{prefix}-labels-idx1-ubyte", label_bytes)):
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


def fake_mnist(root: Path, n_train=30, n_test=10, train_labels=None, compress=False):
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    labels = rng.integers(0, 10, n_train) if train_labels is None else train_labels
    write_idx(raw, "train", rng.integers(0, 256, (n_train, 28, 28)), labels, compress)
    write_idx(raw, "t10k", rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test), compress)
    return raw


def test_shipped_mnist_subset():
    data = datasets.load("mnist")
    assert "shipped with softgrad" in data.source
    assert data.x_train.shape == (20_000, 784) and data.x_test.shape == (10_000, 784)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.classes == tuple("0123456789")
    # the usual MNIST normalisation leaves the data near mean 0, std 1
    assert abs(float(data.x_train.mean())) < 0.02 and abs(float(data.x_train.std()) - 1.0) < 0.02
    # the shipped test labels are the official ones: their class counts are well known
    np.testing.assert_array_equal(np.bincount(data.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert data.image_shape == (28, 28)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/data is not here")
def test_shipped_files_are_the_shared_ones():
    for path in (SHARED / "mnist").glob("*.gz"):
        shipped = datasets.SHIPPED_MNIST / path.name
        assert hashlib.sha256(shipped.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="../shared/data is not here")
def test_real_fashion_mnist_files_through_torchvision(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (SHARED / "fashion-mnist").glob("*.gz"):
        shutil.copyfile(path, raw / path.name)
    data = datasets.load("fashion-mnist", root=tmp_path)
    assert data.x_train.shape == (100, 784) and data.x_test.shape == (2_000, 784)
    assert data.classes[9] == "Ankle boot" and str(tmp_path) in data.source
    assert set(np.unique(data.y_test)) == set(range(10))


def test_full_mnist_in_root_is_preferred(tmp_path):
    fake_mnist(tmp_path, compress=True)
    data = datasets.load("mnist", root=tmp_path)
    assert data.x_train.shape == (30, 784) and "torchvision MNIST" in data.source


def test_missing_files_name_the_folder_and_the_flag(tmp_path):
    for name in ("mnist", "fashion-mnist", "cifar10"):
        with pytest.raises(DatasetError, match=f"{name}: the data files are missing .* {tmp_path}.*download=True"):
            datasets.load(name, root=tmp_path)


def test_truncated_file(tmp_path):
    raw = fake_mnist(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="cannot read the training files .* truncated or corrupt"):
        datasets.load("mnist", root=tmp_path)


def test_label_file_of_another_size(tmp_path):
    raw = fake_mnist(tmp_path)
    write_idx(raw, "train", np.zeros((30, 28, 28)), np.zeros(29))
    with pytest.raises(DatasetError, match="hold 30 images but 29 labels"):
        datasets.load("mnist", root=tmp_path)


def test_mislabelled_file(tmp_path):
    labels = np.zeros(30, dtype=np.int64)
    labels[7] = 12
    fake_mnist(tmp_path, train_labels=labels)
    with pytest.raises(DatasetError, match=r"training label 12 \(sample 7\) .* out of range for 10 classes"):
        datasets.load("mnist", root=tmp_path)


def test_unknown_name_and_options():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; choose one of mnist"):
        datasets.load("imagenet")
    with pytest.raises(TypeError, match="unexpected options"):
        datasets.load("mnist", n_train=5)


def test_synthetic_is_seeded():
    a = datasets.load("synthetic", n_train=100, n_test=20, num_features=5, num_classes=3, seed=1)
    b = datasets.synthetic(n_train=100, n_test=20, num_features=5, num_classes=3, seed=1)
    c = datasets.synthetic(n_train=100, n_test=20, num_features=5, num_classes=3, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (100, 5) and a.num_classes == 3 and a.x_train.dtype == np.float32


def test_from_arrays_checks_its_input():
    x = np.zeros((4, 2, 2))
    data = datasets.from_arrays(x, [0, 1, 2, 1], x[:2], [0, 2])
    assert data.x_train.shape == (4, 4) and data.classes == ("0", "1", "2")
    with pytest.raises(ValueError, match=r"y_train must have shape \(4,\)"):
        datasets.from_arrays(x, [0, 1], x, [0, 1, 0, 1])
    with pytest.raises(TypeError, match="integer class indices"):
        datasets.from_arrays(x, [0.0, 1.0, 0.0, 1.0], x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"labels outside \[0, 1\]"):
        datasets.from_arrays(x, [0, 1, 2, 1], x, [0, 1, 0, 1], classes=["a", "b"])


def test_a_truncated_archive_leaves_nothing_behind_and_a_read_only_folder_works(tmp_path):
    raw = fake_mnist(tmp_path, compress=True)
    good = datasets.load("mnist", root=tmp_path)
    assert good.x_train.shape == (30, 784)
    archive = raw / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    for _ in range(2):  # the second attempt meets the same clear error, not a file the first one left
        with pytest.raises(DatasetError, match="cannot read the training files .*train-images-idx3-ubyte.gz"):
            datasets.load("mnist", root=tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        f"{s}-{k}.gz" for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    fake_mnist(tmp_path, compress=True)
    raw.chmod(0o555)  # read-only: nothing may be decompressed beside the archives
    try:
        assert datasets.load("mnist", root=tmp_path).x_test.shape == (10, 784)
    finally:
        raw.chmod(0o755)


def test_torchvisions_processed_pickles_are_never_read(tmp_path):
    raw = fake_mnist(tmp_path)
    processed = raw.parent / "processed"
    processed.mkdir()
    (processed / "training.pt").write_bytes(b"not a pickle anyone should load")
    (processed / "test.pt").write_bytes(b"not a pickle anyone should load")
    assert datasets.load("mnist", root=tmp_path).x_train.shape == (30, 784)


def test_the_shipped_subset_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, datasets; d = datasets.load('mnist'); print(d.x_train.shape, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(20000, 784) False"


def test_from_arrays_takes_column_labels_an_image_shape_and_normalises():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (40, 8, 8, 3)), rng.integers(0, 256, (10, 8, 8, 3))
    y_train, y_test = rng.integers(0, 3, (40, 1)), rng.integers(0, 3, (10, 1))
    data = datasets.from_arrays(x_train, y_train, x_test, y_test, image_shape=(8, 8, 3), normalise=True)
    assert data.y_train.shape == (40,) and data.image_shape == (8, 8, 3) and len(data.mean) == 3
    per_channel = data.x_train.reshape(40, -1, 3)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=(0, 1)), 1.0, atol=1e-4)
    expected = (x_test.reshape(10, -1, 3) - x_train.reshape(40, -1, 3).mean(axis=(0, 1))) / x_train.reshape(
        40, -1, 3).std(axis=(0, 1))
    np.testing.assert_allclose(data.x_test, expected.reshape(10, -1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"image_shape \(8, 8\) holds 64 pixels, the rows 192 features"):
        datasets.from_arrays(x_train, y_train, x_test, y_test, image_shape=(8, 8))


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="../shared/data is not here")
def test_a_folder_holding_the_idx_files_is_a_root(tmp_path):
    data = datasets.load("fashion-mnist", root=SHARED / "fashion-mnist")
    assert data.x_train.shape == (100, 784) and data.x_test.shape == (2000, 784)
    assert data.classes[0] == "T-shirt/top" and "IDX files in" in data.source


def test_a_failed_download_names_the_network_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "__init__", offline)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", offline)
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(DatasetError, match="downloading into .* failed: OSError: .*name resolution"):
            datasets.load(name, root=tmp_path, download=True)


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="../shared/data is not here")
def test_cifar_npz_files_are_a_root():
    data = datasets.load("cifar10", root=SHARED / "cifar10")
    assert data.x_train.shape == (80, 32 * 32 * 3) and data.x_test.shape == (20, 32 * 32 * 3)
    assert data.image_shape == (32, 32, 3) and "last 20 training images are the test set" in data.source


def test_cifar_npz_with_a_test_split_and_a_damaged_file(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        np.savez(tmp_path / f"{split}-images.npz", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        np.savez(tmp_path / f"{split}-labels.npz", rng.integers(0, 10, (n, 1)))
    data = datasets.load("cifar10", root=tmp_path)
    assert data.x_train.shape == (12, 3072) and data.x_test.shape == (4, 3072) and data.y_test.shape == (4,)
    (tmp_path / "test-labels.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read .*test-labels.npz"):
        datasets.load("cifar10", root=tmp_path)
