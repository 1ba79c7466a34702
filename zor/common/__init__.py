"""The torch-free shared layer: what the engine, the exporter, the runtime and the devices all use.

Numpy and the standard library only, so the runtime can import it on a device without
torch: :mod:`~zor.common.errors` (one error tree, each class with its exit code),
:mod:`~zor.common.format` (the ONNX file contract), :mod:`~zor.common.fileio` (atomic
writes), :mod:`~zor.common.metrics`, :mod:`~zor.common.imagemath` (colour, noise,
patches), :mod:`~zor.common.tokenizer`, :mod:`~zor.common.textfeatures`,
:mod:`~zor.common.textdecode` and :mod:`~zor.common.textmetrics` (translation).
Nothing here imports another room of the project.
"""
