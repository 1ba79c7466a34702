"""Image data and task descriptions for the image tasks: photos, CIFAR-10 samples, ``zor.task`` specs.

Photos (colorization): the colour photos bundled with scikit-image (``skimage.data``)
and scikit-learn (``load_sample_images``), split by photo: :data:`TRAIN_PHOTOS` for
training, :data:`HELD_OUT_PHOTOS` never seen in training. They are cut into patches at
several scales (area downsampling by 2, 4, 8). The 20 CIFAR-10 test images shipped in
PyPI's ``foolbox`` wheel are read straight from the wheel (a zip): :func:`load_cifar10_samples`.
The colour and noise maths live in :mod:`zor.common.imagemath`.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from zor.common.errors import DataError, DataNotFoundError
from zor.common.imagemath import AB_SCALE, downscale, lab_planes, patches

from .datasets import CLASS_NAMES

__all__ = ["TRAIN_PHOTOS", "HELD_OUT_PHOTOS", "PHOTOS", "CIFAR10_CLASSES", "FOOLBOX_ENV", "load_photo",
           "photo_patches", "colorization_data", "find_foolbox_wheel", "load_cifar10_samples", "classify_task",
           "colorize_task", "denoise_task", "FASHION_MNIST"]



# name → (package, loader name); scikit-image's copies that need no download, and
# scikit-learn's two sample photos
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "china": ("sklearn", "china.jpg"),
    "immunohistochemistry": ("skimage", "immunohistochemistry"),
    "chelsea": ("skimage", "chelsea"),
    "flower": ("sklearn", "flower.jpg"),
}
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "china", "immunohistochemistry")
HELD_OUT_PHOTOS = ("chelsea", "flower")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOOLBOX_ENV = "ZOR_FOOLBOX"
# ``task["data"]["name"]`` of a model that learns from Fashion-MNIST: zor-export calibrates int8 on the
# bundled subset (zor.tasks.datasets.load_bundled) when it is given no --calibration
FASHION_MNIST = "fashion-mnist"

# --------------------------------------------------------------------------- photos
def load_photo(name: str) -> np.ndarray:
    """A bundled colour photo as float64 RGB in [0, 1] (H, W, 3); see :data:`PHOTOS`."""
    if name not in PHOTOS:
        raise DataError(f"unknown photo {name!r}: expected one of {sorted(PHOTOS)}")
    package, key = PHOTOS[name]
    try:
        if package == "skimage":
            import skimage.data

            img = getattr(skimage.data, key)()
        else:
            from sklearn.datasets import load_sample_image

            img = load_sample_image(key)
    except ImportError as exc:
        raise DataNotFoundError(f"photo {name!r} ships with {'scikit-image' if package == 'skimage' else 'scikit-learn'}"
                                f", which is not installed: pip install scikit-image scikit-learn ({exc})") from None
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
        raise DataError(f"photo {name!r}: expected 8-bit RGB, got {img.dtype} {img.shape}")
    return img[..., :3].astype(np.float64) / 255.0


def photo_patches(names: Sequence[str], size: int = 16, stride: int = 8, scales: Sequence[int] = (2, 4, 8),
                  flips: bool = True) -> np.ndarray:
    """RGB patches (N, size, size, 3) of the named photos at each downscale factor (plus mirror images)."""
    out = []
    for name in names:
        photo = load_photo(name)
        for factor in scales:
            small = downscale(photo, factor)
            if min(small.shape[:2]) < size:
                continue
            p = patches(small, size, stride)
            out.append(p)
            if flips:
                out.append(p[:, :, ::-1])
    if not out:
        raise DataError(f"no {size}x{size} patches in photos {list(names)} at scales {list(scales)}")
    return np.concatenate(out).astype(np.float32)


def colorization_data(size: int = 16, stride: int = 8, scales: Sequence[int] = (2, 4, 8),
                      train: Sequence[str] = TRAIN_PHOTOS, held_out: Sequence[str] = HELD_OUT_PHOTOS,
                      limit: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
    """Training and held-out patch sets for colorization.

    Returns {"train": (grey rows, ab rows), "test": (grey rows, ab rows),
    "train_rgb", "test_rgb" (patches), "size", "photos": {...}}. ``limit`` keeps a
    random subset of that many training patches (seeded).
    """
    overlap = set(train) & set(held_out)
    if overlap:
        raise DataError(f"held-out photos must not be trained on: {sorted(overlap)} in both lists")
    tr = photo_patches(train, size, stride, scales, flips=True)
    te = photo_patches(held_out, size, size, scales, flips=False)   # test patches do not overlap
    if limit is not None and limit < len(tr):
        tr = tr[np.sort(np.random.default_rng(seed).choice(len(tr), size=limit, replace=False))]
    return {"train": lab_planes(tr), "test": lab_planes(te), "train_rgb": tr, "test_rgb": te, "size": size,
            "photos": {"train": list(train), "held_out": list(held_out), "scales": list(scales)}}


def find_foolbox_wheel(path: Union[str, os.PathLike, None] = None) -> Path:
    """The foolbox wheel: ``path`` (a .whl or a folder holding one), else $ZOR_FOOLBOX."""
    where = path if path is not None else os.environ.get(FOOLBOX_ENV)
    hint = (f"get it with `pip download foolbox --no-deps -d DIR` and pass that folder (or set {FOOLBOX_ENV}=DIR); "
            "nothing is imported from it, the PNGs are read from the zip")
    if not where:
        raise DataNotFoundError(f"the CIFAR-10 sample images come from PyPI's foolbox wheel: {hint}")
    p = Path(where)
    if p.is_dir():
        found = sorted(p.glob("foolbox-*.whl"))
        if not found:
            raise DataNotFoundError(f"no foolbox-*.whl in {p}: {hint}")
        p = found[-1]
    if not p.is_file():
        raise DataNotFoundError(f"{p} does not exist: {hint}")
    return p


def load_cifar10_samples(path: Union[str, os.PathLike, None] = None) -> tuple[np.ndarray, np.ndarray]:
    """The 20 CIFAR-10 test images in the foolbox wheel: (RGB (20, 32, 32, 3) float32 in [0, 1], labels (20,)).

    Decoded with imageio (a scikit-image dependency); the label is in each file name
    (``cifar10_{index}_{label}.png``).
    """
    wheel = find_foolbox_wheel(path)
    try:
        import imageio.v3 as iio
    except ImportError as exc:
        raise DataNotFoundError(f"decoding the CIFAR-10 PNGs needs imageio (pip install scikit-image): {exc}") from None
    pattern = re.compile(r"foolbox/data/cifar10_(\d+)_(\d+)\.png$")
    images, labels = [], []
    try:
        with zipfile.ZipFile(wheel) as z:
            names = sorted((n for n in z.namelist() if pattern.search(n)), key=lambda n: int(pattern.search(n)[1]))
            for n in names:
                img = np.asarray(iio.imread(io.BytesIO(z.read(n))))
                if img.shape != (32, 32, 3):
                    raise DataError(f"{wheel.name}:{n}: expected a 32x32 RGB image, got {img.shape}")
                images.append(img.astype(np.float32) / 255.0)
                labels.append(int(pattern.search(n)[2]))
    except zipfile.BadZipFile as exc:
        raise DataError(f"{wheel}: not a readable wheel (zip) file: {exc}") from None
    if not images:
        raise DataError(f"{wheel}: no foolbox/data/cifar10_*.png inside: expected 20 CIFAR-10 sample images")
    return np.stack(images), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- tasks
def _image_spec(h: int, w: int, c: int) -> dict[str, int]:
    return {"height": int(h), "width": int(w), "channels": int(c)}


def _with_data(task: dict[str, Any], data: Optional[str]) -> dict[str, Any]:
    """``task`` with ``"data": {"name": data}`` (the data set it learns from) when ``data`` is given."""
    return {**task, "data": {"name": data}} if data else task


def classify_task(labels: Sequence[str], height: int = 28, width: int = 28,
                  data: Optional[str] = None) -> dict[str, Any]:
    """``zor.task`` for a grey-image classifier: output charges against one-hot targets.

    ``data`` names the data set the model learns from (``task["data"]``, e.g.
    :data:`FASHION_MNIST`); by default Fashion-MNIST when ``labels`` are its ten classes
    (:data:`zor.tasks.datasets.CLASS_NAMES`) at 28×28, else none is recorded.
    """
    if data is None and tuple(labels) == CLASS_NAMES and (height, width) == (28, 28):
        data = FASHION_MNIST
    return _with_data({
        "name": "classify",
        "input": {"shape": [None, height * width], "range": [0.0, 1.0],
                  "preprocessing": f"{height}x{width} grey image, row-major, pixel/255",
                  "image": _image_spec(height, width, 1)},
        "output": {"shape": [None, len(labels)], "range": None,
                   "meaning": "one charge per class, trained against one-hot targets; the highest wins"},
        "labels": list(labels),
        "image_policy": {"size": "resized to the model's size (area average; bilinear when growing)",
                         "colour": "luma"},
    }, data)


def colorize_task(size: int) -> dict[str, Any]:
    """``zor.task`` for a patch colorizer: L/100 patch in, encoded (a, b) planes out."""
    return {
        "name": "colorize",
        "input": {"shape": [None, size * size], "range": [0.0, 1.0],
                  "preprocessing": f"{size}x{size} patch of CIE Lab lightness L/100 (sRGB, D65), row-major",
                  "image": _image_spec(size, size, 1)},
        "output": {"shape": [None, 2 * size * size], "range": [0.0, 1.0],
                   "meaning": f"CIE Lab a and b planes of the patch (a plane, then b plane, row-major), "
                              f"each encoded as (v/{AB_SCALE:g} + 1)/2",
                   "image": _image_spec(size, size, 2)},
        "colour": {"space": "lab", "input": "L/100", "output": "ab", "ab_scale": AB_SCALE, "white": "D65"},
        "patch": {"size": size, "stride": size // 2, "window": "hann", "padding": "reflect"},
        "image_policy": {"size": "any: tiled into overlapping patches, blended", "colour": "RGB input: its L is used"},
    }


def denoise_task(noise: dict, height: int = 28, width: int = 28, data: Optional[str] = None) -> dict[str, Any]:
    """``zor.task`` for an image denoiser: noisy image in, clean image out.

    ``data`` names the data set its clean images come from (``task["data"]``, e.g.
    :data:`FASHION_MNIST`); none is recorded by default.
    """
    return _with_data({
        "name": "denoise",
        "input": {"shape": [None, height * width], "range": [0.0, 1.0],
                  "preprocessing": f"{height}x{width} grey image, row-major, pixel/255",
                  "image": _image_spec(height, width, 1)},
        "output": {"shape": [None, height * width], "range": [0.0, 1.0], "meaning": "the denoised image",
                   "image": _image_spec(height, width, 1)},
        "noise": dict(noise),
        # whole items, not texture: tiles side by side (an image made of items on a 28-pixel grid
        # is cut exactly at the items); overlapping tiles would show the model off-centre items
        "patch": {"size": height, "stride": height, "window": "hann", "padding": "reflect"},
        "image_policy": {"size": f"any: tiled into {height}x{width} tiles side by side (edges mirrored)",
                         "colour": "luma"},
    }, data)
