"""CIFAR-10 as JPEG files (``train-jpeg-bytes.npz``: every training image's JPEG bytes, concatenated, with their
offsets and labels; ``test-images.npz`` / ``test-labels.npz``: the test set already decoded), as in
``shared/data/cifar10-jpeg``. Its pixels are *not* the official ones, and the Dataset says so in its name and
source.

The training JPEGs are decoded with Pillow once per process: 10-12 s for the 50,000 images on this project's
2-core machine with one neighbour, 27 s under a load of 9 (the folder's README: about 5 s on a quiet core).
The decoded uint8 array (154 MB) is kept in memory for the process's later loads (tests, a bench that loads
twice), keyed by the file's path, size, modification time and its arrays' CRC-32s. Nothing is written to
disk: a training run takes minutes to hours where the decode takes seconds, so a 154 MB cache file in the
user's home (and keeping it valid, and never writing into the data's own folder) would buy too little.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from softgrad.datasets._catalogue import IMAGE_SETS, DatasetError
from softgrad.datasets._cifar import checked_labels
from softgrad.datasets._dataset import Dataset
from softgrad.datasets._images import image_dataset, pixel_rows
from softgrad.datasets._npz import read_npz

TRAIN_JPEG = "train-jpeg-bytes.npz"
TEST_IMAGES, TEST_LABELS = "test-images.npz", "test-labels.npz"
PIP_PILLOW = "pip install pillow"
_CIFAR = "cifar10"
_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray, str]] = {}  # one entry: the last file decoded


def is_jpeg_folder(folder: Path) -> bool:
    return (folder / TRAIN_JPEG).is_file()


def load_cifar_jpeg(folder: Path) -> Dataset:
    """All of CIFAR-10 from the JPEG layout in ``folder``: the training images decoded with Pillow, the test
    images as stored, labels as given; rows normalised as the other CIFAR-10 loaders do."""
    absent = [name for name in (TEST_IMAGES, TEST_LABELS) if not (folder / name).is_file()]
    if absent:  # said before the seconds of decoding
        raise DatasetError(f"{_CIFAR}: {folder} has {TRAIN_JPEG} but no {absent[0]}; the JPEG layout needs "
                           f"{TRAIN_JPEG}, {TEST_IMAGES} and {TEST_LABELS}")
    train_images, train_labels, decoder = decoded_training_set(folder / TRAIN_JPEG)
    test_images = next(iter(read_npz(_CIFAR, folder / TEST_IMAGES).values()))
    test_labels = next(iter(read_npz(_CIFAR, folder / TEST_LABELS).values()))
    test_labels = checked_labels(folder / TEST_LABELS, test_labels, len(test_images), folder / TEST_IMAGES)
    if test_images.dtype != np.uint8 or test_images.shape[1:] != IMAGE_SETS[_CIFAR].image_shape:
        raise DatasetError(f"{_CIFAR}: {folder / TEST_IMAGES} holds {test_images.dtype} {test_images.shape}; "
                           "expected uint8 (N, 32, 32, 3) HWC images")
    splits = [pixel_rows(_CIFAR, train_images, train_labels.copy(), train=True, root=folder),  # its own labels
              pixel_rows(_CIFAR, test_images, test_labels, train=False, root=folder)]
    source = (f"CIFAR-10 JPEG-recompressed copy in {folder} (not the official pixels): {len(train_labels):,} "
              f"training images decoded from {TRAIN_JPEG} with {decoder}, {len(test_labels):,} test images "
              f"from {TEST_IMAGES}")
    data = image_dataset(_CIFAR, splits, source)
    name = folder.name if folder.name.startswith(f"{_CIFAR}-") else "cifar10-jpeg"
    return dataclasses.replace(data, name=name)


def decoded_training_set(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The training images of ``path`` decoded (uint8 ``(N, 32, 32, 3)``, read-only), their labels, and which
    decoder made them; from this process's cache when the file is unchanged."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise DatasetError(f"{_CIFAR}: cannot read {path}: {error.strerror}") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, _checksums(path))
    if key not in _DECODED:
        arrays = read_npz(_CIFAR, path, ("jpeg", "offsets", "labels"))
        offsets = checked_offsets(path, arrays["jpeg"], arrays["offsets"])
        labels = checked_labels(path, arrays["labels"], len(offsets) - 1, path)
        images, decoder = decode_jpegs(path, arrays["jpeg"], offsets)
        images.flags.writeable = False  # shared by every later load in this process
        labels.flags.writeable = False
        _DECODED.clear()  # one decoded set held at a time: 154 MB each
        _DECODED[key] = (images, labels, decoder)
    return _DECODED[key]


def _checksums(path: Path) -> tuple:
    """The CRC-32 the zip directory of ``path`` holds for each array: a file rewritten within the clock's
    resolution, at the same size, is still told apart from the one decoded before. Read in microseconds."""
    try:
        with zipfile.ZipFile(path) as archive:
            return tuple((i.filename, i.CRC, i.file_size) for i in archive.infolist())
    except (OSError, zipfile.BadZipFile):
        return ()  # read_npz says what is wrong with it


def checked_offsets(path: Path, jpeg: np.ndarray, offsets: np.ndarray) -> list[int]:
    """``offsets`` as a list: one more than the images, from 0 to the end of ``jpeg``, strictly increasing."""
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise DatasetError(f"{_CIFAR}: {path}: 'jpeg' is {jpeg.dtype} {jpeg.shape}; expected the JPEG files' "
                           "bytes as one uint8 array")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.ndim != 1 or len(offsets) < 2:
        raise DatasetError(f"{_CIFAR}: {path}: 'offsets' is {offsets.dtype} {offsets.shape}; expected integers, "
                           "one more than the images")
    steps = np.flatnonzero(np.diff(offsets) <= 0)
    if offsets[0] != 0 or len(steps) or offsets[-1] != len(jpeg):
        where = (f"image {int(steps[0])} ends at byte {int(offsets[steps[0] + 1])}, before it starts at "
                 f"{int(offsets[steps[0]])}" if len(steps) else
                 f"they run from {int(offsets[0])} to {int(offsets[-1])}, the bytes from 0 to {len(jpeg)}")
        raise DatasetError(f"{_CIFAR}: {path}: 'offsets' are not increasing from 0 to the end of 'jpeg' "
                           f"({where}); the file is corrupt")
    return offsets.tolist()


def decode_jpegs(path: Path, jpeg: np.ndarray, offsets: list[int]) -> tuple[np.ndarray, str]:
    """Each JPEG of ``jpeg[offsets[i]:offsets[i + 1]]`` decoded to RGB, and the decoder's name."""
    try:  # imported here: Pillow comes with matplotlib, but softgrad itself needs only NumPy
        import PIL
        from PIL import JpegImagePlugin, features
    except ImportError:
        raise DatasetError(f"{_CIFAR}: decoding {path} needs Pillow, which is not installed: {PIP_PILLOW}") from None
    shape = IMAGE_SETS[_CIFAR].image_shape
    data = jpeg.tobytes()
    images = np.empty((len(offsets) - 1, *shape), np.uint8)
    for i in range(len(images)):
        try:  # the JPEG plugin itself: Image.open would try every format on each of 50,000 small files
            image = JpegImagePlugin.JpegImageFile(io.BytesIO(data[offsets[i]:offsets[i + 1]]))
            image = image if image.mode == "RGB" else image.convert("RGB")
            pixels = np.asarray(image)
        except Exception as error:  # Pillow: SyntaxError for a bad header, OSError for truncated data
            raise DatasetError(f"{_CIFAR}: {path}: training image {i} (bytes {offsets[i]:,}..{offsets[i + 1]:,}) "
                               f"is not a readable JPEG: {type(error).__name__}: {error}") from None
        if pixels.shape != shape:
            raise DatasetError(f"{_CIFAR}: {path}: training image {i} decodes to {pixels.shape[1]}x"
                               f"{pixels.shape[0]} pixels; CIFAR-10 images are 32x32")
        images[i] = pixels
    turbo = features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    return images, f"Pillow {PIL.__version__}, " + (f"libjpeg-turbo {turbo}" if turbo else
                                                   f"libjpeg {features.version('jpg')}")
