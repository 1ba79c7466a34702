"""Checkpoints as functions: ``save(model, path)``, ``load(path)``, ``read_config(path)``.

The file format (one safetensors file with a JSON config; nothing is ever unpickled)
is :mod:`zor.engine.checkpoint_file`; ``Zor.save`` and ``Zor.load`` are the usual way
in. This module sits above the network (it imports :mod:`zor.engine.network`, which
imports only the file module), so saving and loading have no import cycle.

Example:
    >>> import tempfile, os, torch
    >>> from zor import Zor, Layer
    >>> net = Zor([Layer(4), Layer(3)], seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.zor")
    >>> save(net, path)
    >>> torch.equal(load(path).weights[0], net.weights[0])
    True
"""

from __future__ import annotations

import os
from typing import Union

from .checkpoint_file import FORMAT, FORMAT_VERSION, read_config, save
from .network import Zor

__all__ = ["FORMAT", "FORMAT_VERSION", "save", "load", "read_config"]


def load(path: Union[str, os.PathLike], device: str = "auto") -> Zor:
    """Build a :class:`~zor.engine.network.Zor` from a checkpoint, validating every tensor."""
    return Zor.load(path, device=device)
