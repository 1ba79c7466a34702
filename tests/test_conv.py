"""Convolutional Zor layers: shapes, hand-derived values, adjointness, parity of the products."""

import numpy as np
import pytest
import torch

from zor import Conv, Layer, Zor
from zor.common.errors import ConfigError
from zor.engine.connections import Conv2d, Dense
from zor.tasks.datasets import load_bundled


def test_conv_shapes_are_derived_from_the_layer_before():
    net = Zor([Layer(784, shape=(1, 28, 28)), Conv(4, kernel_size=5, stride=2), Conv(6, kernel_size=3, padding=1),
               Layer(10)], device="cpu")
    assert net.layers[1].shape == (4, 12, 12) and net.layers[1].size == 576
    assert net.layers[2].shape == (6, 12, 12)
    assert tuple(net.weights[0].shape) == (4, 1, 5, 5) and tuple(net.weights[2].shape) == (864, 10)
    assert tuple(net.threshold(1).shape) == (4,) and tuple(net.rate(2).shape) == (6,)
    out = net.forward(torch.rand(3, 784))
    assert out.shape == (3, 10)


def test_conv_configuration_errors():
    with pytest.raises(ConfigError, match=r"needs a \(C, H, W\) map before it"):
        Zor([Layer(784), Conv(4)])
    with pytest.raises(ConfigError, match="first layer cannot be a Conv"):
        Zor([Conv(4), Layer(3)])
    with pytest.raises(ConfigError, match="does not fit"):
        Zor([Layer(9, shape=(1, 3, 3)), Conv(2, kernel_size=5), Layer(2)])
    with pytest.raises(ConfigError, match="holds 12 units, expected size 10"):
        Layer(10, shape=(1, 3, 4))
    with pytest.raises(ConfigError, match="kernel_size must be an int ≥ 1"):
        Conv(3, kernel_size=0)
    with pytest.raises(ConfigError, match="derived from the previous layer"):
        Conv(3, size=10)


def test_conv_forward_with_per_channel_threshold_by_hand():
    # input 1×3×3 = [[1,2,3],[4,5,6],[7,8,9]], one 2×2 kernel [[1,0],[0,-1]], stride 1
    # conv: each output = top-left − bottom-right: [[1−5, 2−6], [4−8, 5−9]] = all −4
    # second kernel [[0,1],[1,0]]: [[2+4, 3+5], [5+7, 6+8]] = [[6, 8], [12, 14]]
    net = Zor([Layer(9, shape=(1, 3, 3)), Conv(2, kernel_size=2, threshold=7.0), Layer(1)], device="cpu")
    with torch.no_grad():
        net.weights[0].copy_(torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]], [[[0.0, 1.0], [1.0, 0.0]]]]))
    _, traces = net.run(torch.arange(1.0, 10.0).reshape(1, 9))
    c = traces[1].c.reshape(2, 2, 2)
    assert c[0].tolist() == [[-4.0, -4.0], [-4.0, -4.0]]
    assert c[1].tolist() == [[6.0, 8.0], [12.0, 14.0]]
    # θ = 7 for both channels: only 8, 12, 14 spike and pass
    assert traces[1].a.reshape(2, 2, 2)[1].tolist() == [[0.0, 8.0], [12.0, 14.0]]
    assert traces[1].a.reshape(2, 2, 2)[0].abs().sum() == 0


@pytest.mark.parametrize("h, k, s, p", [(7, 3, 2, 0), (8, 3, 2, 1), (6, 2, 2, 0), (5, 3, 1, 1)])
def test_transposed_convolution_is_the_adjoint(h, k, s, p):
    ho = (h + 2 * p - k) // s + 1
    conn = Conv2d((2, h, h), (3, ho, ho), k, s, p)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, k, k, generator=g, dtype=torch.float64)
    a = torch.randn(4, 2 * h * h, generator=g, dtype=torch.float64)
    d = torch.randn(4, 3 * ho * ho, generator=g, dtype=torch.float64)
    lhs = (conn.forward(a, w) * d).sum()
    back = conn.backward(d, w)
    assert back.shape == a.shape
    rhs = (a * back).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))


def test_conv_outer_matches_autograd_weight_gradient():
    conn = Conv2d((2, 6, 6), (3, 3, 3), 3, 2, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 72, generator=g, dtype=torch.float64)
    y = torch.randn(5, 27, generator=g, dtype=torch.float64)
    w = torch.zeros(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (conn.forward(x, w) * y).sum().backward()
    expected = w.grad / (5 * 9)                        # mean over batch (5) and positions (3·3)
    got = conn.outer(x, y)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    e, f = conn.outer_pair(x, y, 2 * y)
    np.testing.assert_allclose(e.numpy(), got.numpy(), rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), 2 * got.numpy(), rtol=1e-12)


def test_dense_outer_and_pair():
    x, y = torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[1.0], [2.0]])
    # xᵀy / B = [[1·1 + 3·2], [2·1 + 0]] / 2 = [[3.5], [1.0]]
    assert Dense(2, 1).outer(x, y).tolist() == [[3.5], [1.0]]
    e, f = Dense(2, 1).outer_pair(x, y, -y)
    assert e.tolist() == [[3.5], [1.0]] and f.tolist() == [[-3.5], [-1.0]]


def test_conv_network_learns_and_round_trips(tmp_path):
    x, _ = load_bundled("train")
    xt, _ = load_bundled("test")
    net = Zor([Layer(784, shape=(1, 28, 28)), Conv(8, kernel_size=5, stride=2, homeostasis_rate=0.01),
               Layer(784)], seed=0, device="cpu")
    before = net.evaluate(xt[:100])["psnr"]
    net.fit(x[:50], steps=60, batch_size=16, progress=False)
    after = net.evaluate(xt[:100])["psnr"]
    assert after > before + 3.0
    net.save(tmp_path / "conv.zor")
    back = Zor.load(tmp_path / "conv.zor", device="cpu")
    assert back.layers[1].kind == "conv" and back.layers[1].shape == (8, 12, 12)
    assert torch.equal(back.forward(torch.from_numpy(xt[:8]), train=False),
                       net.forward(torch.from_numpy(xt[:8]), train=False))
