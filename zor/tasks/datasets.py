"""Data sets: Fashion-MNIST from IDX files, and a small bundled subset.

Fashion-MNIST is searched, in order, in:

1. an explicit ``path`` argument,
2. the folder named by the environment variable ``ZOR_FASHION_MNIST``,
3. Debian's ``dataset-fashion-mnist`` location, ``/usr/share/datasets/fashion-mnist``.

Each folder holds the original files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(gzip-compressed ``.gz`` or not). A 700-image subset (20 training images per class
and the first 500 test images) ships inside the package, so demos and tests run
offline anywhere: :func:`load_bundled`. Fashion-MNIST is © Zalando SE, MIT license
(see ``zor/data/FASHION_MNIST_LICENSE.txt``).

This module needs numpy only.

Example:
    >>> x, y = load_bundled("train")
    >>> x.shape, x.dtype, int(y.max())
    ((200, 784), dtype('float32'), 9)
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from zor.common.errors import DataError, DataNotFoundError

__all__ = [
    "CLASS_NAMES",
    "ENV_VAR",
    "DEBIAN_DIR",
    "read_idx",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "load_bundled",
    "few_shot",
]

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
ENV_VAR = "ZOR_FASHION_MNIST"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED = Path(__file__).with_name("data") / "fashion_mnist_subset.npz"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the "
    "four IDX files from https://github.com/zalandoresearch/fashion-mnist into a folder "
    f"and pass path=... or set {ENV_VAR}=FOLDER; zor.tasks.datasets.load_bundled() has a "
    "700-image subset that needs nothing"
)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"IDX file {path} does not exist") from exc
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: expected a readable (gzip) IDX file, got an error: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: expected an IDX header (0x00 0x00 type ndim), got {raw[:4]!r}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected ≥ {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX dims {dims} need {expected} bytes, file has {len(raw)} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header, count=count).reshape(dims).astype(dtype.newbyteorder("="))


def _locate(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(path: Union[str, os.PathLike, None] = None) -> Path:
    """The folder holding Fashion-MNIST (see the module docstring for the search order)."""
    if path is not None:
        origin, folder = "path argument", Path(path)
    elif os.environ.get(ENV_VAR):
        origin, folder = f"${ENV_VAR}", Path(os.environ[ENV_VAR])
    else:
        origin, folder = "Debian's dataset-fashion-mnist", DEBIAN_DIR
    missing = [s for pair in _FILES.values() for s in pair if _locate(folder, s) is None]
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {folder} ({origin}): missing {', '.join(missing)}; {_HOW_TO_GET}"
        )
    return folder


def load_fashion_mnist(
    split: str = "train", path: Union[str, os.PathLike, None] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 784) float32 in [0, 1] and labels (N,) int64 of one split."""
    if split not in _FILES:
        raise DataError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    folder = find_fashion_mnist(path)
    img_stem, lab_stem = _FILES[split]
    images = read_idx(_locate(folder, img_stem))
    labels = read_idx(_locate(folder, lab_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{folder}: expected images (N, 28, 28) and labels (N,), got {images.shape} and {labels.shape}")
    return images.reshape(len(images), 784).astype(np.float32) / 255.0, labels.astype(np.int64)


def load_bundled(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The bundled Fashion-MNIST subset: "train" (200 images, 20 per class) or "test" (500)."""
    if split not in _FILES:
        raise DataError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    with np.load(BUNDLED) as z:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    return images.reshape(len(images), 784).astype(np.float32) / 255.0, labels.astype(np.int64)


def few_shot(labels: np.ndarray, per_class: int, n_classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class (class order)."""
    labels = np.asarray(labels)
    idx = []
    for c in range(n_classes):
        found = np.flatnonzero(labels == c)[:per_class]
        if len(found) < per_class:
            raise DataError(f"class {c} has only {len(found)} samples, expected ≥ {per_class}")
        idx.append(found)
    return np.concatenate(idx)
