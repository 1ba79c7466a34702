"""Event-driven (sparse) input and the always-spiking post shortcut: same results as the dense path.

Parity tolerance: float32 sums in a different order, so weights may differ in the
last bits; 1e-6 absolute on weights of order 0.1 after 15 steps.
"""

import numpy as np
import pytest
import torch

from zor import Layer, Zor
from zor.common.errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from zor.engine import events, rules
from zor.engine.connections import Conv2d, Dense
from zor.engine.layer import Conv
from zor.engine.rules import Trace

TOL = 1e-6


def sparse_batch(b=24, n=120, per_row=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, n)
    for r in range(b):
        x[r, torch.randperm(n, generator=g)[:per_row]] = torch.rand(per_row, generator=g) + 0.05
    return x


# ----------------------------------------------------------------------------- hand-derived
def test_gate_on_values_matches_the_docstring_example():
    x = torch.tensor([[0.0, 0.9, 0.0, 0.2], [0.0, 0.0, 0.0, 0.7]]).to_sparse()
    s, a = events.gate(x.coalesce(), torch.full((4,), 0.5), lambda v: v)
    # 0.9 > 0.5 and 0.7 > 0.5 spike; 0.2 does not, and the zeros are never looked at
    np.testing.assert_allclose(s.to_dense().numpy(), [[0, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(a.to_dense().numpy(), [[0, 0.9, 0, 0], [0, 0, 0, 0.7]], rtol=1e-7)
    units, (sub,) = events.compact(a)
    assert units.tolist() == [1, 3]                 # unit 3 has an event (0.2) even where it did not spike
    np.testing.assert_allclose(sub.to_dense().numpy(), [[0.9, 0.0], [0.0, 0.7]], rtol=1e-7)


def test_sparse_outer_and_forward_equal_the_dense_products():
    x = sparse_batch(b=5, n=9, per_row=3)
    y = torch.randn(5, 4)
    w = torch.randn(9, 4)
    conn = Dense(9, 4)
    xs = x.to_sparse().coalesce()
    np.testing.assert_allclose(conn.forward(xs, w).numpy(), (x @ w).numpy(), atol=1e-6)
    np.testing.assert_allclose(conn.outer(xs, y).numpy(), (x.T @ y / 5).numpy(), atol=1e-6)
    # O(x, 1) = mean over the batch, one column
    np.testing.assert_allclose(conn.outer_ones(xs).numpy(), x.mean(0, keepdim=True).T.numpy(), atol=1e-7)
    np.testing.assert_allclose(conn.outer_ones(x).numpy(), x.mean(0, keepdim=True).T.numpy(), atol=1e-7)


def test_always_spiking_post_gives_the_full_outer_product():
    # E = a_iᵀ s_{i+1} / B with s ≡ 1: every column is mean_b a_i (hand: a = [[1, 2], [3, 0]] → [2, 1])
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    pre = Trace(c=a, s=(a > 0).float(), a=a)
    c = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -1.0]])
    delta = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    rule = rules.get_rule("gated")
    e_full, g_full = rule.correlate(pre, Trace(c=c, s=torch.ones_like(c), a=c), delta, Dense(2, 3))
    e_col, g_col = rule.correlate(pre, Trace(c=c, s=torch.ones_like(c), a=c, always=True), delta, Dense(2, 3))
    assert e_col.shape == (2, 1)
    np.testing.assert_allclose(e_col.expand(2, 3).numpy(), e_full.numpy(), atol=1e-7)
    np.testing.assert_allclose(e_col[:, 0].numpy(), [2.0, 1.0])
    np.testing.assert_allclose(g_col.numpy(), g_full.numpy(), atol=1e-7)


def test_always_spiking_post_on_a_conv_connection_broadcasts_over_channels():
    conn = Conv2d((1, 4, 4), (3, 2, 2), kernel_size=3, stride=1, padding=0)
    x = torch.rand(2, 16)
    full = conn.outer(x, torch.ones(2, 3 * 4))
    col = conn.outer_ones(x)
    assert col.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(col.expand_as(full).numpy(), full.numpy(), atol=1e-7)


# ----------------------------------------------------------------------------- parity with the dense path
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")   # torch's own note on CSR
@pytest.mark.parametrize("rule", ["gated", "post_spikes", "coactivity", "normalized"])
@pytest.mark.parametrize("novelty", [0.0, 0.5])
def test_sparse_training_matches_dense_training(rule, novelty):
    x = sparse_batch()
    y = torch.rand(24, 12)

    def make():
        kw = dict(novelty_factor=novelty)
        return Zor([Layer(120, **kw), Layer(30, target_activation=0.5, **kw), Layer(12, **kw)],
                   device="cpu", seed=3, rule=rule)

    dense, sparse = make(), make()
    for step in range(15):
        dense.train_batch(x, y)
        sparse.train_batch(x.to_sparse_csr() if step % 2 else x.to_sparse(), y)
    for wd, ws in zip(dense.weights, sparse.weights):
        np.testing.assert_allclose(ws.detach().numpy(), wd.detach().numpy(), atol=TOL)
    for i in range(3):
        np.testing.assert_allclose(sparse.threshold(i).numpy(), dense.threshold(i).numpy(), atol=TOL)
        np.testing.assert_allclose(sparse.rate(i).numpy(), dense.rate(i).numpy(), atol=TOL)
        np.testing.assert_allclose(sparse.novelty_trace(0).numpy(), dense.novelty_trace(0).numpy(), atol=TOL)
    np.testing.assert_allclose(sparse.predict(x.to_sparse(), batch_size=7).numpy(), dense.predict(x).numpy(),
                               atol=TOL)


def test_fit_accepts_a_sparse_dataset():
    x = sparse_batch(b=40)
    y = torch.rand(40, 12)
    nets = [Zor([Layer(120), Layer(30), Layer(12)], device="cpu", seed=1) for _ in range(2)]
    nets[0].fit(x, y, steps=8, batch_size=10, progress=False)
    nets[1].fit(x.to_sparse(), y, steps=8, batch_size=10, progress=False)
    for wd, ws in zip(*(n.weights for n in nets)):
        np.testing.assert_allclose(ws.detach().numpy(), wd.detach().numpy(), atol=TOL)
    auto = Zor([Layer(120), Layer(30), Layer(120)], device="cpu", seed=1)
    auto.fit(x.to_sparse(), steps=2, batch_size=10, progress=False)      # autoencoder: y = x, densified
    assert set(auto.evaluate(x.to_sparse())) >= {"psnr", "accuracy"}


def test_reinforce_returns_the_signal_at_a_sparse_input():
    x = sparse_batch(b=6)
    nets = [Zor([Layer(120), Layer(30), Layer(12)], device="cpu", seed=2) for _ in range(2)]
    err = torch.rand(6, 12) - 0.5
    nets[0].forward(x, train=True)
    nets[1].forward(x.to_sparse(), train=True)
    got = [n.reinforce(err, return_signal=True) for n in nets]
    np.testing.assert_allclose(got[1].numpy(), got[0].numpy(), atol=TOL)


# ----------------------------------------------------------------------------- bad input
def test_sparse_input_refused_where_a_zero_would_send_something():
    x = sparse_batch(b=4).to_sparse()
    net = Zor([Layer(120, threshold=-0.1), Layer(30), Layer(12)], device="cpu")
    with pytest.raises(ConfigError, match="thresholds are < 0"):
        net.forward(x)
    net = Zor([Layer(120, activation_function="sigmoid"), Layer(30), Layer(12)], device="cpu")
    with pytest.raises(ConfigError, match="maps 0 to a nonzero"):
        net.forward(x)
    net = Zor([Layer(120, decay=0.5), Layer(30), Layer(12)], device="cpu")
    with pytest.raises(ConfigError, match="stateful"):
        net.forward(x)
    net = Zor([Layer(16, shape=(1, 4, 4)), Conv(2, kernel_size=3), Layer(4)], device="cpu")
    with pytest.raises(ConfigError, match="event input needs a dense one"):
        net.forward(torch.eye(2, 16).to_sparse())


def test_sparse_input_checks_shape_dtype_and_values():
    net = Zor([Layer(120), Layer(30), Layer(12)], device="cpu")
    with pytest.raises(ShapeError, match=r"expected shape \(B, 120\)"):
        net.forward(torch.zeros(3, 121).to_sparse())
    with pytest.raises(ShapeError, match="empty batch"):
        net.forward(torch.zeros(0, 120).to_sparse())
    with pytest.raises(DTypeError, match="floating-point"):
        net.forward(torch.zeros(3, 120, dtype=torch.int64).to_sparse())
    bad = torch.zeros(3, 120)
    bad[1, 5] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN/inf"):
        net.forward(bad.to_sparse())
    with pytest.raises(DTypeError, match="layout"):
        net.forward(torch.zeros(3, 120).to_sparse_csc())
    net.forward(torch.zeros(3, 120), train=True)
    with pytest.raises(DTypeError, match="only the input batch may be sparse"):
        net.reinforce(torch.zeros(3, 12).to_sparse())
    with pytest.raises(DTypeError, match="only the input batch may be sparse"):
        net.train_batch(torch.zeros(3, 120), torch.zeros(3, 12).to_sparse())


def test_an_all_zero_sparse_batch_runs_and_learns_nothing_in_the_first_layer():
    net = Zor([Layer(120), Layer(30), Layer(12)], device="cpu", weight_decay=0.0)
    w0 = net.weights[0].detach().clone()
    net.train_batch(torch.zeros(4, 120).to_sparse(), torch.rand(4, 12))
    np.testing.assert_array_equal(net.weights[0].detach().numpy(), w0.numpy())
