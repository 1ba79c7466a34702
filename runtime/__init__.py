"""Torch-free inference on onnxruntime: ``from zor.runtime import Model``.

Needs numpy and onnxruntime only (never torch or onnx). ``Model(path,
device="auto", threads=None)`` loads a Zor export, configures onnxruntime from the
device profile (:mod:`zor.devices`), checks inputs and returns named outputs;
``model.stream()`` carries state for stateful models. The task helpers beside it
(:mod:`zor.runtime.tasks`: ``classify``, ``reconstruct``, ``colorize``, ``denoise``,
``translate``) take a Model and wrap the task's pre- and post-processing.

``Model.run`` is thread-safe: many threads may call it on one Model at once and get
the same results as one after another (onnxruntime sessions are thread-safe and the
Model keeps no per-call state). Give each thread its own :class:`Stream`.

Example:
    >>> from zor.runtime import Model                    # doctest: +SKIP
    >>> m = Model("fewshot.onnx")                        # doctest: +SKIP
    >>> m.run(x)["output"]                               # doctest: +SKIP
    >>> from zor.runtime import tasks                    # doctest: +SKIP
    >>> tasks.reconstruct(m, x)                          # doctest: +SKIP
"""

from . import tasks
from .learner import Learner
from .model import Model, TensorInfo, resolve_device
from .stream import Stream
from .tasks import Classes

__all__ = ["Model", "Learner", "Stream", "TensorInfo", "Classes", "resolve_device", "tasks"]
