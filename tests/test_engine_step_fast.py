"""The cheaper learning step's pieces, each against its plain form or a hand-derived value.

- ``Rule.direction``: U = G ⊙ clip(E, 0, 1), E′ folded into the small side where every post unit
  spikes, G and E in two buffers otherwise, equals the correlate-then-clip form; hand examples.
- the masked co-activity: ``Rule.direction_columns`` on the active post units (hand example),
  ``learning._active_columns`` (which units, and when), the masked gradient equals the full one.
- ``Dense.outer_rows``: O(x, y) ⊙ r with r folded into the small side.
- ``rules.clip_norm`` with max_norm = 1 (two ops fewer) bit-identical to the general factor;
  ``rules.clip_norms``: several updates at once, bit-identical to ``clip_norm`` on each.
- the firing-rate EMA of every layer: r ← m r + (1 − m) mean_b(s).
- the optimizer step (all connections at once, or one connection at a time through the fused
  kernel) runs with denormals flushed to zero and leaves the caller's setting as it was.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zor import Layer, Zor
from zor.engine import buffers, learning, rules
from zor.engine.connections import Dense

_TINY, _ONE = 1e-310, 1.0


def _flushing() -> bool:
    """Whether this thread's CPU flushes denormals (a float64 denormal times 1 gives 0)."""
    return _TINY * _ONE == 0.0


def test_direction_hand_example():
    """B = 1, a = [2, −1], δ̂ = [0.5, 1], every post unit spiked:
    E = mean_b a = [2, −1] per pre unit → E′ = clip = [1, 0]; G = aᵀ δ̂ = [[1, 2], [−0.5, −1]];
    U = G ⊙ E′ = [[1, 2], [0, 0]]. The same post units as a plain trace (s = 1, not marked as always
    spiking) give the same U through the two-product form."""
    a = torch.tensor([[2.0, -1.0]])
    d = torch.tensor([[0.5, 1.0]])
    pre = rules.Trace(c=a, s=torch.ones_like(a), a=a)
    post = rules.Trace(c=d, s=torch.ones_like(d), a=d, always=True)
    out = torch.empty(2, 2)
    u = rules.GatedRule().direction(pre, post, d, Dense(2, 2), out)
    assert u is out
    assert torch.equal(u, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    post_some = rules.Trace(c=d, s=torch.ones_like(d), a=d, always=False)
    work = torch.full((2, 2), float("nan"))                 # whatever the scratch held before
    u2 = rules.GatedRule().direction(pre, post_some, d, Dense(2, 2), torch.empty(2, 2), work)
    assert torch.equal(u2, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_direction_of_the_coactivity_rule_hand_example():
    """coactivity, B = 1, a_i = [2], a_{i+1} = [0.25, 3], δ̂ = [0.5, 1]: E = [[0.5, 6]] → E′ = [[0.5, 1]];
    G = [[1, 2]]; U = [[0.5, 2]]."""
    a, post_a, d = torch.tensor([[2.0]]), torch.tensor([[0.25, 3.0]]), torch.tensor([[0.5, 1.0]])
    pre = rules.Trace(c=a, s=torch.ones_like(a), a=a)
    post = rules.Trace(c=post_a, s=torch.ones_like(post_a), a=post_a)
    u = rules.CoactivityRule().direction(pre, post, d, Dense(1, 2), torch.empty(1, 2))
    assert torch.equal(u, torch.tensor([[0.5, 2.0]]))


@pytest.mark.parametrize("rule", ["coactivity", "normalized", "post_spikes", "gated"])
@pytest.mark.parametrize("always", [True, False])
def test_direction_equals_correlate_then_clip(rule, always):
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(16, 30, generator=gen) * 2 - 0.3          # some negative, some above 1 after the mean
    d = torch.randn(16, 12, generator=gen)
    s = torch.ones_like(d) if always else (torch.rand(16, 12, generator=gen) < 0.5).float()
    pre = rules.Trace(c=a, s=(a > 0).float(), a=a)
    post = rules.Trace(c=d, s=s, a=d * s, always=always)
    r, conn = rules.get_rule(rule), Dense(30, 12)
    e, g = r.correlate(pre, post, d, conn)
    expected = g * e.clamp(0.0, 1.0)
    got = r.direction(pre, post, d, conn, torch.empty(30, 12), torch.empty(30, 12))
    # float32 products reordered: a few ulps of the largest entry
    assert torch.allclose(got, expected, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(expected.abs().max()))


def test_masked_direction_hand_example():
    """B = 2, a = [[1, 2], [3, 0]], post spikes s = [[1, 0, 0], [0, 0, 0]] (only unit 0 spiked, for
    sample 0), δ̂ = [[0.5, 7, 7], [9, 9, 9]] (gated: the caller's δ̂ ⊙ s would zero the rest; the rule must
    not rely on it). E[:, 0] = (a_0 · 1) / 2 = [0.5, 1] → E′ = [0.5, 1]; G[:, 0] = (a_0 · 0.5 + a_1 · 9) / 2
    = [13.75, 0.5]; U[:, 0] = [6.875, 0.5]: the columns of the active units, here unit 0 alone."""
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.5, 7.0, 7.0], [9.0, 9.0, 9.0]])
    work = torch.full((2 * 2 * 1,), float("nan"))           # whatever the scratch held before
    u = rules.GatedRule().direction_columns(rules.Trace(c=a, s=(a > 0).float(), a=a), rules.Trace(c=s, s=s, a=s), d,
                                            Dense(2, 3), torch.tensor([0]), work)
    assert torch.allclose(u, torch.tensor([[6.875], [0.5]]), rtol=0, atol=1e-6)
    with pytest.raises(NotImplementedError, match="coactivity"):
        rules.CoactivityRule().direction_columns(rules.Trace(c=a, s=a, a=a), rules.Trace(c=s, s=s, a=s), d,
                                                 Dense(2, 3), torch.tensor([0]))


def _masked_case(active: int, n_out: int = 12):
    """A 30 → n_out → 30 network whose hidden units 0..active−1 spike for some of the 16 samples and the rest for
    none, with the traces of one training pass."""
    net = Zor([Layer(30), Layer(n_out), Layer(30)], seed=active, device="cpu")
    gen = torch.Generator().manual_seed(active)
    x = torch.rand(16, 30, generator=gen)
    theta = torch.full((n_out,), 1e9)
    theta[:active] = -1e9 if active else 1e9
    net.set_threshold(1, theta)
    out, traces = net._forward(x)
    learning.update_rates(net, traces)
    return net, traces


@pytest.mark.parametrize("active", [0, 1, 4])
def test_active_columns_are_the_units_that_spiked_below_the_share(active):
    """Units 0..active−1 spiked: those columns (4 of 12 ≤ 0.4 · 12 = 4.8); 5 of 12 > 4.8: None (the full product);
    a layer that always spikes: None."""
    net, traces = _masked_case(active)
    cols, spiked = learning._active_columns(net, 0, traces[1])
    assert torch.equal(cols, torch.arange(active)) and torch.equal(torch.nonzero(spiked).squeeze(1), cols)
    net5, traces5 = _masked_case(5)
    assert learning._active_columns(net5, 0, traces5[1]) is None
    assert learning._active_columns(net, 1, traces[2]) is None            # the output: θ = −inf


@pytest.mark.parametrize("rule", ["post_spikes", "gated"])
@pytest.mark.parametrize("active", [0, 3, 4])
def test_masked_update_equals_the_full_one(rule, active):
    """The gradient of W_0 through the masked co-activity (U on the active columns, clipped there, scattered into
    a buffer holding NaN) equals the one through the full product (MASKED_BELOW = 0 forces it)."""
    net, traces = _masked_case(active)
    net.rule = rules.get_rule(rule)
    d = net.rule.signal(torch.randn(16, 12, generator=torch.Generator().manual_seed(9)), traces[1], top=False)
    w, scale = net.weights[0], torch.tensor(-0.3)
    buf, work = torch.full_like(w, float("nan")), torch.full_like(w, float("nan"))
    got = learning._update(net, 0, w, traces[0], traces[1], d, scale, buf, work).clone()
    old = learning.MASKED_BELOW
    try:
        learning.MASKED_BELOW = 0.0
        full = learning._update(net, 0, w, traces[0], traces[1], d, scale, buf, work).clone()
    finally:
        learning.MASKED_BELOW = old
    assert torch.isfinite(got).all()
    assert torch.equal(got[:, active:], torch.zeros(30, 12 - active))
    assert torch.allclose(got, full, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(full.abs().max() + 1))


def test_masked_buffer_is_zero_outside_the_units_that_spiked():
    """Units {0, 2, 5} spiked, their columns written with 7; then units {2, 3}: the columns of 0 and 5 (fallen
    silent) are set to 0, column 2 still holds 7 (the caller writes it), every other column stays 0; a new shape
    starts from zeros."""
    net = Zor([Layer(4), Layer(6), Layer(4)], seed=0, device="cpu")
    w = net.weights[0]
    first = torch.tensor([0.5, 0.0, 0.25, 0.0, 0.0, 1.0])
    buf = buffers.masked(net, 0, w, first)
    assert torch.equal(buf, torch.zeros(4, 6))
    buf[:, [0, 2, 5]] = 7.0
    again = buffers.masked(net, 0, w, torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    assert again is buf
    expected = torch.zeros(4, 6)
    expected[:, 2] = 7.0
    assert torch.equal(again, expected)
    assert torch.equal(buffers.masked(net, 0, torch.empty(3, 6), first), torch.zeros(3, 6))


def test_outer_rows_hand_example():
    """x = [[1, 2]], y = [[3]], r = [[0.5], [2]] (B = 1): O(x, y) = [[3], [6]], ⊙ r = [[1.5], [12]]."""
    out = torch.empty(2, 1)
    got = Dense(2, 1).outer_rows(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]]), torch.tensor([[0.5], [2.0]]), out)
    assert got is out and torch.equal(got, torch.tensor([[1.5], [12.0]]))
    flat = Dense(2, 1).outer_rows(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]]), torch.tensor([0.5, 2.0]), out)
    assert torch.equal(flat, torch.tensor([[1.5], [12.0]]))             # the same factor as an (n_i,) vector


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 9), st.integers(1, 9)), size=st.floats(1e-14, 1e3), scale=st.floats(0.01, 2.0),
       seed=st.integers(0, 2**16))
def test_clip_norm_with_bound_one_equals_the_general_factor(shape, size, scale, seed):
    """max_norm = 1: U · 1/max(‖U‖, 1) · s is bit-identical to U · min(1, (1/max(‖U‖, 1e-12)) · 1) · s, for ‖U‖
    from far below 1e-12 (after the product below) to far above 1."""
    u = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    u *= size / float(rules.update_norm(u).clamp_min(1e-30))
    s = torch.tensor(-scale)
    f = (rules.update_norm(u).clamp_min(1e-12).reciprocal() * 1.0).clamp(max=1.0) * s
    assert torch.equal(rules.clip_norm(u.clone(), 1.0, s), u * f)


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
@pytest.mark.parametrize("per_connection", [False, True])
def test_optimizer_step_flushes_denormals_and_restores_the_setting(caller_flushes, per_connection):
    """A moment of 1e-39 (a float32 denormal) with a zero gradient: with denormals flushed the kernel
    reads it as 0, so m ← 0.9·0 + 0.1·0 = 0 exactly (unflushed it would be 9e-40). Both the step of all
    connections at once (learning._finish) and one connection's step (learning._adam_step)."""
    net = Zor([Layer(4), Layer(3), Layer(4)], seed=0, device="cpu")
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    net.train_batch(x, x)                                  # the optimizer has its state now
    weights = list(net.weights)
    for w in weights:
        net.optimizer.state[w]["exp_avg"].fill_(1e-39)
        w.grad = torch.zeros_like(w)
    torch.set_flush_denormal(caller_flushes)
    try:
        if per_connection:
            fused = learning._fused_plan(net.optimizer, weights)
            for i, w in enumerate(weights):
                learning._adam_step(fused, i, w, torch.zeros_like(w), 1.0)
        else:
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


def test_fused_step_of_the_optimizers_own_parameters_equals_optimizer_step():
    """learning._fused_adam_step(opt) (no weights given: the optimizer's parameters, from their .grad) moves the
    weights and moments as optimizer.step() does, bit for bit, and sets .grad back to None."""
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(3))
    nets = [Zor([Layer(6), Layer(4), Layer(6)], seed=1, device="cpu") for _ in range(2)]
    for net in nets:
        net.train_batch(x, x)                               # the optimizer has its state now
        for w in net.weights:
            w.grad = torch.full_like(w, 0.25)
    assert learning._fused_adam_step(nets[0].optimizer)
    nets[1].optimizer.step()
    for wa, wb in zip(nets[0].weights, nets[1].weights):
        assert wa.grad is None and torch.equal(wa, wb)
        assert torch.equal(nets[0].optimizer.state[wa]["exp_avg"], nets[1].optimizer.state[wb]["exp_avg"])
