"""Task helpers beside the runtime: pre- and post-processing from the model's ``zor.task``.

:class:`~zor.runtime.Model` runs models; these functions take a Model and do the
rest of a task, so no task logic lives inside the runtime itself:

    reconstruct(model, x)         rows → rows, or images of the model's size → images
    classify(model, x)            rows or images of any size → :class:`Classes`
    colorize(model, image)        a grey image of any size → RGB (H, W, 3)
    denoise(model, image)         an image of any size → grey (H, W)
    run_task(model, task, image)  one of the image tasks, with notes on what was done
    translate(model, texts)       text(s) → text(s) (:class:`Translator` keeps one ready)

Image files and whole-image maths (tiling, resizing, grey) are :mod:`~zor.runtime.tasks.imageops`.

Example:
    >>> from zor.runtime import Model, tasks               # doctest: +SKIP
    >>> tasks.classify(Model("classifier.onnx"), image).label  # doctest: +SKIP
    ['Sneaker']
"""

from .core import (
           Classes,
           classify_rows,
           image_shape,
           images_from_rows,
           reconstruct,
           rows_from_images,
)
from .imageops import (
           Tiling,
           as_float_image,
           lightness,
           load_image,
           luma,
           resize,
           save_image,
           tile,
           untile,
           window,
)
from .images import (
           TASKS,
           TaskOutput,
           classify,
           classify_images,
           colorize,
           denoise,
           input_kind,
           run_task,
           task_patch,
)
from .translate import Translator, speed, translate, translator_for

__all__ = ["Classes", "reconstruct", "classify", "classify_rows", "classify_images", "colorize", "denoise",
           "run_task", "TaskOutput", "TASKS", "input_kind", "task_patch", "translate", "Translator", "translator_for",
           "speed",
           "rows_from_images", "images_from_rows", "image_shape", "Tiling", "tile", "untile", "window",
           "as_float_image", "luma", "lightness", "resize", "load_image", "save_image"]
