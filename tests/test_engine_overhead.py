"""The engine's per-step shortcuts (docs/notes/step-cost.md) give the same results as the long way round.

Each shortcut is checked against what it replaces: the weight list against nn.ParameterList, the one-sum
finiteness check against an elementwise one, the autoencoder's single check against two, the kept thread plan
against the policy decided anew, the always-spiking layer's s ≡ 1 against [c > −inf].
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zor import Layer, Zor
from zor.common.errors import NonFiniteError
from zor.engine import inputs, neuron, threads
from zor.engine.layer import WeightList


def _ws() -> list[nn.Parameter]:
    return [nn.Parameter(torch.full((2, 3), float(k)), requires_grad=False) for k in range(3)]


def test_weight_list_reads_like_a_parameter_list():
    ws = _ws()
    fast, plain = WeightList(ws), nn.ParameterList(ws)
    assert [w is p for w, p in zip(fast, plain)] == [True] * 3
    for idx in (0, 1, 2, -1, -3):
        assert fast[idx] is plain[idx]
    assert [w is p for w, p in zip(fast[1:], plain[1:])] == [True, True]
    assert list(fast.state_dict()) == list(plain.state_dict()) == ["0", "1", "2"]
    with pytest.raises(IndexError):
        fast[3]
    fast[1] = torch.zeros(2, 3)                         # replacing an item keeps its place
    assert [float(w.detach()[0, 0]) for w in fast] == [0.0, 0.0, 2.0] and fast[1].shape == (2, 3)


def test_network_buffers_and_weights_are_the_registered_ones():
    net = Zor([Layer(4), Layer(3), Layer(2)], seed=0, device="cpu")
    for i in range(3):
        assert net.threshold(i) is getattr(net, f"threshold_{i}")
        assert net.rate(i) is getattr(net, f"rate_{i}")
    assert net.novelty_trace(1) is getattr(net, "novelty_1")
    assert [w is p for w, p in zip(net.weights, net.parameters())] == [True, True]
    with pytest.raises(KeyError):
        net.threshold(3)


def test_finite_sum_that_overflows_still_passes():
    x = np.full((2, 3), 3e38, np.float32)               # every entry finite, the float32 sum is inf
    assert torch.equal(inputs.as_batch(x, 3, "input", torch.device("cpu")), torch.from_numpy(x))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_every_non_finite_entry_is_counted(rows, cols, data):
    x = np.zeros((rows, cols), np.float32)
    cells = data.draw(st.sets(st.integers(0, rows * cols - 1), max_size=rows * cols))
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    x.flat[sorted(cells)] = bad
    if not cells:
        assert inputs.as_batch(x, cols, "input", torch.device("cpu")).shape == (rows, cols)
        return
    with pytest.raises(NonFiniteError, match=f"input: expected finite values, got {len(cells)} NaN/inf entries"):
        inputs.as_batch(x, cols, "input", torch.device("cpu"))


def test_autoencoder_target_checked_once_gives_the_same_steps():
    x = np.random.default_rng(0).random((8, 6))         # float64: both sides converted to float32
    same = Zor([Layer(6), Layer(4), Layer(6)], seed=1, device="cpu")
    apart = Zor([Layer(6), Layer(4), Layer(6)], seed=1, device="cpu")
    for _ in range(5):
        e1, e2 = same.train_batch(x, x), apart.train_batch(x, x.copy())
        assert torch.equal(e1, e2)
    for w1, w2 in zip(same.weights, apart.weights):
        assert torch.equal(w1, w2)
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="input: expected finite values, got 1"):
        same.train_batch(bad, bad)


def test_fit_gathers_an_autoencoders_rows_once():
    x = torch.rand(12, 6, generator=torch.Generator().manual_seed(3))
    one = Zor([Layer(6), Layer(4), Layer(6)], seed=2, device="cpu")
    two = Zor([Layer(6), Layer(4), Layer(6)], seed=2, device="cpu")
    h1, h2 = one.fit(x, steps=6, batch_size=4, progress=False), two.fit(x, x.clone(), steps=6, batch_size=4,
                                                                            progress=False)
    assert h1.train_accuracy == h2.train_accuracy
    for w1, w2 in zip(one.weights, two.weights):
        assert torch.equal(w1, w2)


def test_thread_plan_is_kept_and_decided_anew_when_its_inputs_change(monkeypatch):
    for name in ("ZOR_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_AT_IMPORT", 3)                  # not a count this test sets
    monkeypatch.setattr(threads, "_engine_set", None)
    calls = []
    choose = threads.choose_threads
    monkeypatch.setattr(threads, "choose_threads", lambda net, b: calls.append(b) or choose(net, b))
    net = Zor([Layer(4), Layer(4)], device="cpu")
    x = torch.rand(4, 4)
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "_engine_set", 2)              # 2 is not the user's count
        for _ in range(3):
            net.train_batch(x, x)
        assert calls == [4] and torch.get_num_threads() == 1        # decided once: small work, one thread
        net.train_batch(x[:2], x[:2])
        assert calls == [4, 2]                                      # another batch size: decided anew
        torch.set_num_threads(2)                                    # the user's own call after the engine's
        net.train_batch(x[:2], x[:2])
        assert calls == [4, 2, 2] and torch.get_num_threads() == 2  # seen, and the user's count wins
        net.threads = 1
        net.train_batch(x[:2], x[:2])
        assert calls == [4, 2, 2, 2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_always_spiking_layer_equals_the_gate_it_skips(activation):
    net = Zor([Layer(5), Layer(4), Layer(3, activation_function=activation)], seed=0, device="cpu")
    net.set_threshold(1, -float("inf"))                             # a hidden layer that always spikes too
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) - 0.3
    out, traces = net.run(x)
    for i in (1, 2):
        t = traces[i]
        s = neuron.fire(t.c, net.threshold(i))                      # [c > −inf]: 1 everywhere
        assert torch.equal(t.s, s) and torch.equal(t.s, torch.ones(6, net.layers[i].size))
        act = torch.sigmoid if (i == 2 and activation) else (lambda v: v)
        assert torch.equal(t.a, act(neuron.gate(t.c, s)))
        with pytest.raises(RuntimeError):
            t.s.add_(1.0)                                           # a read-only broadcast of one 1
    assert out is traces[2].a and torch.equal(out, torch.sigmoid(traces[2].c) if activation else traces[2].c)
