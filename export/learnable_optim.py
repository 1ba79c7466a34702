"""The optimiser's step of a learnable step graph, per row block of W_i (zor.export.learnable_graph).

From grad = u · factor (u the update of the block, factor the step's scalar −ε·clip):

    AdamW: W ← W (1 − lr·wd);  Adam: g ← g + wd·W
    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²
    W ← W − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
      = W − m / (√v/k + eps·√(1 − β₂ᵗ)/k),  k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)   (the affine √v/k + c one
      BatchNormalization pass: mean 0, variance 1, epsilon 0)
    SGD: g ← g + wd·W;  b ← μ b + g (b = 0 at the start);  W ← W − lr·b
    clamp W ← clip(W, −max_weight, max_weight)

A block of a masked connection (zor.export.learnable_masked) comes as (Uᵀ_K, rows): the moments' terms
(1 − β₁)·factor·u and (1 − β₂)·factor²·u² are formed on the K active rows and gathered into the block
(two row copies instead of three passes over it).

Example:
    >>> square.__name__
    'square'
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .learnable_masked import turned

__all__ = ["adam_scalars", "optimise", "square"]


def adam_scalars(g: Any, spec: dict, t: str) -> dict[str, str]:
    """The step's scalars of Adam: k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) and eps' = eps·√(1 − β₂ᵗ) (see optimise)."""
    b1, b2 = spec["betas"]
    bc1 = g.op("Sub", g.const(1.0), g.op("Pow", g.const(b1), t))
    sb2 = g.op("Sqrt", g.op("Sub", g.const(1.0), g.op("Pow", g.const(b2), t)))
    k = g.op("Div", g.op("Mul", g.const(spec["lr"]), sb2), bc1)
    eps = g.op("Mul", g.const(spec["eps"]), sb2)
    if spec["lr"] == 0.0:
        return {"k": k, "eps": eps}
    return {"k": k, "eps": eps, "1/k": g.op("Reciprocal", k), "eps/k": g.op("Div", eps, k)}


Update = Union[str, tuple[str, str]]   # a block's u, or (Uᵀ_K, its rows of the block) of a masked connection


def _scaled(g: Any, u: Update, k: str) -> str:
    """The block's u · k: a product over the block, or for a masked one Uᵀ_K · k (on the K active rows, once)
    gathered into the block (a copy instead of a pass)."""
    if isinstance(u, str):
        return g.op("Mul", u, k)
    small, rows = u
    return g.op("Gather", g.once(("scaled", small, k), lambda: g.op("Mul", small, k)), rows, axis=0)


def optimise(g: Any, spec: dict, i: int, u: Update, factor: str, sc: Optional[dict], part: tuple) -> None:
    """One optimiser step of the rows ``part`` = (suffix, lo, hi) of W_i from grad = u · factor; writes
    weight_i_out and the moments' outputs (of that block). ``u``: the block's update, or (Uᵀ_K, rows) where
    the update is formed on the K active post units (see _scaled).

    Adam's W ← W − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps) is computed as
    W − m / (√v/k + eps·√(1 − β₂ᵗ)/k), k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ), the affine map of √v in one
    BatchNormalization pass (lr = 0: W − k·m/(√v + eps·√(1 − β₂ᵗ))): the same value, fewer passes;
    the scalar factors (1 − β₁)·factor and (1 − β₂)·factor² fold into the moments' updates."""
    sfx = part[0]
    w, lr, wd = f"weight_{i}{sfx}", spec["lr"], spec["weight_decay"]
    mw = spec["layers"][i]["max_weight"]
    out = None if mw is not None else f"weight_{i}_out{sfx}"
    if spec["optimizer"] == "sgd":
        grad = _scaled(g, u, factor)
        if wd != 0.0:
            grad = g.op("Add", grad, g.op("Mul", w, g.const(wd)))
        buf = g.op("Add", g.op("Mul", f"momentum_{i}{sfx}", g.const(spec["momentum"])), grad,
                   out=f"momentum_{i}_out{sfx}")
        new = g.op("Sub", w, g.op("Mul", buf, g.const(lr)), out=out)
    else:
        b1, b2 = spec["betas"]
        if spec["optimizer"] == "adam" and wd != 0.0:      # L2 in the gradient: no folding
            grad = g.op("Add", _scaled(g, u, factor), g.op("Mul", w, g.const(wd)))
            m_in, v_in = g.op("Mul", grad, g.const(1.0 - b1)), g.op("Mul", g.op("Mul", grad, grad), g.const(1.0 - b2))
        else:                                               # (1 − β₁)·factor·u and (1 − β₂)·factor²·u²
            k1 = g.once(("k1", factor), lambda: g.op("Mul", factor, g.const(1.0 - b1)))
            k2 = g.once(("k2", factor), lambda: g.op("Mul", square(g, factor), g.const(1.0 - b2)))
            m_in = _scaled(g, u, k1)
            v_in = _scaled(g, (square(g, u[0]), u[1]) if isinstance(u, tuple) else square(g, u), k2)
        if spec["optimizer"] == "adamw":
            w = g.op("Mul", w, g.const(1.0 - lr * wd))
        m = g.op("Add", g.op("Mul", f"adam_m_{i}{sfx}", g.const(b1)), m_in, out=f"adam_m_{i}_out{sfx}")
        v = g.op("Add", g.op("Mul", f"adam_v_{i}{sfx}", g.const(b2)), v_in, out=f"adam_v_{i}_out{sfx}")
        if lr > 0.0:                    # k·m/(√v + eps') = m / (√v/k + eps'/k): one pass fewer
            width = spec["sizes"][i] if turned(spec, i) else spec["sizes"][i + 1]     # a block's columns
            step = g.op("Div", m, _affine(g, g.op("Sqrt", v), sc["1/k"], sc["eps/k"], width))
        else:
            step = g.op("Mul", g.op("Div", m, g.op("Add", g.op("Sqrt", v), sc["eps"])), sc["k"])
        new = g.op("Sub", w, step, out=out)
    if mw is not None:
        g.op("Clip", new, g.const(-float(mw)), g.const(float(mw)), out=f"weight_{i}_out{sfx}")


def _affine(g: Any, x: str, scale: str, shift: str, width: int) -> str:
    """x·scale + shift (x (n, width), scale and shift scalars) in one pass: BatchNormalization with
    mean 0, variance 1 and epsilon 0 is exactly that affine map per column (Mul then Add are two passes)."""
    ones = g.once(("ones", width), lambda: g.const(np.ones(width, np.float32)))
    return g.op("BatchNormalization", x, g.once(("scale", scale, width), lambda: g.op("Mul", ones, scale)),
                g.once(("shift", shift, width), lambda: g.op("Mul", ones, shift)),
                g.once(("zeros", width), lambda: g.const(np.zeros(width, np.float32))), ones, epsilon=0.0)


def square(g: Any, x: str) -> str:
    return g.once(("square", x), lambda: g.op("Mul", x, x))
