"""The Zor training engine (torch): networks, layers, learning rules, checkpoints.

``from zor import Zor, Layer`` is the usual way in; this package holds the pieces:
:mod:`~zor.engine.network` (the :class:`Zor` network: its state and forward pass),
:mod:`~zor.engine.config` (its settings), :mod:`~zor.engine.learning` (the learning
step), :mod:`~zor.engine.training` (``fit``), :mod:`~zor.engine.inputs` (input checks),
:mod:`~zor.engine.layer`, :mod:`~zor.engine.neuron`, :mod:`~zor.engine.rules`,
:mod:`~zor.engine.connections`, :mod:`~zor.engine.events`,
:mod:`~zor.common.curriculum`, :mod:`~zor.engine.averaging`,
:mod:`~zor.engine.activations`, :mod:`~zor.engine.checkpoint_file` (the file format),
:mod:`~zor.engine.checkpoint` (save/load as functions), :mod:`~zor.engine.presets`,
:mod:`~zor.engine.distributed` (the reducer behind ``Zor(..., distributed=True)``: exact
data parallelism in the learning step), :mod:`~zor.engine.threads` (the torch thread
count a training step uses).
It imports only :mod:`zor.common` of the project (and ``zor.__version__``).
"""
