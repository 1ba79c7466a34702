"""Weight averaging (zor.engine.averaging): the debiased moving average, in Zor.fit and the backprop baselines."""

import math

import numpy as np
import pytest
import torch

from benchmarks.baselines.images import CNNClassifier, MLPClassifier
from zor import Layer, Zor, ZorConfig
from zor.common.errors import ConfigError
from zor.engine.averaging import WeightAverage, check_beta


def test_hand_derived_average():
    # β = 0.5, iterates 2, 4, 8: w̄ = 1, 2.5, 5.25; ŵ = 5.25 / (1 − 0.125) = 6 = (0.25·2 + 0.5·4 + 1·8) / 1.75
    w = torch.tensor([2.0, -1.0])
    avg = WeightAverage([w], 0.5)
    avg.update()
    assert torch.allclose(avg.averages()[0], torch.tensor([2.0, -1.0]))      # one iterate: itself
    w.copy_(torch.tensor([4.0, -1.0]))
    avg.update()
    w.copy_(torch.tensor([8.0, -1.0]))
    avg.update()
    assert torch.allclose(avg.sums[0], torch.tensor([5.25, -0.875]))
    avg.apply()
    assert torch.allclose(w, torch.tensor([6.0, -1.0]))


def test_beta_zero_keeps_the_last_iterate_and_no_update_changes_nothing():
    w = torch.tensor([1.0])
    avg = WeightAverage([w], 0.0)
    avg.apply()                                  # before any update: nothing to average
    assert float(w) == 1.0
    for v in (3.0, 5.0):
        w.fill_(v)
        avg.update()
    avg.apply()
    assert float(w) == 5.0


@pytest.mark.parametrize("beta", [1.0, 1.5, -0.1, math.nan, math.inf, True, "0.9", None])
def test_bad_beta(beta):
    with pytest.raises(ConfigError, match=r"weight_average must be a number in \[0, 1\)"):
        check_beta(beta)
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        ZorConfig(weight_average=beta)


def _net(beta):
    return Zor([Layer(6), Layer(5), Layer(6, activation_function="sigmoid")], seed=3, device="cpu",
               weight_average=beta)


@pytest.mark.parametrize("budget", [None, 60.0])
def test_fit_ends_with_the_debiased_average_of_its_iterates(budget):
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(0))
    net = _net(0.5)
    iterates = []
    step = net._train_step

    def recording(xb, yb):
        err = step(xb, yb)
        iterates.append([w.detach().clone() for w in net.weights])
        return err

    net._train_step = recording
    net.fit(x, steps=3, batch_size=4, progress=False, time_budget=budget)
    assert len(iterates) == 3
    assert not torch.equal(iterates[0][0], iterates[2][0])                    # the weights did move
    for j, w in enumerate(net.weights):
        want = (0.25 * iterates[0][j] + 0.5 * iterates[1][j] + iterates[2][j]) / 1.75
        torch.testing.assert_close(w.detach(), want, rtol=1e-6, atol=1e-7)


def test_fit_without_averaging_ends_with_the_last_iterate():
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(0))
    plain, averaged = _net(0.0), _net(0.9)
    plain.fit(x, steps=4, batch_size=4, progress=False)
    last = [w.detach().clone() for w in averaged.weights]
    step = averaged._train_step

    def recording(xb, yb):
        err = step(xb, yb)
        last[:] = [w.detach().clone() for w in averaged.weights]
        return err

    averaged._train_step = recording
    averaged.fit(x, steps=4, batch_size=4, progress=False)
    for w_plain, w_last, w_avg in zip(plain.weights, last, averaged.weights):
        assert torch.equal(w_plain, w_last)             # averaging never feeds back into training
        assert not torch.equal(w_avg, w_last)


@pytest.mark.parametrize("cls", [MLPClassifier, CNNClassifier])
def test_baselines_average_their_parameters(cls):
    rng = np.random.default_rng(0)
    kw = {"in_shape": (1, 6, 6)} if cls is CNNClassifier else {"sizes": (36, 8, 3)}
    if cls is CNNClassifier:
        kw.update(channels=2, kernel_size=3, n_classes=3)
    x = rng.random((12, 36), dtype=np.float32)
    y = np.arange(12) % 3
    iterates = []
    for steps in (1, 2):                          # the plain runs give the iterates (same seed, same batches)
        m = cls(seed=0, **kw)
        m.fit(x, y, steps=steps)
        iterates.append([p.detach().clone() for p in m.net.parameters()])
    avg = cls(seed=0, weight_average=0.5, **kw)
    avg.fit(x, y, steps=2)
    for p, w1, w2 in zip(avg.net.parameters(), *iterates):
        torch.testing.assert_close(p.detach(), (0.5 * w1 + w2) / 1.5, rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="weight_average must be a number"):
        cls(seed=0, weight_average=1.0, **kw)
