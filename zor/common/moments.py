"""Adam's moments (and AdamW's weights) as a learnable step graph holds them: scaled, so a step never decays them.

Adam decays both moments each step before adding the new term:

    m_t = β₁ m_{t−1} + (1 − β₁) g_t          v_t = β₂ v_{t−1} + (1 − β₂) g_t²

As written that is two passes over each moment (a Mul, then an Add) in a graph of standard ONNX
operators, which has no fused multiply-add of two tensors. A ``--learnable`` graph whose spec
lists ``moment_scaling`` holds instead, with τ = ``moment_steps`` (a scalar state: steps since
the moments were last put back to scale 1),

    m̃ = m · β₁^−τ        ṽ = v · β₂^−τ

so that one step is one Add per moment, the decay going into the term's scalar factor:

    τ ← τ + 1;   m̃ ← m̃ + β₁^−τ (1 − β₁) g;   ṽ ← ṽ + β₂^−τ (1 − β₂) g²
    W ← W − m̃ / (√ṽ · β₂^{τ/2} / (k β₁^τ) + eps′ / (k β₁^τ))      (the same Adam step: see learnable_optim)

AdamW's decoupled decay W ← (1 − lr·wd) W is a pass of its own too. With ``decay`` = 1 − lr·wd in the
record, the graph holds W̃ = W · decay^−τ and its products take W = decay^τ W̃ as a scalar on their
small side; the step is W̃ ← clip(W̃ − step / decay^τ, ±max_weight / decay^τ) with the new τ.

β^−τ grows, so the holder puts the moments back to scale 1 (:func:`from_graph`: m = m̃ β₁^τ,
v = ṽ β₂^τ, τ = 0) every ``every`` steps; the spec's ``every`` keeps β^−τ ≤ MAX_GROWTH even at
twice that many steps, and a graph whose betas would grow faster holds plain moments
(:func:`scaling_of` returns None; a decay that would grow faster, or none, leaves W plain: ``decay``
None). The Learner does it with its denormal flush (every 64 steps).

Every reader outside the graph (the Learner's ``state``, the export's check against the
engine) sees W, m and v at scale 1 with ``moment_steps`` = 0; a learner state file holds the
tensors as the graph does (m̃, ṽ and τ), so a resumed session continues bit for bit.

Example:
    >>> import numpy as np
    >>> scaling_of({"optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.01})
    {'every': 64, 'betas': [0.9, 0.999], 'decay': 0.99999}
    >>> scaling_of({"optimizer": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "weight_decay": 0}) is None   # 0.5^−128
    True
    >>> s = {"adam_m_0": np.ones((2, 1), np.float32), "adam_v_0": np.ones((2, 1), np.float32),
    ...      "weight_0": np.ones((2, 1), np.float32), "moment_steps": np.float32(2.0)}
    >>> back = from_graph(s, {"every": 64, "betas": [0.5, 0.999], "decay": 0.5})
    >>> float(back["adam_m_0"][0, 0]), float(back["weight_0"][0, 0]), float(back["moment_steps"])
    (0.25, 0.25, 0.0)
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

__all__ = ["EVERY", "MAX_GROWTH", "STATE", "scaling_of", "factors", "to_graph", "from_graph", "rescale"]

EVERY = 64              # steps between two rescalings (the Learner's denormal flush runs at the same steps)
MAX_GROWTH = 1e12       # largest β^−τ allowed at τ = 2·EVERY (a loaded state may carry up to EVERY steps)
STATE = "moment_steps"  # the scalar state τ


def _slow(b: float) -> bool:
    """b ∈ (0, 1) and b^−2·EVERY ≤ MAX_GROWTH (b ≥ 0.806 at EVERY = 64: 0.9 grows 851× in 64 steps)."""
    return 0.0 < b < 1.0 and -2 * EVERY * math.log(b) <= math.log(MAX_GROWTH)


def scaling_of(spec: Mapping) -> Optional[dict]:
    """{"every": EVERY, "betas": [β₁, β₂], "decay": 1 − lr·wd or None} when a step graph of ``spec`` holds
    scaled moments, else None: Adam or AdamW with lr > 0 and both betas slow enough (β^−2·EVERY ≤ MAX_GROWTH).
    ``decay``: AdamW with a weight decay whose 1 − lr·wd is as slow; else the weights are held plain."""
    if spec.get("optimizer") not in ("adam", "adamw") or not float(spec.get("lr", 0.0)) > 0.0:
        return None
    betas = [float(b) for b in spec["betas"]]
    if not all(_slow(b) for b in betas):
        return None
    decay = 1.0 - float(spec["lr"]) * float(spec.get("weight_decay", 0.0))
    return {"every": EVERY, "betas": betas, "decay": decay if spec["optimizer"] == "adamw" and _slow(decay) else None}


def factors(scaling: Mapping, tau: float) -> dict[str, np.float32]:
    """{"adam_m_": β₁^τ, "adam_v_": β₂^τ, "weight_": decay^τ (with a decay)} as float32: what turns the tensors
    of a state held at τ back to scale 1, by name prefix."""
    b1, b2 = scaling["betas"]
    out = {"adam_m_": np.float32(b1 ** float(tau)), "adam_v_": np.float32(b2 ** float(tau))}
    if scaling.get("decay") is not None:
        out["weight_"] = np.float32(scaling["decay"] ** float(tau))
    return out


def _scaled(state: Mapping, f: dict) -> list[tuple[str, np.float32]]:
    """(name, factor) of every scaled tensor in ``state``."""
    return [(n, f[p]) for n in state for p in f if n.startswith(p)]


def to_graph(state: Mapping[str, np.ndarray], scaling: Optional[dict], tau: int = 0) -> dict[str, np.ndarray]:
    """The state at scale 1 as a graph of ``scaling`` takes it at τ = ``tau``: m̃ = m β₁^−τ, ṽ = v β₂^−τ,
    W̃ = W decay^−τ (new arrays for those; the rest as given)."""
    out = dict(state)
    if scaling is None:
        return out
    for n, f in _scaled(state, factors(scaling, -float(tau))):
        out[n] = (state[n] * f).astype(np.float32)
    out[STATE] = np.asarray(tau, np.float32)
    return out


def from_graph(state: Mapping[str, np.ndarray], scaling: Optional[dict]) -> dict[str, np.ndarray]:
    """The graph's state back at scale 1 (m = m̃ β₁^τ, v = ṽ β₂^τ, W = W̃ decay^τ, τ = 0): new arrays for those."""
    out = dict(state)
    if scaling is None or STATE not in state:
        return out
    for n, f in _scaled(state, factors(scaling, float(state[STATE]))):
        out[n] = state[n] * f
    out[STATE] = np.zeros((), np.float32)
    return out


def rescale(state: dict[str, np.ndarray], scaling: dict) -> None:
    """:func:`from_graph` in place, on the arrays of ``state`` themselves (the Learner's bound buffers)."""
    tau = float(state[STATE])
    if tau == 0.0:
        return
    for n, f in _scaled(state, factors(scaling, tau)):
        np.multiply(state[n], f, out=state[n])
    state[STATE][...] = 0.0
