"""Image task helpers for whole images of any size, driven by the model's ``zor.task``.

Task helpers (the model's ``zor.task`` says what it is; see :mod:`zor.tasks.images` for the
task dicts the examples write):

    colorize(model, image)        any size: lightness patches → (a, b) patches, tiled;
                                  returns RGB (H, W, 3) in [0, 1]
    denoise(model, image)         any size: tiled into the model's image size; (H, W)
    classify_images(model, imgs)  any size, uint8/uint16/float, 1-4 channels: resized
                                  (:func:`resize`) to the model's size, grey (or RGB for
                                  a colour model); returns :class:`~zor.runtime.tasks.Classes`
    classify(model, x)            rows, or images of any kind (:func:`input_kind` says which)
    run_task(model, task, image)  one of the above for ``zor-run --task``, with notes

Tiling, resizing and grey conversion are :mod:`zor.runtime.tasks.imageops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError, ShapeError
from zor.common.imagemath import AB_SCALE, lab_to_rgb

from .core import Classes, classify_rows, image_shape
from .imageops import as_float_image, check_patch, lightness, luma, resize, tile, untile

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["TaskOutput", "TASKS", "classify", "colorize", "denoise", "classify_images", "input_kind", "run_task",
           "task_patch"]

TASKS = ("classify", "colorize", "denoise")
_CHUNK = 1024                     # rows per onnxruntime call


# --------------------------------------------------------------------------- task helpers
def _task(model: "Model", allowed: Sequence[str], helper: str) -> dict:
    task = model.metadata.task
    name = str(task.get("name", "generic"))
    if name not in allowed:
        raise ConfigError(f"{helper}(): the model's task is {name!r}: expected one of {', '.join(allowed)}")
    return task


def _model_image(task: dict) -> tuple[int, int, int]:
    img = (task.get("input") or {}).get("image")
    try:
        return int(img["height"]), int(img["width"]), int(img.get("channels", 1))
    except (TypeError, KeyError, ValueError):
        raise ConfigError(f"the model's zor.task declares no input image (input.image {{height, width}}): "
                          f"expected one for an image task, got {img!r}") from None


def task_patch(task: dict) -> tuple[int, int]:
    """(patch size, stride) from ``task.patch``, defaulting to the input image size and half of it."""
    h, w, _ = _model_image(task)
    if h != w:
        raise ConfigError(f"tiling needs a square model input, the model's is {h}x{w}")
    spec = task.get("patch") or {}
    size = int(spec.get("size", h))
    stride = int(spec.get("stride", max(1, size // 2)))
    if size != h:
        raise ConfigError(f"zor.task patch size {size} differs from the model's input image {h}x{w}")
    return check_patch(size, stride)


def _run_rows(model: "Model", rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return np.concatenate([model.run(rows[k:k + _CHUNK])[fmt.OUTPUT] for k in range(0, len(rows), _CHUNK)])


def _input_range(task: dict) -> tuple[float, float]:
    r = (task.get("input") or {}).get("range")
    if isinstance(r, (list, tuple)) and len(r) == 2 and r[0] is not None and r[1] is not None:
        return float(r[0]), float(r[1])
    return 0.0, 1.0


def _to_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return x if (lo, hi) == (0.0, 1.0) else lo + x * (hi - lo)


def colorize(model: "Model", image: Any) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1] for a grey (or colour: its lightness is used) image of any size.

    Lightness patches (task.patch) → the model's encoded (a, b) planes → blended back,
    decoded with ``task.colour.ab_scale`` and recombined with the input's own lightness.
    """
    task = _task(model, ("colorize",), "colorize")
    size, stride = task_patch(task)
    colour = task.get("colour") or {}
    if colour.get("space", "lab") != "lab":
        raise ConfigError(f"colorize(): the model's colour space is {colour.get('space')!r}: expected 'lab'")
    out_width = model.sizes[-1]
    if out_width != 2 * size * size:
        raise ConfigError(f"colorize(): the model outputs {out_width} values per patch: expected 2·{size}² = "
                          f"{2 * size * size} (a and b planes)")
    scale = float(colour.get("ab_scale", AB_SCALE))
    light = lightness(as_float_image(image))
    pats, tiling = tile(light, size, stride)
    lo, hi = _input_range(task)
    codes = _run_rows(model, _to_range(pats.reshape(len(pats), -1), lo, hi))
    ab_patches = np.moveaxis(codes.reshape(len(pats), 2, size, size), 1, -1)        # (N, p, p, 2)
    ab = (np.clip(untile(ab_patches, tiling), 0.0, 1.0) * 2.0 - 1.0) * scale
    lab = np.concatenate([light[..., None] * 100.0, ab], axis=-1)
    return lab_to_rgb(lab)


def denoise(model: "Model", image: Any) -> np.ndarray:
    """The denoised grey image (H, W) in [0, 1], for an image of any size (tiled at the model's size)."""
    task = _task(model, ("denoise", "reconstruct"), "denoise")
    size, stride = task_patch(task)
    if model.sizes[0] != size * size or model.sizes[-1] != size * size:
        raise ConfigError(f"denoise(): expected a {size * size} → {size * size} model for {size}x{size} images, "
                          f"got {model.sizes[0]} → {model.sizes[-1]}")
    grey = luma(as_float_image(image))
    pats, tiling = tile(grey, size, stride)
    lo, hi = _input_range(task)
    out = _run_rows(model, _to_range(pats.reshape(len(pats), -1), lo, hi))
    olo, ohi = (((task.get("output") or {}).get("range")) or [0.0, 1.0])
    out = (out - float(olo)) / (float(ohi) - float(olo)) if float(ohi) > float(olo) else out
    return np.clip(untile(np.clip(out, 0.0, 1.0).reshape(len(pats), size, size), tiling), 0.0, 1.0)


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A float image (H, W) grey or (H, W, 3) RGB in the model's channels: grey (luma) for 1, RGB
    (grey repeated) for 3."""
    if channels == 1:
        return luma(image)
    if channels == 3:
        return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    raise ConfigError(f"the model's input image has {channels} channels: expected 1 (grey) or 3 (RGB) "
                      "to turn an image of another kind into its input")


def classify_images(model: "Model", images: Any) -> Classes:
    """Classes of one image (H, W[, C]) or several, each resized to the model's size and made grey
    (or RGB, for a colour model); uint8, uint16 or [0, 1] float pixels, 1 to 4 channels. One image
    alone gets one ``str`` label; several (also a list or stack of one) a list of labels.

    Several: a list, a (B, H, W, C) stack, or a (B, H, W) stack whose last axis is not
    a channel count (a 3-D array ending in 1–4 is one (H, W, C) image).
    """
    task = _task(model, ("classify",), "classify_images")
    h, w, c = _model_image(task)
    arr = images if isinstance(images, (list, tuple)) else [images]
    if not isinstance(images, (list, tuple)):
        probe = np.asarray(images)
        if probe.ndim == 4 or (probe.ndim == 3 and probe.shape[2] not in (1, 2, 3, 4)):
            arr = list(probe)                                   # a stack (B, H, W[, C])
    if len(arr) == 0:
        raise ShapeError("classify_images(): expected at least one image, got none")
    lo, hi = _input_range(task)
    rows = np.stack([_to_range(resize(_to_channels(as_float_image(a, f"image {k}"), c), h, w).reshape(-1), lo, hi)
                     for k, a in enumerate(arr)])
    scores = _run_rows(model, rows)
    single = not isinstance(images, (list, tuple)) and len(arr) == 1 and arr[0] is images    # one image alone
    return Classes.from_scores(scores, task.get("labels") or [], single, "classify_images")


def input_kind(model: "Model", x: np.ndarray) -> str:
    """What ``classify`` was given, read from its dtype and shape:

    - ``"rows"``: (B, n_0) floats, or anything for a model that declares no input image
      (:meth:`Model.run` then checks it);
    - ``"own"``: images of the model's own shape, (H, W[, C]) or (B, H, W[, C]), uint8 or
      [0, 1] floats, which become rows as they are;
    - ``"images"``: any other image or stack (another size, channel count, or uint16 pixels),
      resized and converted to the model's image by :func:`classify_images`.
    """
    shape = image_shape(model.metadata.task.get("input") or {})
    if shape is None:
        return "rows"
    trailing = tuple(x.shape[max(x.ndim - len(shape), 0):])
    if trailing == shape and x.ndim in (len(shape), len(shape) + 1) and (x.dtype == np.uint8 or x.dtype.kind == "f"):
        return "own"
    if x.ndim == 2 and x.shape[1] == model.sizes[0] and x.dtype.kind == "f":
        return "rows"
    return "images"


def classify(model: "Model", x: Any) -> Classes:
    """Classes of rows (B, n_0), of images of the model's own size (uint8 or [0, 1] floats), or of
    images of any other size, dtype (uint8, uint16, float) or channel count (made grey or RGB as
    the model takes them, and resized: :func:`classify_images`).

    The kind of input is read from its dtype and shape (:func:`input_kind`): nothing is tried
    and caught. A list of images of different shapes is a list of images.
    """
    if isinstance(x, (list, tuple)):
        if len({np.shape(a) for a in x}) != 1:
            return classify_images(model, x)                    # images of several shapes
        arr = np.asarray(x)
        return classify_rows(model, arr) if input_kind(model, arr) != "images" else classify_images(model, list(x))
    arr = np.asarray(x)
    if input_kind(model, arr) == "images":
        return classify_images(model, arr)
    return classify_rows(model, arr)                # rows, or images of the model's own size (run() checks them)


@dataclass
class TaskOutput:
    """What :func:`run_task` gives ``zor-run``: an image or classes, and notes on the input handling."""

    task: str
    image: Optional[np.ndarray] = None          # colorize: (H, W, 3); denoise: (H, W); float in [0, 1]
    classes: Optional[Classes] = None           # classify
    notes: list = field(default_factory=list)


def run_task(model: "Model", task: str, image: Any) -> TaskOutput:
    """Run ``task`` ("classify", "colorize", "denoise") on one image, saying what was done to it.

    The model's own ``zor.task`` must be that task (a denoiser may also be a
    "reconstruct" model); otherwise :class:`~zor.common.errors.ConfigError` names both.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    have = str(model.metadata.task.get("name", "generic"))
    if have != task and not (task == "denoise" and have == "reconstruct"):
        raise ConfigError(f"--task {task}: the model was trained for {have!r}: expected --task "
                          f"{have if have in TASKS else 'matching the model'}")
    img = as_float_image(image)
    spec = model.metadata.task
    h, w, c = _model_image(spec)
    notes = []
    if task == "classify":
        if img.ndim == 3 and c == 1:
            notes.append("colour image: classified on its luma (the model is grey)")
        elif img.ndim == 2 and c == 3:
            notes.append("grey image: given to the colour model as RGB (grey in every channel)")
        if img.shape[:2] != (h, w):
            notes.append(f"resized {img.shape[0]}x{img.shape[1]} → {h}x{w} (the model's input size)")
        return TaskOutput(task, classes=classify_images(model, img), notes=notes)
    size, stride = task_patch(spec)
    if img.shape[:2] != (size, size):
        t = tile(img[..., 0] if img.ndim == 3 else img, size, stride)[1]
        how = "side by side" if stride == size else f"overlapping every {stride} pixels, blended back"
        notes.append(f"{img.shape[0]}x{img.shape[1]} image tiled into {t.count} {size}x{size} patches {how}")
    if task == "colorize":
        if img.ndim == 3:
            notes.append("colour image: re-coloured from its lightness (its own colours are ignored)")
        return TaskOutput(task, image=colorize(model, img), notes=notes)
    if img.ndim == 3:
        notes.append("colour image: denoised on its luma (the model is grey)")
    return TaskOutput(task, image=denoise(model, img), notes=notes)
