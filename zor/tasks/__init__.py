"""The tasks the toolkit trains for, with their data: images and translation.

:mod:`~zor.tasks.datasets` (Fashion-MNIST, torch-free), :mod:`~zor.tasks.images`
(photos, CIFAR-10 samples, the ``zor.task`` descriptions of image models),
:mod:`~zor.tasks.textdata` (parallel corpora) and :mod:`~zor.tasks.translation`
(training a translator with the engine). Imports stay lazy here so that
``import zor.tasks.datasets`` does not load torch.
"""
