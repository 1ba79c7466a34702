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
from zor.common.errors import ConfigError
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


# ---------------------------------------------------------------- no host read-backs in the step

@pytest.mark.parametrize("rule", ["coactivity", "normalized", "post_spikes", "gated"])
@pytest.mark.parametrize("scaling", [True, False])
def test_training_step_reads_nothing_back(rule, scaling, no_host_reads):
    """On CUDA a read-back stalls the stream; on CPU the same calls go through these methods, so
    patching them to raise proves the step makes none (after the first step filled the caches)."""
    net = Zor([Layer(30), Layer(20, novelty_factor=0.3), Layer(12, max_update_norm=None), Layer(30)],
              rule=rule, error_scaling=scaling, device="cpu", seed=0)
    x = torch.rand(8, 30, generator=torch.Generator().manual_seed(0))
    net.train_batch(x, x)
    before = net.weights[0].detach().clone()
    with no_host_reads("the training step"):
        for _ in range(3):
            net._train_step(x, x)
    assert not torch.equal(before, net.weights[0]), "the patched steps did not train"


def test_always_spiking_cache_follows_threshold_changes():
    from zor.engine.learning import always_spikes

    net = Zor([Layer(4), Layer(3), Layer(2)], device="cpu", seed=0)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    net.train_batch(x, x[:, :2])
    assert always_spikes(net, 2) is True and always_spikes(net, 1) is False   # output θ = −inf, hidden θ = 0
    net.set_threshold(2, 0.5)                   # changed outside homeostasis: read again
    assert always_spikes(net, 2) is False
    net.set_threshold(1, float("-inf"))
    assert always_spikes(net, 1) is True
    net.train_batch(x, x[:, :2])                # homeostasis keeps −inf at −inf
    assert always_spikes(net, 1) is True and bool(torch.isneginf(net.threshold(1)).all())


def test_always_spiking_layer_with_a_finite_lower_bound_stops_always_spiking():
    from zor.engine.learning import always_spikes

    net = Zor([Layer(4), Layer(3, threshold=float("-inf"), threshold_range=(-2.0, None)), Layer(2)],
              device="cpu", seed=0)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    net.train_batch(x, x[:, :2])                # the clamp lifts θ = −inf to −2
    assert torch.equal(net.threshold(1), torch.full((3,), -2.0))
    assert always_spikes(net, 1) is False


# ---------------------------------------------------------------- thread policy

def test_thread_policy(monkeypatch):
    from zor.engine import threads

    monkeypatch.delenv("ZOR_THREADS", raising=False)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_AT_IMPORT", torch.get_num_threads())
    small = Zor([Layer(784), Layer(64), Layer(784)], device="cpu")
    # 8 · 48 · (784·64·2) = 38.5 MFLOP < 200 MFLOP per thread: one thread
    assert threads.work(small, 48) == 8 * 48 * 784 * 64 * 2
    assert threads.choose_threads(small, 48) == 1
    wide = Zor([Layer(784), Layer(4096), Layer(784)], device="cpu")
    # 8 · 48 · 6.4M = 2.47 GFLOP → 12 threads wanted, capped at torch's count at import
    assert threads.choose_threads(wide, 48) == min(12, threads._AT_IMPORT)
    assert Zor([Layer(4), Layer(2)], device="cpu", threads=3).threads == 3
    assert threads.choose_threads(Zor([Layer(4), Layer(2)], device="cpu", threads=3), 48) == 3
    monkeypatch.setenv("ZOR_THREADS", "2")
    assert threads.choose_threads(small, 48) == 2
    monkeypatch.setenv("ZOR_THREADS", "two")
    with pytest.raises(ConfigError, match="ZOR_THREADS"):
        threads.choose_threads(small, 48)
    with pytest.raises(ConfigError, match="threads must be"):
        Zor([Layer(4), Layer(2)], device="cpu", threads=0)


def test_apply_threads_restores_and_a_user_setting_wins(monkeypatch):
    from zor.engine import threads

    monkeypatch.delenv("ZOR_THREADS", raising=False)
    before = torch.get_num_threads()
    with threads.apply_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setattr(threads, "_AT_IMPORT", before + 1)   # as if the user changed it after import
    assert threads.user_threads() == before


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_direct_fused_optimizer_step_equals_optimizer_step(monkeypatch, optimizer):
    """learning._fused_plan steps each connection through the kernel Optimizer.step calls, with the same arguments,
    as soon as its update is formed: the weights and moments after 10 steps are bit-identical to those of the
    plain optimizer.step() path after all connections."""
    from zor.engine import learning

    x = torch.rand(16, 30, generator=torch.Generator().manual_seed(5))

    def train(direct: bool) -> Zor:
        if not direct:
            monkeypatch.setattr(learning, "_fused_plan", lambda *args: None)
        net = Zor([Layer(30), Layer(20), Layer(30)], optimizer=optimizer, weight_decay=0.05, device="cpu", seed=2)
        for _ in range(10):
            net.train_batch(x, x)
        monkeypatch.undo()
        return net

    fast, plain = train(True), train(False)
    for wf, wp in zip(fast.weights, plain.weights):
        assert torch.equal(wf, wp)
        for key, value in plain.optimizer.state[wp].items():
            assert torch.equal(fast.optimizer.state[wf][key], value), key


def test_train_batch_sets_the_chosen_thread_count(monkeypatch):
    from zor.engine import threads

    monkeypatch.delenv("ZOR_THREADS", raising=False)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_AT_IMPORT", before)
    monkeypatch.setattr(threads, "_engine_set", None)
    x = torch.rand(4, 4)
    try:
        Zor([Layer(4), Layer(4)], device="cpu", threads=2).train_batch(x, x)      # the net's own setting
        assert torch.get_num_threads() == 2
        Zor([Layer(4), Layer(4)], device="cpu").train_batch(x, x)                # the engine's 2 is not the user's:
        assert torch.get_num_threads() == 1                                       # small work → 1 thread
        torch.set_num_threads(2)                                                  # the user's own call wins
        monkeypatch.setattr(threads, "_engine_set", 1)
        monkeypatch.setattr(threads, "_AT_IMPORT", 3)                            # not torch's count at import
        Zor([Layer(4), Layer(4)], device="cpu").train_batch(x, x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
