"""Comparison baselines for the Zor benchmarks (not part of the engine API).

- :class:`MeanImage`  the mean training image (the floor)
- :class:`MLP`        an equal-size backprop MLP autoencoder, AdamW on MSE
- :class:`LeakyBPTT`  seed 002's leaky neuron (decay, ReLU threshold, refractory
                      penalty, one-step delay) trained by backprop through time
- :class:`LIFSTDP`    seed 003's LIF neurons + synapses with Poisson encoding,
                      learning by STDP, decoded by population coding

Each has ``fit(x, y=None, *, time_budget=None, steps=None) -> FitResult`` and
``reconstruct(x) -> np.ndarray``; each docstring states its equations and how it
follows its seed. :mod:`~benchmarks.baselines.images` holds the image classifiers and
regressors, :mod:`~benchmarks.baselines.text` the translation memory and copy baselines,
:mod:`~benchmarks.baselines.translation` the equal-size backprop translator.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it, loaded on first use (PEP 562): the text baselines
# (benchmarks.baselines.text) stay importable without torch.
_LAZY = {"FitResult": "base", "as_images": "base", "timed_loop": "base", "LeakyBPTT": "leaky_bptt",
         "LeakyLayer": "leaky_bptt", "LIFSTDP": "lif_stdp", "MeanImage": "mean_image", "MLP": "mlp"}

__all__ = ["FitResult", "as_images", "timed_loop", "MeanImage", "MLP", "LeakyBPTT", "LeakyLayer", "LIFSTDP"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
