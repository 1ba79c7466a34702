"""The comparison baselines: hand-checked pieces of each model's equations, input
validation, and that each one learns on the bundled Fashion-MNIST subset (better
than the mean training image) within a small fixed number of steps."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.baselines import LIFSTDP, MLP, LeakyBPTT, LeakyLayer, MeanImage
from benchmarks.baselines.base import as_images, check_budget, timed_loop
from benchmarks.baselines.lif_stdp import lif_step, poisson_spikes, stdp_update
from zor.common.errors import (
    ConfigError,
    DTypeError,
    NonFiniteError,
    ShapeError,
    StateError,
)
from zor.common.metrics import reconstruction
from zor.tasks.datasets import load_bundled

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundled():
    """(train images (200, 784), unseen test images (200, 784), mean-image PSNR on them)."""
    x_train, _ = load_bundled("train")
    x_test = load_bundled("test")[0][:200]
    mean = MeanImage()
    mean.fit(x_train)
    floor = reconstruction(mean.reconstruct(x_test), x_test)["psnr"]
    return x_train, x_test, floor


def psnr_of(model, x_test):
    return reconstruction(model.reconstruct(x_test), x_test)["psnr"]


# --------------------------------------------------------------------------- shared pieces
def test_timed_loop_runs_exactly_the_steps_asked():
    calls = []
    r = timed_loop(calls.append, steps=4, batch_size=48)
    assert calls == [0, 1, 2, 3]
    assert (r.steps, r.samples) == (4, 192)


def test_timed_loop_stops_when_the_budget_is_spent():
    import time

    r = timed_loop(lambda i: time.sleep(0.01), time_budget=0.03)
    assert r.steps >= 3                 # three 10 ms steps are needed to spend 30 ms
    assert r.steps < 50
    assert r.seconds >= 0.03


@pytest.mark.parametrize("budget, steps", [(None, None), (0.0, None), (-1.0, 5), (float("nan"), None),
                                           (None, -1), (None, 2.5), (True, None), (None, True)])
def test_bad_budgets_raise_config_error(budget, steps):
    with pytest.raises(ConfigError):
        check_budget(budget, steps)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(0, 4), width=st.integers(1, 12))
def test_as_images_rejects_every_wrong_shape(rows, width):
    x = np.zeros((rows, width), np.float32)
    if rows > 0 and width == 6:
        assert as_images(x, 6).shape == (rows, 6)
    else:
        with pytest.raises(ShapeError, match=r"expected (shape \(N, 6\)|at least one row)"):
            as_images(x, 6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_as_images_rejects_integer_arrays(dtype):
    with pytest.raises(DTypeError, match="floating-point"):
        as_images(np.zeros((2, 3), dtype), 3)


@settings(max_examples=20, deadline=None)
@given(row=st.integers(0, 2), col=st.integers(0, 3), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_as_images_rejects_non_finite_values(row, col, bad):
    x = np.zeros((3, 4), np.float32)
    x[row, col] = bad
    with pytest.raises(NonFiniteError, match="1 NaN/inf"):
        as_images(x, 4)


def test_as_images_rejects_other_types():
    with pytest.raises(DTypeError, match="numpy array or torch tensor"):
        as_images([[0.0, 1.0]], 2)


# --------------------------------------------------------------------------- mean image
def test_mean_image_by_hand():
    m = MeanImage(width=2)
    m.fit(np.array([[0.0, 1.0], [1.0, 1.0]], np.float32))
    assert m.reconstruct(np.zeros((3, 2), np.float32)).tolist() == [[0.5, 1.0]] * 3


def test_mean_image_needs_fit_first():
    with pytest.raises(StateError, match="fit"):
        MeanImage(width=2).reconstruct(np.zeros((1, 2), np.float32))


# --------------------------------------------------------------------------- MLP
def test_mlp_forward_by_hand():
    m = MLP((2, 2, 2))
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        m.fc1.bias.copy_(torch.tensor([0.0, -1.0]))
        m.fc2.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        m.fc2.bias.copy_(torch.tensor([0.5, 0.0]))
    # h = relu([1 − 2, 0.5 + 4 − 1]) = [0, 3.5];  x̂ = [2·3.5 + 0.5, 4·3.5] = [7.5, 14]
    out = m.reconstruct(np.array([[1.0, 2.0]], np.float32))
    np.testing.assert_allclose(out, [[7.5, 14.0]], rtol=1e-6)
    m.output = "sigmoid"
    np.testing.assert_allclose(m.reconstruct(np.array([[1.0, 2.0]], np.float32)),
                               [[1 / (1 + np.exp(-7.5)), 1 / (1 + np.exp(-14.0))]], rtol=1e-6)


def test_mlp_learns_better_than_the_mean_image(bundled):
    x_train, x_test, floor = bundled
    m = MLP(seed=0)
    r = m.fit(x_train, steps=300)
    assert r.steps == 300 and r.samples == 300 * 48
    assert psnr_of(m, x_test) > floor + 1.0


def test_mlp_rejects_mismatched_targets_and_bad_config():
    m = MLP((4, 2, 4))
    with pytest.raises(ShapeError, match="rows"):
        m.fit(np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32), steps=1)
    with pytest.raises(ConfigError):
        MLP((4, 4))
    with pytest.raises(ConfigError):
        MLP(output="softmax")


# --------------------------------------------------------------------------- leaky BPTT (seed 002)
def test_leaky_step_by_hand():
    layer = LeakyLayer(1, 1, decay=0.5, threshold=1.0, penalty=0.1)
    with torch.no_grad():
        layer.fc.weight.fill_(1.0)
        layer.fc.bias.zero_()
    x = torch.tensor([[0.8]])
    state = layer.initial_state(1)
    inner, outer, state = layer.step(x, state)            # u = 0.8, o = 0: returns the initial (0, 0)
    assert (inner.item(), outer.item()) == (0.0, 0.0)
    inner, outer, state = layer.step(x, state)            # returns step 1: (0.8, 0)
    assert inner.item() == pytest.approx(0.8) and outer.item() == 0.0
    # step 2 computed u = 0.8 + 0.5·0.8 = 1.2, o = 0.2, fired: ũ = 1.2 − (0.1 + 0.2) = 0.9
    inner, outer, _ = layer.step(x, state)
    assert inner.item() == pytest.approx(0.9) and outer.item() == pytest.approx(0.2)


def test_leaky_output_is_the_time_average_of_the_delayed_outputs():
    m = LeakyBPTT((1, 1, 1), time_steps=3, decay=0.0, hidden_threshold=0.0, hidden_penalty=0.0,
                  output_threshold=0.0, output_penalty=0.0)
    with torch.no_grad():
        for layer in (m.hidden, m.out):
            layer.fc.weight.fill_(1.0)
            layer.fc.bias.zero_()
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand((3, 1, 1), generator=gen)
    # layer 1 returns (0, x·m_1, x·m_2): layer 2 sees them and returns (0, 0, x·m_1): mean = x·m_1 / 3
    out = m.forward(torch.tensor([[1.0]]), torch.Generator().manual_seed(0))
    assert out.item() == pytest.approx(masks[0].item() / 3, rel=1e-6)


def test_leaky_bptt_learns_better_than_the_mean_image(bundled):
    x_train, x_test, floor = bundled
    m = LeakyBPTT(seed=0)
    assert m.fit(x_train, steps=120).steps == 120
    assert psnr_of(m, x_test) > floor + 1.0


def test_leaky_bptt_rejects_bad_config():
    with pytest.raises(ConfigError, match="time_steps"):
        LeakyBPTT(time_steps=2)
    with pytest.raises(ConfigError, match="decay"):
        LeakyLayer(2, 2, decay=1.5)


# --------------------------------------------------------------------------- LIF + STDP (seed 003)
def test_poisson_spike_rate_matches_intensity():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((20_000,), 0.4)
    s = poisson_spikes(x, rate=250.0, dt=1e-3, generator=gen)        # p = 0.4 · 250 · 0.001 = 0.1
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert s.mean().item() == pytest.approx(0.1, abs=0.01)           # 3σ ≈ 0.0064
    assert poisson_spikes(torch.zeros(1000), 250.0, 1e-3, gen).sum().item() == 0
    assert poisson_spikes(torch.ones(1000), 2000.0, 1e-3, gen).sum().item() == 1000   # p clipped to 1


def test_stdp_update_by_hand():
    w = torch.tensor([[0.2]])
    # one post spike, pre trace 1: ΔW = 0.5 · 1 · (1 − 0.2) = 0.4
    assert stdp_update(w, torch.tensor([[1.0]]), torch.tensor([1.0]), lr=0.5).item() == pytest.approx(0.4)
    # four spikes: the pull η·n = 2 is capped at 1, so W moves all the way to the average trace
    assert stdp_update(w, torch.tensor([[4.0]]), torch.tensor([4.0]), lr=0.5).item() == pytest.approx(0.8)
    # a silent input (trace 0) is depressed: ΔW = 0.5 · (0 − 0.2)
    assert stdp_update(w, torch.tensor([[0.0]]), torch.tensor([1.0]), lr=0.5).item() == pytest.approx(-0.1)
    # no post spike, no change
    assert stdp_update(w, torch.tensor([[0.0]]), torch.tensor([0.0]), lr=0.5).item() == 0.0


def test_lif_step_by_hand():
    # v ← 0.5 + (1 ms / 10 ms)(1 − 0.5) = 0.55
    v = lif_step(torch.tensor([0.5]), torch.tensor([1.0]), dt=1e-3, tau=1e-2)
    assert v.item() == pytest.approx(0.55)


def test_lif_population_readout_by_hand():
    m = LIFSTDP(n_in=3, n_hidden=2)
    m.w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = m.decode(torch.tensor([[3.0, 1.0], [0.0, 0.0]]))
    # (3·[1, 0, .5] + 1·[0, 1, .5]) / 4 = [.75, .25, .5]; no spikes: the mean field [.5, .5, .5]
    np.testing.assert_allclose(out.numpy(), [[0.75, 0.25, 0.5], [0.5, 0.5, 0.5]], rtol=1e-6)


def test_lif_stdp_learns_better_than_the_mean_image(bundled):
    x_train, x_test, floor = bundled
    m = LIFSTDP(seed=0)
    w0 = m.w.clone()
    assert m.fit(x_train, steps=60).steps == 60
    assert not torch.equal(w0, m.w)
    assert psnr_of(m, x_test) > floor + 0.5


def test_lif_stdp_rejects_bad_input():
    with pytest.raises(ConfigError, match="time_steps"):
        LIFSTDP(time_steps=0)
    with pytest.raises(ConfigError, match="tau_mem"):
        LIFSTDP(tau_mem=0.0)
    with pytest.raises(ShapeError, match="reconstructs its input"):
        LIFSTDP(n_in=4, n_hidden=2).fit(np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32), steps=1)
