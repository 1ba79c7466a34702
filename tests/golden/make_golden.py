"""Write the golden tiny checkpoints used by tests/test_export_golden.py.

Each model has hand-set weights and thresholds small enough to follow by hand; the
expected outputs are derived in the test's docstrings, not computed here. Run from
the repository root to regenerate (the files are committed):

    .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from zor import Conv, Layer, Zor

HERE = Path(__file__).parent


def dense() -> Zor:
    """3 → 2 (relu) → 2 (sigmoid output); θ0 = 0.5, θ1 = (0, 0.25)."""
    m = Zor([Layer(3, threshold=0.5), Layer(2, activation_function="relu"),
             Layer(2, activation_function="sigmoid")], seed=0, device="cpu",
            task={"name": "generic", "input": {"range": [0, 1], "preprocessing": "none"}})
    with torch.no_grad():
        m.weights[0].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        m.weights[1].copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        m.threshold(1).copy_(torch.tensor([0.0, 0.25]))
    return m


def stateful() -> Zor:
    """1 (λ = 0.5, refractory 0.1, θ = 1) → 1 output, W = 2."""
    m = Zor([Layer(1, decay=0.5, refractory=0.1, threshold=1.0), Layer(1)], seed=0, device="cpu")
    with torch.no_grad():
        m.weights[0].copy_(torch.tensor([[2.0]]))
    return m


def floor() -> Zor:
    """2 (λ = 0.5, min_charge 0, no reset on spike, refractory 0.25, θ = 1) → 2 output, W = I."""
    m = Zor([Layer(2, decay=0.5, min_charge=0.0, reset_on_spike=False, refractory=0.25, threshold=1.0),
             Layer(2)], seed=0, device="cpu")
    with torch.no_grad():
        m.weights[0].copy_(torch.eye(2))
    return m


def conv() -> Zor:
    """1×3×3 map → Conv(1, k=2) with kernel [[1, 0], [0, 1]], θ = 10 → 1 output, W = ones."""
    m = Zor([Layer(9, shape=(1, 3, 3)), Conv(1, kernel_size=2), Layer(1)], seed=0, device="cpu")
    with torch.no_grad():
        m.weights[0].copy_(torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]))
        m.threshold(1).fill_(10.0)
        m.weights[1].copy_(torch.ones(4, 1))
    return m


MODELS = {"dense": dense, "stateful": stateful, "floor": floor, "conv": conv}

if __name__ == "__main__":
    for name, make in MODELS.items():
        make().save(HERE / f"{name}.zor")
        print("wrote", HERE / f"{name}.zor")
