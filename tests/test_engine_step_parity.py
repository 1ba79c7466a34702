"""The learning step stays what it was: seeded CPU results pinned before the step was made cheaper.

For each rule variant (coactivity, normalized, post_spikes, gated), with novelty on and
off and error scaling on and off, plus conv, sparse-event and stateful networks, a
seeded network takes N = 20 steps on seeded data; the golden file
``tests/golden/engine_step_parity.json`` holds, per case and per connection, Σ W_i,
Σ |W_i|, Σ θ_i, Σ r_i and eight sampled weights, written by this file's
``write_golden()`` from the engine as it was before the speed work (the step's math
must not change: the learnable ONNX export has to equal it). Tolerance: 1e-6 absolute
per sampled value (float32 rounding of reordered sums), 1e-6 · (1 + |value|) for sums
of up to 50k entries, whose float32 rounding grows with their size.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from zor import Layer, Zor
from zor.engine.layer import Conv

GOLDEN = pathlib.Path(__file__).parent / "golden" / "engine_step_parity.json"
STEPS = 20


def _dense(rule: str, novelty: float, scaling: bool) -> tuple[Zor, callable]:
    layers = [Layer(30), Layer(20, novelty_factor=novelty), Layer(12, novelty_factor=novelty), Layer(30)]
    layers[0] = Layer(30, novelty_factor=novelty)
    net = Zor(layers, seed=3, rule=rule, error_scaling=scaling, device="cpu")
    gen = torch.Generator().manual_seed(7)
    data = torch.rand(64, 30, generator=gen)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = data[(torch.arange(16) * 5 + step * 3) % 64]
        return x, x
    return net, batch


def _conv() -> tuple[Zor, callable]:
    net = Zor([Layer(64, shape=(1, 8, 8)), Conv(3, kernel_size=3, stride=2), Layer(10)], seed=1, device="cpu")
    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.rand(32, 64, generator=gen), torch.rand(32, 10, generator=gen)
    return net, lambda step: (xs[(torch.arange(8) + step * 4) % 32], ys[(torch.arange(8) + step * 4) % 32])


def _sparse(rule: str) -> tuple[Zor, callable]:
    net = Zor([Layer(40), Layer(16), Layer(40)], seed=5, rule=rule, device="cpu")
    gen = torch.Generator().manual_seed(4)
    dense = torch.rand(32, 40, generator=gen) * (torch.rand(32, 40, generator=gen) < 0.15)

    def batch(step: int):
        x = dense[(torch.arange(12) + step * 5) % 32]
        return x.to_sparse(), x
    return net, batch


def _stateful() -> tuple[Zor, callable]:
    net = Zor([Layer(20), Layer(14, decay=0.5, min_charge=0.05, refractory=0.1), Layer(20)], seed=9, device="cpu")
    gen = torch.Generator().manual_seed(6)
    data = torch.rand(40, 20, generator=gen)
    return net, lambda step: (data[(torch.arange(10) + step * 3) % 40], data[(torch.arange(10) + step * 3) % 40])


def cases() -> dict:
    out = {}
    for rule in ("coactivity", "normalized", "post_spikes", "gated"):
        for novelty in (0.0, 0.5):
            for scaling in (True, False):
                out[f"{rule}-nov{novelty}-scale{int(scaling)}"] = lambda r=rule, n=novelty, s=scaling: _dense(r, n, s)
        out[f"sparse-{rule}"] = lambda r=rule: _sparse(r)
    out["conv-gated"] = _conv
    out["stateful-gated"] = _stateful
    return out


def summarise(make) -> dict:
    """Train the case for STEPS seeded steps; return its sums and sampled weights."""
    net, batch = make()
    for step in range(STEPS):
        net.train_batch(*batch(step))
    res = {}
    for i, w in enumerate(net.weights):
        flat = w.detach().flatten().double()
        idx = torch.linspace(0, flat.numel() - 1, 8).long()
        res[f"w{i}"] = {"sum": float(flat.sum()), "abs": float(flat.abs().sum()),
                        "samples": [float(v) for v in flat[idx]]}
    for i in range(len(net.layers)):
        th = net.threshold(i).double()
        res[f"theta{i}"] = float(th[torch.isfinite(th)].sum()) if torch.isfinite(th).any() else 0.0
        res[f"rate{i}"] = float(net.rate(i).double().sum())
    return res


def write_golden() -> None:
    GOLDEN.write_text(json.dumps({name: summarise(make) for name, make in cases().items()}, indent=1) + "\n")


def _close(got: float, want: float, tol: float) -> bool:
    return abs(got - want) <= tol


@pytest.mark.parametrize("name", sorted(cases()))
def test_step_matches_the_pinned_results(name):
    torch.set_num_threads(1)     # same reduction order as when the golden file was written
    want = json.loads(GOLDEN.read_text())[name]
    got = summarise(cases()[name])
    failures = []
    for key, value in want.items():
        if isinstance(value, dict):
            for part in ("sum", "abs"):
                if not _close(got[key][part], value[part], 1e-6 * (1 + abs(value[part]))):
                    failures.append(f"{key}.{part}: {got[key][part]!r} != {value[part]!r}")
            for j, (g, v) in enumerate(zip(got[key]["samples"], value["samples"])):
                if not _close(g, v, 1e-6):
                    failures.append(f"{key}.samples[{j}]: {g!r} != {v!r}")
        elif not _close(got[key], value, 1e-6 * (1 + abs(value))):
            failures.append(f"{key}: {got[key]!r} != {value!r}")
    assert not failures, f"{name}: " + "; ".join(failures)


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_golden()
