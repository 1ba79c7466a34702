"""The Zor training engine (torch): networks, layers, learning rules, checkpoints.

``from zor import Zor, Layer`` is the usual way in; this package holds the pieces:
:mod:`~zor.engine.network` (the :class:`Zor` network and its learning step),
:mod:`~zor.engine.layer`, :mod:`~zor.engine.neuron`, :mod:`~zor.engine.rules`,
:mod:`~zor.engine.connections`, :mod:`~zor.engine.events`,
:mod:`~zor.engine.curriculum`, :mod:`~zor.engine.averaging`,
:mod:`~zor.engine.activations`, :mod:`~zor.engine.checkpoint`,
:mod:`~zor.engine.presets`. It imports only :mod:`zor.common` of the project.
"""
