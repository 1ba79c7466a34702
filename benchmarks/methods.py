"""The methods the headline benchmark compares, by name, behind one interface.

Each entry builds an object with ``fit(x, *, time_budget=None, steps=None) ->
FitResult`` and ``reconstruct(x) -> np.ndarray``, for a given seed:

    zor            Zor([Layer(784), Layer(64), Layer(784)]), defaults, via Zor.fit
                   (curriculum sampling, batches of 48)
    zor-uniform    the same with uniform batches (curriculum=False)
    zor-homeostasis  hidden-layer threshold homeostasis on (η = 0.001, target 0.75),
                   the best homeostasis setting in benchmarks/rule_variants.py
    zor-homeostasis-uniform  both of the above
    zor-<rule>     the same with another learning-rule variant (zor.engine.rules.RULES)
    mlp            equal-size backprop MLP, AdamW lr 1e-3
    mlp-lr3e-3     the same at lr 3e-3
    mlp-sigmoid    the same (lr 1e-3) with a sigmoid output (better with more data)
    leaky-bptt     seed 002's leaky neuron trained by BPTT
    lif-stdp       seed 003's LIF + STDP network with Poisson encoding
    mean           the mean training image

Example:
    >>> m = build("mean", seed=0)
    >>> m.name
    'mean image'
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from benchmarks.baselines import LIFSTDP, MLP, LeakyBPTT, MeanImage
from benchmarks.baselines.base import ArrayLike, FitResult, as_images, fit_zor
from zor.common.errors import ConfigError

__all__ = ["ZorMethod", "METHODS", "DEFAULT_METHODS", "build", "known", "is_mlp", "is_zor"]

SIZES = (784, 64, 784)
HOMEOSTASIS = {"homeostasis_rate": 1e-3, "target_activation": 0.75}   # hidden layer


class ZorMethod:
    """A Zor network trained by :meth:`zor.Zor.fit` (curriculum on by default)."""

    def __init__(self, seed: int = 0, curriculum: bool = True, batch_size: int = 48, device: str = "cpu",
                 name: str = "zor", layer_options: Optional[dict] = None, **config: Any) -> None:
        from zor import Layer, Zor

        opts = layer_options or {}
        self.net = Zor([Layer(SIZES[0]), Layer(SIZES[1], **opts), Layer(SIZES[2])], seed=seed, device=device, **config)
        self.curriculum, self.batch_size, self.name = curriculum, batch_size, name

    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        return fit_zor(self.net, as_images(x, SIZES[0], "x"), y, self.batch_size, time_budget=time_budget,
                       steps=steps, curriculum=self.curriculum)

    def reconstruct(self, x: ArrayLike) -> np.ndarray:
        return self.net.predict(as_images(x, SIZES[0], "x")).cpu().numpy()


def _named(obj: Any, name: str) -> Any:
    obj.name = name
    return obj


METHODS: dict[str, Callable[[int], Any]] = {
    "zor": lambda seed: ZorMethod(seed=seed, name="zor"),
    "zor-uniform": lambda seed: ZorMethod(seed=seed, curriculum=False, name="zor (uniform batches)"),
    "zor-homeostasis": lambda seed: ZorMethod(seed=seed, name="zor homeostasis η=1e-3 t=0.75",
                                              layer_options=HOMEOSTASIS),
    "zor-homeostasis-uniform": lambda seed: ZorMethod(seed=seed, curriculum=False, layer_options=HOMEOSTASIS,
                                                      name="zor homeostasis, uniform batches"),
    "mlp": lambda seed: _named(MLP(SIZES, lr=1e-3, seed=seed), "mlp AdamW lr=1e-3"),
    "mlp-lr3e-3": lambda seed: _named(MLP(SIZES, lr=3e-3, seed=seed), "mlp AdamW lr=3e-3"),
    "mlp-sigmoid": lambda seed: _named(MLP(SIZES, lr=1e-3, output="sigmoid", seed=seed), "mlp AdamW lr=1e-3 sigmoid"),
    "leaky-bptt": lambda seed: LeakyBPTT(SIZES, seed=seed),
    "lif-stdp": lambda seed: LIFSTDP(SIZES[0], SIZES[1], seed=seed),
    "mean": lambda seed: MeanImage(SIZES[0]),
}
DEFAULT_METHODS = ("zor", "mlp", "mlp-lr3e-3", "mlp-sigmoid", "leaky-bptt", "lif-stdp", "mean")


def known() -> list[str]:
    """Every name :func:`build` accepts (the zor-<rule> names included)."""
    from zor.engine.rules import RULES

    return sorted(set(METHODS) | {f"zor-{r}" for r in RULES})


def build(name: str, seed: int) -> Any:
    """The method called ``name``, freshly initialised with ``seed``."""
    if name in METHODS:
        return METHODS[name](seed)
    if name.startswith("zor-"):
        from zor.engine.rules import RULES

        rule = name[4:]
        if rule in RULES:
            return ZorMethod(seed=seed, rule=rule, name=f"zor rule={rule}")
    raise ConfigError(f"unknown method {name!r}: expected one of {known()}")


def is_mlp(name: str) -> bool:
    return name.startswith("mlp")


def is_zor(name: str) -> bool:
    return name == "zor" or name.startswith("zor-")

