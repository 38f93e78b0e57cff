"""The complete data sets in ../shared/data loaded whole: cifar10-jpeg (all 60,000 images, the training JPEGs
decoded with Pillow), the exact 4,000 CIFAR-10 images, fashion-mnist-approx (all 70,000), each checked against
the folder's README, the files read independently, and each other. Skipped where ../shared/data is not here.

Slow (conftest's SLOW): decoding the 50,000 JPEGs and normalising 60,000 CIFAR-10 images take 10-30 s on one
busy core; the module loads them once."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from softgrad import datasets

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
JPEG, EXACT, APPROX = SHARED / "cifar10-jpeg", SHARED / "cifar10", SHARED / "fashion-mnist-approx"
MEAN, STD = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])  # CIFAR-10's usual ones
# shared/data/README.md: the decoded training array's SHA-256 with Pillow 13.0 and libjpeg-turbo 3.2
README_SHA256 = "5aaf8a2cf2e577ff4dbb15e4f368840fab5aca1812bcc69682005f8dc661d466"
# Fashion-MNIST's published MD5s of its label files (zalandoresearch/fashion-mnist README)
FASHION_LABEL_MD5 = {"train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                     "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}


def needs(folder: Path):
    return pytest.mark.skipif(not folder.is_dir(), reason=f"{folder} is not here (../shared/data)")


def raw_pixels(rows: np.ndarray, mean=MEAN, std=STD, shape=(32, 32, 3)) -> np.ndarray:
    """The 0..255 pixels behind normalised rows (HWC), undone in float32: its rounding error, about 1e-4 of a
    grey level, is far from the 0.5 that would change the integer."""
    raw = rows.reshape(len(rows), *shape) * np.float32(std) + np.float32(mean)
    return np.rint(raw * np.float32(255), out=raw).astype(np.uint8)


def one_array(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        return archive[archive.files[0]]


@pytest.fixture(scope="module")
def jpeg_set():
    pytest.importorskip("PIL")
    return datasets.load("cifar10", root=JPEG)


@pytest.fixture(scope="module")
def jpeg_train_pixels(jpeg_set):
    return raw_pixels(jpeg_set.x_train)


@needs(JPEG)
def test_cifar10_jpeg_is_complete_in_official_order_and_says_what_it_is(jpeg_set):
    data = jpeg_set
    assert data.name == "cifar10-jpeg" and data.x_train.shape == (50_000, 3072) and data.x_test.shape == (10_000, 3072)
    assert f"CIFAR-10 JPEG-recompressed copy in {JPEG} (not the official pixels)" in data.source
    with np.load(JPEG / "train-jpeg-bytes.npz") as archive:
        np.testing.assert_array_equal(data.y_train, archive["labels"])
    np.testing.assert_array_equal(data.y_test, one_array(JPEG / "test-labels.npz"))
    np.testing.assert_array_equal(raw_pixels(data.x_test), one_array(JPEG / "test-images.npz"))
    if EXACT.is_dir():  # the official label sequences, from the other folder
        np.testing.assert_array_equal(data.y_train, one_array(EXACT / "train-labels.npz"))
        np.testing.assert_array_equal(data.y_test, one_array(EXACT / "test-labels.npz"))


@needs(JPEG)
def test_the_decoded_training_set_is_the_readmes(jpeg_train_pixels):
    """Every decoded image against shared/data/README.md's SHA-256 where the decoder is the one it names; a
    sample decoded as the README does it in any case."""
    from PIL import Image, features

    pixels = jpeg_train_pixels
    with np.load(JPEG / "train-jpeg-bytes.npz") as archive:
        data, offsets = archive["jpeg"].tobytes(), archive["offsets"]
    for i in range(0, 50_000, 499):
        one = np.array(Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])).convert("RGB"))
        np.testing.assert_array_equal(pixels[i], one, err_msg=f"training image {i}")
    turbo = features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    import PIL

    if not (PIL.__version__.startswith("13.0.") and str(turbo).startswith("3.2.")):
        pytest.skip(f"the README's SHA-256 is Pillow 13.0 with libjpeg-turbo 3.2's; here Pillow "
                    f"{PIL.__version__} with libjpeg-turbo {turbo} (other decoders may round differently)")
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == README_SHA256


@needs(JPEG)
@needs(EXACT)
def test_the_first_4000_jpegs_are_close_to_the_exact_images(jpeg_train_pixels):
    exact = one_array(EXACT / "train-images-first4000.npz").astype(np.float64)
    difference = jpeg_train_pixels[:4000].astype(np.float64) - exact
    psnr = 10 * np.log10(255 ** 2 / np.mean(difference ** 2))
    assert 28 < psnr < 32, psnr  # the README: about 30 dB (quality 75, 4:2:0); 29.98 dB measured
    assert np.abs(difference).mean() < 8  # 5.8 grey levels measured
    # each JPEG is nearest to its own exact image among its neighbours in the sequence: the order is official
    jpeg = jpeg_train_pixels[:400].reshape(400, -1).astype(np.float64)
    near = exact[:400].reshape(400, -1)
    distances = (jpeg ** 2).sum(1)[:, None] + (near ** 2).sum(1)[None, :] - 2 * jpeg @ near.T
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(400))


@needs(EXACT)
def test_the_exact_4000_images_load_whole_with_their_labels():
    data = datasets.load("cifar10", root=EXACT)
    assert data.name == "cifar10" and data.x_train.shape == (3200, 3072) and data.x_test.shape == (800, 3072)
    assert "train-images-first4000.npz with train-labels-first4000.npz" in data.source
    assert "held out as the test set" in data.source and "test-labels.npz holds labels only" in data.source
    exact = one_array(EXACT / "train-images-first4000.npz")
    np.testing.assert_array_equal(raw_pixels(np.concatenate([data.x_train, data.x_test])), exact)
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]),
                                  one_array(EXACT / "train-labels.npz")[:4000])


def read_idx_gz(path: Path, header: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=header)


@needs(APPROX)
def test_fashion_mnist_approx_is_complete_and_named():
    data = datasets.load("fashion-mnist", root=APPROX)
    assert data.name == "fashion-mnist-approx" and data.x_train.shape == (60_000, 784)
    assert data.x_test.shape == (10_000, 784) and data.image_shape == (28, 28)
    assert str(APPROX) in data.source and "not the official pixels" in data.source
    for name, md5 in FASHION_LABEL_MD5.items():
        assert hashlib.md5((APPROX / name).read_bytes()).hexdigest() == md5, name
    for prefix, x, y in (("train", data.x_train, data.y_train), ("t10k", data.x_test, data.y_test)):
        np.testing.assert_array_equal(y, read_idx_gz(APPROX / f"{prefix}-labels-idx1-ubyte.gz", 8))
        pixels = read_idx_gz(APPROX / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(len(y), 784)
        np.testing.assert_array_equal(raw_pixels(x, 0.2860, 0.3530, (784,)), pixels)
    assert np.bincount(data.y_train).tolist() == [6000] * 10 and np.bincount(data.y_test).tolist() == [1000] * 10
