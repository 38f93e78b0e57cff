"""Data sets: the shipped MNIST subset, real files from ../shared/data, broken files, the regression sets
(toy, diabetes), binary tasks, and from_arrays."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets
from softgrad.datasets import DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Only the tests that reach torchvision itself need it: the shipped and IDX data are read with NumPy, and a
# module-wide skip would hide those tests on exactly the installs (no torch) they are meant for.
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed")


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


@needs_torchvision
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


@needs_torchvision
def test_a_failed_download_names_the_network_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("softgrad.datasets.download.unreachable", lambda urls: None)  # past the network check
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "__init__", offline)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", offline)
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(DatasetError, match="downloading into .* failed: OSError: .*name resolution"):
            datasets.load(name, root=tmp_path, download=True)


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="../shared/data is not here")
def test_cifar_npz_files_are_a_root():
    # the 4,000 exact images, not the first100 file beside them; the last fifth held out (no test images there)
    data = datasets.load("cifar10", root=SHARED / "cifar10")
    assert data.x_train.shape == (3200, 32 * 32 * 3) and data.x_test.shape == (800, 32 * 32 * 3)
    assert data.image_shape == (32, 32, 3) and "train-images-first4000.npz" in data.source
    assert "the last 800 of the 4,000 training images are held out as the test set" in data.source


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


# --- regression data sets ---------------------------------------------------------------------------------

TOY_X = [3.3, 4.4, 5.5, 6.71, 6.93, 4.168, 9.779, 6.182, 7.59, 2.167, 7.042, 10.791, 5.313, 7.997, 3.1]
TOY_Y = [1.7, 2.76, 2.09, 3.19, 1.694, 1.573, 3.366, 2.596, 2.53, 1.221, 2.827, 3.465, 1.65, 2.904, 1.3]


def raw_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """The shipped files read independently of the loader (plain text lines, not np.loadtxt)."""
    with gzip.open(datasets.SHIPPED_DIABETES / "diabetes_data_raw.csv.gz", "rt") as f:
        x = np.array([[float(v) for v in line.split()] for line in f if line.strip()])
    with gzip.open(datasets.SHIPPED_DIABETES / "diabetes_target.csv.gz", "rt") as f:
        y = np.array([float(line) for line in f if line.strip()])
    return x, y


def test_toy_regression_is_the_tutorials_raw_points():
    data = datasets.load("toy-regression")
    assert data.task == "regression" and data.classes == () and data.num_classes == 0
    assert data.x_train.shape == (15, 1) and data.y_train.shape == (15, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train[:, 0], np.asarray(TOY_X, np.float32))
    np.testing.assert_array_equal(data.y_train[:, 0], np.asarray(TOY_Y, np.float32))
    # no held-out data in the tutorial: the test split is the same points, and the source says so
    np.testing.assert_array_equal(data.x_test, data.x_train)
    np.testing.assert_array_equal(data.y_test, data.y_train)
    assert data.x_test is not data.x_train and "test split is the same 15 points" in data.source
    assert data.target_mean == (0.0,) and data.target_std == (1.0,) and data.num_outputs == 1
    assert data.num_features == 1 and data.image_shape is None and data.target_names == ("y",)
    assert "task='regression', targets=1" in repr(data)


def test_diabetes_split_and_standardisation():
    data = datasets.load("diabetes")
    assert data.task == "regression" and data.name == "diabetes" and data.classes == ()
    assert data.x_train.shape == (353, 10) and data.x_test.shape == (89, 10)
    assert data.y_train.shape == (353, 1) and data.y_test.shape == (89, 1)
    assert {a.dtype for a in (data.x_train, data.y_train, data.x_test, data.y_test)} == {np.dtype(np.float32)}
    assert data.num_outputs == 1 and data.num_features == 10 and data.mean == (0.0,) and data.std == (1.0,)
    assert "shipped with softgrad" in data.source and "353 train, 89 test" in data.source
    x, y = raw_diabetes()
    assert x.shape == (442, 10) and y.shape == (442,)
    # the documented split, and the first raw row as the CSV has it
    order = np.random.default_rng(0).permutation(442)
    train, test = order[:353], order[353:]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(442))
    np.testing.assert_array_equal(x[0], [59, 2, 32.1, 101.0, 157, 93.2, 38.0, 4.0, 4.8598, 87])
    assert y[0] == 151.0
    # features: standardised with the training split's statistics
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-5)
    x_mean, x_std = x[train].mean(axis=0), x[train].std(axis=0)
    np.testing.assert_allclose(data.x_test, (x[test] - x_mean) / x_std, rtol=1e-5, atol=1e-5)
    # target: the same, recorded so that y * std + mean is the raw target of each split
    assert abs(float(data.y_train.mean())) < 1e-5 and abs(float(data.y_train.std()) - 1.0) < 1e-5
    assert data.target_mean == pytest.approx((y[train].mean(),)) and data.target_std == pytest.approx((y[train].std(),))
    for stored, rows in ((data.y_train, train), (data.y_test, test)):
        raw = stored[:, 0] * data.target_std[0] + data.target_mean[0]
        np.testing.assert_allclose(raw, y[rows], rtol=1e-5)
    assert datasets.DIABETES_FEATURES == ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    assert data.target_names == ("disease progression",)


def test_diabetes_equals_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x_sk, y_sk = sklearn_datasets.load_diabetes(return_X_y=True, scaled=False)
    x, y = raw_diabetes()
    np.testing.assert_array_equal(x, x_sk)
    np.testing.assert_array_equal(y, y_sk)
    data = datasets.load("diabetes")
    train = np.random.default_rng(0).permutation(442)[:353]
    np.testing.assert_allclose(data.y_train[:, 0] * data.target_std[0] + data.target_mean[0], y_sk[train], rtol=1e-5)


def test_diabetes_needs_neither_sklearn_nor_torch():
    import subprocess
    import sys

    code = ("import sys, datasets; d = datasets.load('diabetes'); "
            "print(d.x_train.shape, 'sklearn' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(353, 10) False False"


def test_shipped_diabetes_files_are_documented():
    readme = (datasets.SHIPPED_DIABETES / "README.md").read_text()
    for path in datasets.SHIPPED_DIABETES.glob("*.gz"):
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" in readme
    assert "BSD 3-Clause" in readme and "Efron" in readme


@pytest.mark.parametrize("damage", ["missing", "truncated", "short", "text"])
def test_damaged_diabetes_files_are_named(tmp_path, damage):
    for path in datasets.SHIPPED_DIABETES.glob("*.gz"):
        shutil.copyfile(path, tmp_path / path.name)
    bad = tmp_path / ("diabetes_target.csv.gz" if damage == "short" else "diabetes_data_raw.csv.gz")
    if damage == "missing":
        bad.unlink()
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    elif damage == "short":  # a row lost: 441 targets for 442 patients
        lines = gzip.decompress(bad.read_bytes()).splitlines(keepends=True)
        bad.write_bytes(gzip.compress(b"".join(lines[:-1])))
    else:
        bad.write_bytes(gzip.compress(b"59 2 not-a-number\n"))
    with pytest.raises(DatasetError, match=f"diabetes: .*{bad.name}"):
        datasets.diabetes(tmp_path)


def test_regression_sets_take_no_options_and_no_binary_task():
    with pytest.raises(TypeError, match="unexpected options"):
        datasets.load("diabetes", n_train=5)
    with pytest.raises(ValueError, match="diabetes is a regression data set"):
        datasets.load("diabetes", binary="0")
    with pytest.raises(ValueError, match="regression data set"):
        datasets.binary(datasets.load("toy-regression"), 0)
    assert {"toy-regression", "diabetes"} <= set(datasets.NAMES)


# --- binary tasks -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist")


@pytest.mark.parametrize("spec, chosen", [("0", [0]), (0, [0]), ("0,6", [0, 6]), ([0, 6], [0, 6]),
                                          (" 3 , 9 ", [3, 9]), (("7",), [7]), (np.int64(5), [5])])
def test_binary_counts_are_the_chosen_classes(mnist, spec, chosen):
    data = datasets.binary(mnist, spec)
    for new, old in ((data.y_train, mnist.y_train), (data.y_test, mnist.y_test)):
        assert new.dtype == np.int64 and set(np.unique(new)) == {0, 1}
        assert int(new.sum()) == int(np.isin(old, chosen).sum())
        np.testing.assert_array_equal(new, np.isin(old, chosen))
    label = " or ".join(str(c) for c in chosen)
    assert data.classes == ((f"not {label}" if len(chosen) == 1 else f"not ({label})"), label)
    assert data.name == f"mnist ({label} vs rest)" and data.num_classes == 2 and data.num_outputs == 2
    assert data.source.startswith(mnist.source) and "label 1 = class" in data.source
    # the pictures survive: the same images, shape and normalisation
    assert data.x_train is mnist.x_train and data.image_shape == (28, 28) and data.mean == mnist.mean


def test_binary_even_and_odd(mnist):
    even = datasets.load("mnist", binary="even")
    assert even.classes == ("odd", "even") and even.name == "mnist (even vs odd)"
    np.testing.assert_array_equal(even.y_test, mnist.y_test % 2 == 0)
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the official test set's
    assert int(even.y_test.sum()) == sum(test_counts[0::2])
    odd = datasets.binary(mnist, "Odd")
    assert odd.classes == ("even", "odd") and odd.name == "mnist (odd vs even)"
    np.testing.assert_array_equal(odd.y_train, mnist.y_train % 2)
    assert "classes 1 ('1'), 3 ('3'), 5 ('5'), 7 ('7'), 9 ('9')" in odd.source


def test_binary_by_class_name_and_of_other_sets():
    x = np.zeros((6, 2))
    shoes = datasets.from_arrays(x, [5, 7, 9, 0, 5, 1], x[:3], [5, 2, 3],
                                 classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                          "Shirt", "Sneaker", "Bag", "Ankle boot"])
    data = datasets.binary(shoes, "Sandal")
    assert data.classes == ("not Sandal", "Sandal") and data.y_train.tolist() == [1, 0, 0, 0, 1, 0]
    data = datasets.binary(shoes, ["Sandal", "Sneaker", 9])
    assert data.y_train.tolist() == [1, 1, 1, 0, 1, 0] and data.y_test.tolist() == [1, 0, 0]
    # a class name wins over an index of the same spelling
    named = datasets.from_arrays(x, [0, 1, 1, 0, 1, 0], x[:2], [0, 1], classes=["1", "0"])
    assert datasets.binary(named, "0").y_train.tolist() == [0, 1, 1, 0, 1, 0]
    blobs = datasets.load("synthetic", n_train=50, n_test=10, num_features=3, num_classes=3, binary="class 2")
    assert blobs.classes == ("not class 2", "class 2") and blobs.name == "synthetic (class 2 vs rest)"


@pytest.mark.parametrize("spec, message", [
    ("seven", r"unknown class 'seven'; choose 'even', 'odd', a class index 0\.\.9, a class name \('0', '1'"),
    ("10", "class index 10 is out of range"),
    (-1, "class index -1 is out of range"),
    ("", "no positive class"),
    (",", "no positive class"),
    ([], "no positive class"),
    (True, "True is not a class"),
    (2.0, "2.0 is not a class"),
    ("0,1,2,3,4,5,6,7,8,9", "every class positive"),
    (["even", "odd"], "every class positive"),
])
def test_bad_binary_specs_name_the_choices(mnist, spec, message):
    with pytest.raises(ValueError, match=message):
        datasets.binary(mnist, spec)


# --- from_arrays for regression ---------------------------------------------------------------------------

def test_from_arrays_regression_shapes_and_dtypes():
    x = np.arange(12.0).reshape(6, 2)
    data = datasets.from_arrays(x, [1.5, 2.5, 3.5, 4.5, 5.5, 6.5], x[:2], np.array([1, 2]), task="regression")
    assert data.task == "regression" and data.classes == () and data.num_classes == 0
    assert data.y_train.shape == (6, 1) and data.y_test.shape == (2, 1)
    assert data.y_train.dtype == np.float32 and data.y_test.dtype == np.float32
    assert data.y_test[:, 0].tolist() == [1.0, 2.0]  # integers become floats
    assert data.target_names == ("y",) and data.target_mean == (0.0,) and data.target_std == (1.0,)
    wide = datasets.from_arrays(x, x * 2, x[:3], x[:3], task="regression", target_names=["a", "b"])
    assert wide.y_train.shape == (6, 2) and wide.num_outputs == 2 and wide.target_names == ("a", "b")
    np.testing.assert_array_equal(wide.y_train, (x * 2).astype(np.float32))
    assert "targets=2" in repr(wide)


def test_from_arrays_standardises_targets_with_the_training_statistics():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 3)), rng.normal([10.0, -3.0], [4.0, 0.5], (50, 2))
    x_test, y_test = rng.standard_normal((7, 3)), rng.normal([10.0, -3.0], [4.0, 0.5], (7, 2))
    data = datasets.from_arrays(x, y, x_test, y_test, task="regression", standardise_targets=True)
    np.testing.assert_allclose(data.y_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.y_train.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(data.target_mean, y.mean(axis=0))
    np.testing.assert_allclose(data.target_std, y.std(axis=0))
    for stored, raw in ((data.y_train, y), (data.y_test, y_test)):
        np.testing.assert_allclose(stored * np.asarray(data.target_std) + np.asarray(data.target_mean), raw,
                                   rtol=1e-5, atol=1e-5)
    assert data.target_names == ("y0", "y1")


def test_from_arrays_regression_errors():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"y_test sample 1 \(target 0\) is nan; regression targets must be finite"):
        datasets.from_arrays(x, [0.0, 1, 2, 3], x[:2], [0.5, np.nan], task="regression")
    with pytest.raises(ValueError, match=r"y_train sample 2 \(target 1\) is inf"):
        datasets.from_arrays(x, [[0, 0], [0, 0], [0, np.inf], [0, 0]], x, np.zeros((4, 2)), task="regression")
    with pytest.raises(ValueError, match=r"y_train sample 0 \(target 0\) is 1e\+300, too large for float32"):
        datasets.from_arrays(x, [1e300, 0, 0, 0], x, np.zeros(4), task="regression")
    with pytest.raises(ValueError, match="too large to standardise"):
        datasets.from_arrays(x, [1e300, -1e300, 0, 0], x, np.zeros(4), task="regression", standardise_targets=True)
    with pytest.raises(ValueError, match=r"y_train must have shape \(4,\) or \(4, k\)"):
        datasets.from_arrays(x, [0.0, 1.0], x, np.zeros(4), task="regression")
    with pytest.raises(ValueError, match=r"y_train must have shape"):
        datasets.from_arrays(x, np.zeros((4, 1, 1)), x, np.zeros(4), task="regression")
    with pytest.raises(ValueError, match="y_train has 1 target"):
        datasets.from_arrays(x, np.zeros(4), x, np.zeros((4, 2)), task="regression")
    with pytest.raises(TypeError, match="real-valued regression targets"):
        datasets.from_arrays(x, ["a", "b", "c", "d"], x, np.zeros(4), task="regression")
    with pytest.raises(TypeError, match="real-valued regression targets"):
        datasets.from_arrays(x, [True, False, True, True], x, np.zeros(4), task="regression")
    with pytest.raises(ValueError, match=r"1 target_names \('a',\) for 2 target"):
        datasets.from_arrays(x, np.zeros((4, 2)), x, np.zeros((4, 2)), task="regression", target_names=["a"])
    with pytest.raises(ValueError, match="task must be one of classification, regression"):
        datasets.from_arrays(x, [0, 1, 0, 1], x, [0, 1, 0, 1], task="ranking")
    with pytest.raises(ValueError, match="standardise_targets are for task='regression'"):
        datasets.from_arrays(x, [0, 1, 0, 1], x, [0, 1, 0, 1], standardise_targets=True)
    with pytest.raises(ValueError, match="classes is for classification"):
        datasets.from_arrays(x, [0.0, 1, 0, 1], x, [0.0, 1, 0, 1], classes=["a", "b"], task="regression")
    # classification is as before: float labels are refused with the same TypeError
    with pytest.raises(TypeError, match="integer class indices"):
        datasets.from_arrays(x, [0.0, 1.0, 0.0, 1.0], x, [0, 1, 0, 1], task="classification")


def test_dataset_stays_backward_compatible(mnist):
    old_style = datasets.Dataset("d", mnist.x_test, mnist.y_test, mnist.x_test, mnist.y_test, mnist.classes, "s",
                                 (28, 28), (0.1307,), (0.3081,))
    assert old_style.task == "classification" and old_style.num_outputs == 10 and old_style.target_names == ()
    assert repr(old_style) == "Dataset('d', train=(10000, 784), test=(10000, 784), classes=10, source='s')"
    with pytest.raises(ValueError, match="task must be one of"):
        datasets.Dataset("d", mnist.x_test, mnist.y_test, mnist.x_test, mnist.y_test, (), "s", task="ranking")
