"""Hand-derived expected values for every rule of the engine.

Each expected number below was worked out by hand from the equations in the module
docstrings (zor/neuron.py, zor/engine/rules.py, zor/engine/network.py); the comments show the sums.
"""

import math

import numpy as np
import pytest
import torch

from zor import Layer, Zor
from zor.engine import neuron, rules
from zor.engine.connections import Dense
from zor.engine.rules import Trace


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def close(got, want, tol=1e-6):
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- neuron
def test_gate_passes_charge_only_where_it_spiked():
    c = t([0.2, 0.7, 1.5], [-1.0, 0.5, 0.51])
    s = neuron.spike(c, torch.tensor([0.5, 0.5, 0.5]))
    # c > θ strictly: 0.5 is not > 0.5
    assert s.tolist() == [[False, True, True], [False, False, True]]
    close(neuron.gate(c, s), [[0.0, 0.7, 1.5], [0.0, 0.0, 0.51]])


def test_fire_gives_float_spikes_and_gate_accepts_them():
    c = t([0.2, 0.7, 1.5], [-1.0, 0.5, 0.51])
    s = neuron.fire(c, torch.tensor([0.5, 0.5, 0.5]))
    assert s.dtype == torch.float32
    close(s, [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])              # 0.5 is not > 0.5
    close(neuron.gate(c, s), [[0.0, 0.7, 1.5], [0.0, 0.0, 0.51]])
    close(neuron.fire(c, torch.full((3,), -math.inf)), [[1.0] * 3] * 2)   # θ = −inf: every unit


def test_stateless_charge_is_the_input():
    x = t([1.0, 2.0])
    assert neuron.charge(x, t([5.0, 5.0]), decay=0.0) is x
    assert neuron.charge(x, None, decay=0.9) is x


def test_decay_reset_refractory_and_floor_by_hand():
    # λ = 0.5, p = 0.1, θ = 1, floor m = 0, one unit; inputs 0.8, 0.8, 0.0, -0.3
    theta = torch.tensor([1.0])
    state = None
    seen = []
    for x in (0.8, 0.8, 0.0, -0.3):
        c = neuron.charge(t([x]), state, 0.5)
        s = neuron.spike(c, theta)
        g = neuron.gate(c, s)
        state = neuron.reset(c, s, refractory=0.1, min_charge=0.0)
        seen.append((c.item(), bool(s.item()), g.item(), state.item()))
    # step 1: c = 0.8, no spike, kept 0.8
    # step 2: c = 0.5·0.8 + 0.8 = 1.2 > 1: spike, g = 1.2, reset to −0.1
    # step 3: c = 0.5·(−0.1) + 0 = −0.05, no spike, below the floor 0 → 0
    # step 4: c = 0.5·0 − 0.3 = −0.3, no spike, floored to 0
    expected = [(0.8, False, 0.0, 0.8), (1.2, True, 1.2, -0.1), (-0.05, False, 0.0, 0.0), (-0.3, False, 0.0, 0.0)]
    for got, want in zip(seen, expected):
        assert got[0] == pytest.approx(want[0]) and got[1] == want[1]
        assert got[2] == pytest.approx(want[2]) and got[3] == pytest.approx(want[3])


def test_reset_without_reset_on_spike_keeps_charge_minus_penalty():
    c, s = t([2.0, 0.3]), torch.tensor([[True, False]])
    close(neuron.reset(c, s, refractory=0.5, reset_on_spike=False), [[1.5, 0.3]])


def test_stateful_layer_carries_charge_between_calls():
    net = Zor([Layer(1, decay=0.5, threshold=1.0, refractory=0.1), Layer(1)], seed=0, device="cpu")
    with torch.no_grad():
        net.weights[0].fill_(1.0)
    outs = [net.forward(t([0.8]), train=False).item() for _ in range(3)]
    # layer 0: c = 0.8 (no spike, out 0); c = 1.2 (spike, sends 1.2, reset −0.1);
    # c = −0.05 + 0.8 = 0.75 (no spike, out 0)
    assert outs == pytest.approx([0.0, 1.2, 0.0])
    net.reset_state()
    assert net.forward(t([0.8]), train=False).item() == 0.0


# ----------------------------------------------------------------------------- rule pieces
def test_novelty_subtraction_by_hand():
    e, r = t([0.5, -0.2]), t([0.2, 0.0])
    e2, r2 = rules.novelty(e, r, factor=0.5, momentum=0.9)
    # R = 0.9·0.2 + 0.1·0.5 = 0.23; E′ = clip(0.5 − 0.5·0.23) = 0.385
    # R = 0.9·0 + 0.1·0.2 = 0.02;  E′ = clip(−0.2 − 0.01) = 0
    close(r2, [[0.23, 0.02]])
    close(e2, [[0.385, 0.0]])


def test_novelty_never_boosts():
    e = torch.rand(20, 30)
    e2, _ = rules.novelty(e, torch.rand(20, 30), factor=0.7, momentum=0.5)
    assert torch.all(e2 <= e.clamp(0, 1) + 1e-7)


def test_clip_norm():
    close(rules.clip_norm(t([3.0, 4.0]), 1.0), [[0.6, 0.8]])
    close(rules.clip_norm(t([0.3, 0.4]), 1.0), [[0.3, 0.4]])
    close(rules.clip_norm(t([3.0, 4.0]), None), [[3.0, 4.0]])
    close(rules.clip_norm(t([3.0, 4.0]), 1.0, scale=-2.0), [[-1.2, -1.6]])     # clip, then × scale
    close(rules.clip_norm(t([3.0, 4.0]), None, scale=0.5), [[1.5, 2.0]])


def test_rate_ema_and_homeostasis_direction():
    rate = torch.tensor([0.5, 0.5])
    rules.update_rate(rate, t([1.0, 0.0], [1.0, 1.0]), momentum=0.9)
    # mean spikes [1, 0.5]: r = 0.9·0.5 + 0.1·[1, 0.5] = [0.55, 0.5]
    close(rate, [0.55, 0.5])
    theta = torch.tensor([1.0, 1.0])
    rules.homeostasis(theta, torch.tensor([0.2, 0.8]), target=0.5, eta=0.1)
    # too quiet (0.2 < 0.5): θ − 0.1·0.3 = 0.97; too busy: θ + 0.1·0.3 = 1.03
    close(theta, [0.97, 1.03])
    rules.homeostasis(theta, torch.tensor([0.2, 0.8]), target=0.5, eta=0.0, bounds=(0.98, 2.0))
    close(theta, [0.98, 1.03])
    # one open side: θ ≥ 0 only; the too-quiet unit stops at 0, the busy one keeps rising
    theta = torch.tensor([0.01, 1.0])
    rules.homeostasis(theta, torch.tensor([0.2, 0.8]), target=0.5, eta=0.1, bounds=(0.0, None))
    close(theta, [0.0, 1.03])
    rules.homeostasis(theta, torch.tensor([0.2, 0.8]), target=0.5, eta=0.1, bounds=(None, 1.0))
    close(theta, [-0.03, 1.0])


@pytest.mark.parametrize(
    "rule, e_expected",
    [
        # pre a = [1, 0.75] (spikes [1, 1]); post a = [1.375, 0.5], post s = [1, 1]
        ("coactivity", [[1.375, 0.5], [1.03125, 0.375]]),   # aᵢᵀ aᵢ₊₁
        ("post_spikes", [[1.0, 1.0], [0.75, 0.75]]),        # aᵢᵀ sᵢ₊₁
        ("gated", [[1.0, 1.0], [0.75, 0.75]]),
        ("normalized", [[1.375, 0.5], [1.375, 0.5]]),       # sᵢᵀ aᵢ₊₁, summed
    ],
)
def test_coactivity_variants(rule, e_expected):
    pre = Trace(c=t([1.0, 0.75]), s=t([1.0, 1.0]), a=t([1.0, 0.75]))
    post = Trace(c=t([1.375, 0.5]), s=t([1.0, 1.0]), a=t([1.375, 0.5]))
    e, g = rules.get_rule(rule).correlate(pre, post, t([0.375, -0.1875]), Dense(2, 2))
    close(e, e_expected)
    close(g, [[0.375, -0.1875], [0.28125, -0.140625]])  # aᵢᵀ δ


def test_normalized_signal_and_gated_signal():
    d = t([3.0, 0.5], [4.0, -0.5])
    post = Trace(c=d, s=t([1.0, 0.0], [0.0, 1.0]), a=d)
    n = rules.get_rule("normalized").signal(d, post, top=False)
    close(n, [[0.6, 0.5 / math.sqrt(0.5)], [0.8, -0.5 / math.sqrt(0.5)]])
    g = rules.get_rule("gated")
    close(g.signal(d, post, top=False), [[3.0, 0.0], [0.0, -0.5]])
    assert g.signal(d, post, top=True) is d


# ----------------------------------------------------------------------------- whole step
def _tiny(rule):
    net = Zor(
        [Layer(2, threshold=0.5, max_update_norm=None, max_weight=None),
         Layer(2, threshold=0.0, max_update_norm=None, max_weight=None),
         Layer(1)],
        rule=rule, optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, error_scaling=False, seed=0, device="cpu",
    )
    with torch.no_grad():
        net.weights[0].copy_(t([1.0, -1.0], [0.5, 2.0]))
        net.weights[1].copy_(t([1.0], [-0.5]))
    return net


@pytest.mark.parametrize(
    "rule, w0, w1",
    [
        # x = [1, 0.75]: a0 = [1, .75]; h1 = [1.375, .5]; out = 1.375 − .25 = 1.125; δ = 0.375
        # top: δ_below = δ W1ᵀ = [.375, −.1875]
        # coactivity: U1 = [.515625·1, .1875·.5625]; U0 = G0 ⊙ clip(a0ᵀa1)
        ("coactivity", [[1.375, -1.09375], [0.78125, 1.947265625]], [[1.515625], [-0.39453125]]),
        # gated: U1 = [.515625·1, .1875·.5]; U0 = a0ᵀ(δ_below ⊙ s1) ⊙ clip(a0ᵀ s1)
        ("gated", [[1.375, -1.1875], [0.7109375, 1.89453125]], [[1.515625], [-0.40625]]),
    ],
)
def test_one_learning_step_by_hand(rule, w0, w1):
    net = _tiny(rule)
    x = t([1.0, 0.75])
    out = net.forward(x)
    assert out.item() == pytest.approx(1.125)
    # the signal reaching the input is δ̂ W0ᵀ, computed with W0 *before* it changes:
    # [.375, −.1875] @ [[1, .5], [−1, 2]] = [.5625, −.1875]
    signal = net.reinforce(t([0.375]), return_signal=True)
    close(signal, [[0.5625, -0.1875]])
    close(net.weights[0], w0)
    close(net.weights[1], w1)


def test_error_scaling_and_weight_clamp():
    net = Zor([Layer(1, max_update_norm=None, max_weight=0.6), Layer(1)], optimizer="sgd", lr=1.0, weight_decay=0.0,
              momentum=0.0, error_scaling=True, min_error_scale=0.01, seed=0, device="cpu")
    with torch.no_grad():
        net.weights[0].fill_(0.5)
    net.forward(t([1.0]))
    net.reinforce(t([0.2]))
    # U = a0 δ ⊙ E′ = 1·0.2·clip(1·1) = 0.2, scaled by mean|δ| = 0.2 → 0.04: W = 0.54
    assert net.weights[0].item() == pytest.approx(0.54)
    net.forward(t([1.0]))
    net.reinforce(t([1.0]))       # U = 1·1 → W = 1.54, clamped to 0.6
    assert net.weights[0].item() == pytest.approx(0.6)


def test_max_update_norm_clips_update_norm():
    net = Zor([Layer(1, max_update_norm=0.1, max_weight=None), Layer(1)], optimizer="sgd", lr=1.0, weight_decay=0.0,
              momentum=0.0, error_scaling=False, seed=0, device="cpu")
    with torch.no_grad():
        net.weights[0].fill_(0.5)
    net.forward(t([1.0]))
    net.reinforce(t([3.0]))       # U = 1·3·clip(1·1) = 3, clipped to norm 0.1
    assert net.weights[0].item() == pytest.approx(0.6)


def test_homeostasis_moves_thresholds_during_training():
    # weights frozen (lr 0): hidden unit 0 always fires, unit 1 never does
    net = Zor([Layer(1), Layer(2, homeostasis_rate=0.05, target_activation=0.2), Layer(1)],
              lr=0.0, seed=0, device="cpu")
    with torch.no_grad():
        net.weights[0].copy_(t([1.0, -1.0]))
    net.train_batch(t([1.0]), t([0.0]))
    # r = 0.9·0.2 + 0.1·[1, 0] = [0.28, 0.18]; θ = 0 − 0.05·(0.2 − r) = [0.004, −0.001]
    close(net.rate(1), [0.28, 0.18])
    close(net.threshold(1), [0.004, -0.001])
    for _ in range(5):
        before = net.threshold(1).clone()
        net.train_batch(t([1.0]), t([0.0]))
        assert net.threshold(1)[0] > before[0] and net.threshold(1)[1] < before[1]


def test_threshold_floor_keeps_gated_values_non_negative_while_training():
    # hidden unit 1 never fires (weight −1): homeostasis would lower θ below 0, the floor stops it at 0
    net = Zor([Layer(1), Layer(2, homeostasis_rate=0.5, target_activation=0.9, threshold_range=(0.0, None)),
               Layer(1)], lr=0.0, seed=0, device="cpu")
    with torch.no_grad():
        net.weights[0].copy_(t([1.0, -1.0]))
    for _ in range(5):
        net.train_batch(t([1.0]), t([0.0]))
    assert net.threshold(1)[0] > 0 and net.threshold(1)[1] == 0.0   # busy unit rises, quiet one floors
    _, traces = net.run(t([1.0], [-2.0]))
    assert (traces[1].a >= 0).all()          # c ≤ 0 never passes the gate


def test_output_threshold_defaults_to_minus_inf():
    net = Zor([Layer(3), Layer(2), Layer(3)], device="cpu")
    assert net.threshold(0).tolist() == [0.0] * 3 and net.threshold(1).tolist() == [0.0] * 2
    assert all(math.isinf(v) and v < 0 for v in net.threshold(2).tolist())
