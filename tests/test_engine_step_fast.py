"""The cheaper learning step's pieces, each against its plain form or a hand-derived value.

- ``Rule.direction``: U = G ⊙ clip(E, 0, 1) in one product where every post unit spikes, and on
  the active post columns only where few spiked (the masked co-activity), equals the two-product
  form; hand examples.
- ``Dense.outer_rows``: O(x, y) ⊙ r with r folded into the small side.
- ``rules.clip_norms``: several updates clipped and scaled at once, bit-identical to ``clip_norm``
  on each.
- the firing-rate EMA of every layer in foreach ops: r ← m r + (1 − m) mean_b(s).
- the optimizer step runs with denormals flushed to zero and leaves the caller's setting as it was.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zor import Layer, Zor
from zor.engine import learning, rules
from zor.engine.connections import Dense

_TINY, _ONE = 1e-310, 1.0


def _flushing() -> bool:
    """Whether this thread's CPU flushes denormals (a float64 denormal times 1 gives 0)."""
    return _TINY * _ONE == 0.0


def test_direction_hand_example():
    """B = 1, a = [2, −1], δ̂ = [0.5, 1], every post unit spiked:
    E = mean_b a = [2, −1] per pre unit → E′ = clip = [1, 0]; G = aᵀ δ̂ = [[1, 2], [−0.5, −1]];
    U = G ⊙ E′ = [[1, 2], [0, 0]]."""
    a = torch.tensor([[2.0, -1.0]])
    d = torch.tensor([[0.5, 1.0]])
    pre = rules.Trace(c=a, s=torch.ones_like(a), a=a)
    post = rules.Trace(c=d, s=torch.ones_like(d), a=d, always=True)
    out = torch.empty(2, 2)
    u = rules.GatedRule().direction(pre, post, d, Dense(2, 2), out)
    assert u is out
    assert torch.equal(u, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    post_some = rules.Trace(c=d, s=torch.ones_like(d), a=d, always=False)
    assert rules.GatedRule().direction(pre, post_some, d, Dense(2, 2), out) is None
    assert rules.CoactivityRule().direction(pre, post, d, Dense(2, 2), out) is None


@pytest.mark.parametrize("rule", ["post_spikes", "gated"])
def test_direction_equals_correlate_then_clip(rule):
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(16, 30, generator=gen) * 2 - 0.3          # some negative, some above 1 after the mean
    d = torch.randn(16, 12, generator=gen)
    pre = rules.Trace(c=a, s=(a > 0).float(), a=a)
    post = rules.Trace(c=d, s=torch.ones_like(d), a=d, always=True)
    r, conn = rules.get_rule(rule), Dense(30, 12)
    e, g = r.correlate(pre, post, d, conn)
    expected = g * e.clamp(0.0, 1.0)
    got = r.direction(pre, post, d, conn, torch.empty(30, 12))
    # float32 products reordered: a few ulps of the largest entry
    assert torch.allclose(got, expected, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(expected.abs().max()))


def test_masked_direction_hand_example():
    """B = 2, a = [[1, 2], [3, 0]], post spikes s = [[1, 0, 0], [0, 0, 0]] (only unit 0 spiked, for
    sample 0), δ̂ = [[0.5, 7, 7], [9, 9, 9]] (gated: the caller's δ̂ ⊙ s would zero the rest; the rule must
    not rely on it). E[:, 0] = (a_0 · 1) / 2 = [0.5, 1] → E′ = [0.5, 1]; G[:, 0] = (a_0 · 0.5 + a_1 · 9) / 2
    = [13.75, 0.5]; U[:, 0] = [6.875, 0.5]; units 1 and 2 never spiked: U[:, 1:] = 0."""
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.5, 7.0, 7.0], [9.0, 9.0, 9.0]])
    out = torch.full((2, 3), float("nan"))                  # whatever the buffer held before
    u = rules.GatedRule().direction(rules.Trace(c=a, s=(a > 0).float(), a=a), rules.Trace(c=s, s=s, a=s), d,
                                    Dense(2, 3), out)
    assert u is out
    assert torch.allclose(u, torch.tensor([[6.875, 0.0, 0.0], [0.5, 0.0, 0.0]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rule", ["post_spikes", "gated"])
@pytest.mark.parametrize("active", [0, 3, 4])
def test_masked_direction_equals_correlate_then_clip(rule, active):
    """Post units 0..active−1 spike for some samples, the rest for none (active ≤ 0.4 · 12: masked)."""
    gen = torch.Generator().manual_seed(active)
    a = torch.rand(16, 30, generator=gen) * 2 - 0.3
    s = torch.zeros(16, 12)
    s[:, :active] = (torch.rand(16, active, generator=gen) < 0.5).float()
    s[0, :active] = 1.0
    r, conn = rules.get_rule(rule), Dense(30, 12)
    pre, post = rules.Trace(c=a, s=(a > 0).float(), a=a), rules.Trace(c=s, s=s, a=s)
    d = r.signal(torch.randn(16, 12, generator=gen), post, top=False)
    e, g = r.correlate(pre, post, d, conn)
    expected = g * e.clamp(0.0, 1.0)
    got = r.direction(pre, post, d, conn, torch.full((30, 12), float("nan")))
    assert got is not None
    s_many = s.clone()
    s_many[0, :7] = 1.0                                     # 7 of 12 > MASKED_BELOW: the full product instead
    assert r.direction(pre, rules.Trace(c=s_many, s=s_many, a=s_many), d, conn, torch.empty(30, 12)) is None
    assert torch.allclose(got, expected, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(expected.abs().max() + 1))


def test_outer_rows_hand_example():
    """x = [[1, 2]], y = [[3]], r = [[0.5], [2]] (B = 1): O(x, y) = [[3], [6]], ⊙ r = [[1.5], [12]]."""
    out = torch.empty(2, 1)
    got = Dense(2, 1).outer_rows(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]]), torch.tensor([[0.5], [2.0]]), out)
    assert got is out and torch.equal(got, torch.tensor([[1.5], [12.0]]))


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
       bound=st.one_of(st.none(), st.floats(0.01, 10.0)), scale=st.floats(0.01, 2.0), seed=st.integers(0, 2**16))
def test_clip_norms_equals_clip_norm_on_each(shapes, bound, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    us = [torch.randn(*s, generator=gen) * 3 for s in shapes]
    expected = [rules.clip_norm(u.clone(), bound, torch.tensor(-scale)) for u in us]
    rules.clip_norms(us, float("inf") if bound is None else bound, -torch.tensor(scale))
    for u, e in zip(us, expected):
        assert torch.equal(u, e)


def test_clip_norms_per_update_bounds():
    """U_1 = [3, 4] (‖U‖ = 5) bound 1 → [0.6, 0.8]; U_2 = [1, 0] bound inf → unchanged; both × −2."""
    us = [torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0])]
    rules.clip_norms(us, torch.tensor([1.0, float("inf")]), -2.0)
    assert torch.allclose(us[0], torch.tensor([-1.2, -1.6]), rtol=0, atol=1e-6)
    assert torch.equal(us[1], torch.tensor([-2.0, 0.0]))


def test_rates_of_every_layer_move_by_their_momentum():
    """θ_0 = 0 and x = 1: every input unit spikes, r_0 = 0.9·0.75 + 0.1·1 = 0.775; the output layer
    (θ = −inf, momentum 0.5) always spikes: r = 0.5·0.75 + 0.5·1 = 0.875."""
    net = Zor([Layer(3), Layer(2), Layer(3, rate_momentum=0.5)], seed=0, device="cpu")
    out, traces = net._forward(torch.ones(4, 3))
    learning.update_rates(net, traces)
    assert torch.allclose(net.rate(0), torch.full((3,), 0.775), rtol=0, atol=1e-7)
    assert torch.allclose(net.rate(2), torch.full((3,), 0.875), rtol=0, atol=1e-7)
    hidden = traces[1].s.mean(dim=0)
    assert torch.allclose(net.rate(1), 0.9 * 0.75 + 0.1 * hidden, rtol=0, atol=1e-7)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero control")
@pytest.mark.parametrize("caller_flushes", [False, True])
def test_optimizer_step_flushes_denormals_and_restores_the_setting(caller_flushes):
    """A moment of 1e-39 (a float32 denormal) with a zero gradient: with denormals flushed the kernel
    reads it as 0, so m ← 0.9·0 + 0.1·0 = 0 exactly (unflushed it would be 9e-40)."""
    net = Zor([Layer(4), Layer(3), Layer(4)], seed=0, device="cpu")
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    net.train_batch(x, x)                                  # the optimizer has its state now
    weights = list(net.weights)
    for w in weights:
        net.optimizer.state[w]["exp_avg"].fill_(1e-39)
        w.grad = torch.zeros_like(w)
    torch.set_flush_denormal(caller_flushes)
    try:
        learning._finish(net, weights)
        assert _flushing() == caller_flushes
    finally:
        torch.set_flush_denormal(False)
    for w in weights:
        assert torch.equal(net.optimizer.state[w]["exp_avg"], torch.zeros_like(w))


def test_step_cost_benchmark_runs_and_writes_its_table(tmp_path, monkeypatch):
    """benchmarks.step_cost end to end on a tiny network: paired rows, phase shares summing to 100 %."""
    import json

    from click.testing import CliRunner

    from benchmarks import step_cost

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)    # the benchmark sets it; restored after the test
    before = torch.get_num_threads()
    out = tmp_path / "cost.json"
    try:
        res = CliRunner().invoke(step_cost.main, ["--sizes", "8-4-8", "--rounds", "2", "--steps", "2", "--warmup", "3",
                                                  "--no-busy", "--json", str(out)])
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    row = data["paired"][0]
    assert row["sizes"] == "8-4-8" and row["zor_ms"] > 0 and row["mlp_ms"] > 0 and row["zor_over_mlp"] > 0
    assert 0.0 <= row["spike_rate"] <= 1.0
    shares = [v for k, v in data["phases"][0].items() if k in step_cost.PHASES]
    assert len(shares) == len(step_cost.PHASES) and abs(sum(shares) - 100.0) < 1e-6
