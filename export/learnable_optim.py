"""The optimiser's step of a learnable step graph, per row block of W_i (zor.export.learnable_graph).

From grad = u · factor (u the update of the block, factor the step's scalar −ε·clip):

    AdamW: W ← W (1 − lr·wd);  Adam: g ← g + wd·W
    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²
    W ← W − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
      = W − m / (√v/k + eps·√(1 − β₂ᵗ)/k),  k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)   (the affine √v/k + c one
      BatchNormalization pass: mean 0, variance 1, epsilon 0)
    SGD: g ← g + wd·W;  b ← μ b + g (b = 0 at the start);  W ← W − lr·b
    clamp W ← clip(W, −max_weight, max_weight)

Scaled moments (spec["moment_scaling"], zor.common.moments): the graph holds m̃ = m β₁^−τ, ṽ = v β₂^−τ with
τ = moment_steps, so each moment is one Add a step: m̃ ← m̃ + β₁^−τ (1 − β₁) g, ṽ ← ṽ + β₂^−τ (1 − β₂) g², and
W ← W − m̃ / (√ṽ · β₂^{τ/2}/(k β₁^τ) + eps·√(1 − β₂ᵗ)/(k β₁^τ)): every β^τ is a scalar of the step.

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


def adam_scalars(g: Any, spec: dict, t: str, tau: Optional[str] = None, w_scale: Optional[str] = None) -> dict[str, str]:
    """The step's scalars of Adam: k = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ), eps' = eps·√(1 − β₂ᵗ), and (lr > 0) the affine's
    ``scale`` = 1/k and ``shift`` = eps'/k (see optimise); with scaled moments (``tau``, the new τ): ``p1`` = β₁^−τ,
    ``p2`` = β₂^−τ, scale = p1/(k √p2) and shift = p1·eps'/k; with AdamW's held W̃ (``w_scale`` = decay^τ of the
    old τ): ``w_new`` = decay^τ of the new one, scale and shift times w_new (the step on W̃ is step / w_new)."""
    b1, b2 = spec["betas"]
    bc1 = g.op("Sub", g.const(1.0), g.op("Pow", g.const(b1), t))
    sb2 = g.op("Sqrt", g.op("Sub", g.const(1.0), g.op("Pow", g.const(b2), t)))
    k = g.op("Div", g.op("Mul", g.const(spec["lr"]), sb2), bc1)
    eps = g.op("Mul", g.const(spec["eps"]), sb2)
    if spec["lr"] == 0.0:
        return {"k": k, "eps": eps}
    inv_k, eps_k = g.op("Reciprocal", k), g.op("Div", eps, k)
    if tau is None:
        return {"k": k, "eps": eps, "scale": inv_k, "shift": eps_k}
    neg = g.op("Neg", tau)
    p1, p2 = g.op("Pow", g.const(b1), neg), g.op("Pow", g.const(b2), neg)     # β^−τ
    if w_scale is not None:
        w_new = g.op("Mul", w_scale, g.const(spec["moment_scaling"]["decay"]))
        inv_k, eps_k = g.op("Mul", inv_k, w_new), g.op("Mul", eps_k, w_new)
    out = {"k": k, "eps": eps, "p1": p1, "p2": p2, "scale": g.op("Div", g.op("Mul", inv_k, p1), g.op("Sqrt", p2)),
           "shift": g.op("Mul", eps_k, p1)}
    if w_scale is not None:
        out["w_new"] = w_new
    return out


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
        m_in, v_in = _moment_terms(g, spec, u, factor, w, sc)
        if spec["optimizer"] == "adamw" and (sc is None or "w_new" not in sc):   # held W̃: no decay pass
            w = g.op("Mul", w, g.const(1.0 - lr * wd))
        m_old, v_old = f"adam_m_{i}{sfx}", f"adam_v_{i}{sfx}"
        if sc is None or "p1" not in sc:                    # plain moments: decayed here, a pass each
            b1, b2 = spec["betas"]
            m_old, v_old = g.op("Mul", m_old, g.const(b1)), g.op("Mul", v_old, g.const(b2))
        m = g.op("Add", m_old, m_in, out=f"adam_m_{i}_out{sfx}")
        v = g.op("Add", v_old, v_in, out=f"adam_v_{i}_out{sfx}")
        if lr > 0.0:                    # k·m/(√v + eps') = m / (√v/k + eps'/k): one pass fewer
            width = spec["sizes"][i] if turned(spec, i) else spec["sizes"][i + 1]     # a block's columns
            step = g.op("Div", m, _affine(g, g.op("Sqrt", v), sc["scale"], sc["shift"], width))
        else:
            step = g.op("Mul", g.op("Div", m, g.op("Add", g.op("Sqrt", v), sc["eps"])), sc["k"])
        new = g.op("Sub", w, step, out=out)
    if mw is not None and sc is not None and "w_new" in sc:       # held W̃: |W| ≤ mw is |W̃| ≤ mw / decay^τ
        hi = g.once(("clip", mw), lambda: g.op("Div", g.const(float(mw)), sc["w_new"]))
        lo = g.once(("-clip", mw), lambda: g.op("Neg", hi))
        g.op("Clip", new, lo, hi, out=f"weight_{i}_out{sfx}")
    elif mw is not None:
        g.op("Clip", new, g.const(-float(mw)), g.const(float(mw)), out=f"weight_{i}_out{sfx}")


def _moment_terms(g: Any, spec: dict, u: Update, factor: str, w: str,
                  sc: Optional[dict]) -> tuple[str, str]:
    """The terms added to the block's moments: (1 − β₁)·grad and (1 − β₂)·grad², each times β^−τ (sc["p1"],
    sc["p2"]) where the moments are scaled; grad = u·factor, folded as (1 − β₁)·factor·u and (1 − β₂)·factor²·u²
    (on the K active rows of a masked block), or with Adam's L2 term grad = u·factor + wd·W, a pass of its own."""
    b1, b2 = spec["betas"]
    p1, p2 = sc.get("p1") if sc else None, sc.get("p2") if sc else None
    c1 = g.once(("c1", p1), lambda: g.const(1.0 - b1) if p1 is None else g.op("Mul", p1, g.const(1.0 - b1)))
    c2 = g.once(("c2", p2), lambda: g.const(1.0 - b2) if p2 is None else g.op("Mul", p2, g.const(1.0 - b2)))
    wd = spec["weight_decay"]
    if spec["optimizer"] == "adam" and wd != 0.0:          # L2 in the gradient: no folding
        grad = g.op("Add", _scaled(g, u, factor), g.op("Mul", w, g.const(wd)))
        return g.op("Mul", grad, c1), g.op("Mul", g.op("Mul", grad, grad), c2)
    k1 = g.once(("k1", factor), lambda: g.op("Mul", factor, c1))
    k2 = g.once(("k2", factor), lambda: g.op("Mul", square(g, factor), c2))
    return _scaled(g, u, k1), _scaled(g, (square(g, u[0]), u[1]) if isinstance(u, tuple) else square(g, u), k2)


def _affine(g: Any, x: str, scale: str, shift: str, width: int) -> str:
    """x·scale + shift (x (n, width), scale and shift scalars) in one pass: BatchNormalization with
    mean 0, variance 1 and epsilon 0 is exactly that affine map per column (Mul then Add are two passes)."""
    ones = g.once(("ones", width), lambda: g.const(np.ones(width, np.float32)))
    return g.op("BatchNormalization", x, g.once(("scale", scale, width), lambda: g.op("Mul", ones, scale)),
                g.once(("shift", shift, width), lambda: g.op("Mul", ones, shift)),
                g.once(("zeros", width), lambda: g.const(np.zeros(width, np.float32))), ones, epsilon=0.0)


def square(g: Any, x: str) -> str:
    return g.once(("square", x), lambda: g.op("Mul", x, x))
