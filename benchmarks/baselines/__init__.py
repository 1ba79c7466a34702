"""Comparison baselines for the Zor benchmarks (not part of the engine API).

- :class:`MeanImage`  the mean training image (the floor)
- :class:`MLP`        an equal-size backprop MLP autoencoder, AdamW on MSE
- :class:`LeakyBPTT`  seed 002's leaky neuron (decay, ReLU threshold, refractory
                      penalty, one-step delay) trained by backprop through time
- :class:`LIFSTDP`    seed 003's LIF neurons + synapses with Poisson encoding,
                      learning by STDP, decoded by population coding

Each has ``fit(x, y=None, *, time_budget=None, steps=None) -> FitResult`` and
``reconstruct(x) -> np.ndarray``; each docstring states its equations and how it
follows its seed.
"""

from .base import FitResult, as_images, timed_loop
from .leaky_bptt import LeakyBPTT, LeakyLayer
from .lif_stdp import LIFSTDP
from .mean_image import MeanImage
from .mlp import MLP

__all__ = ["FitResult", "as_images", "timed_loop", "MeanImage", "MLP", "LeakyBPTT", "LeakyLayer", "LIFSTDP"]
