"""The engine's public API: construction, bad input, determinism, fit/evaluate."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zor import Layer, Zor, ZorConfig
from zor.common.curriculum import CurriculumSampler
from zor.common.errors import (
    ConfigError,
    DTypeError,
    NonFiniteError,
    ShapeError,
    StateError,
    ZorError,
    ZorWarning,
)
from zor.engine.activations import sigmoid
from zor.tasks.datasets import load_bundled


def small(**kw):
    return Zor([Layer(6), Layer(4), Layer(6)], device="cpu", **kw)


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "layers, match",
    [
        ([], "at least 2 layers"),
        ([Layer(3)], "at least 2 layers"),
        ("abc", "list of Layer"),
        ([Layer(3), 5], "layer 1 must be a zor.Layer"),
    ],
)
def test_bad_layer_lists(layers, match):
    with pytest.raises(ConfigError, match=match):
        Zor(layers)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size=0), "positive int, got 0"),
        (dict(size=-3), "positive int"),
        (dict(size=2.5), "must be an int"),
        (dict(size=4, activation_function="softsign"), "unknown activation"),
        (dict(size=4, activation_function=lambda x: x), "not a known function"),
        (dict(size=4, target_activation=1.5), r"target_activation must lie in \[0.0, 1.0\]"),
        (dict(size=4, decay=-0.1), "decay"),
        (dict(size=4, threshold=float("nan")), "threshold"),
        (dict(size=4, max_update_norm=0.0), "max_update_norm must be > 0"),
        (dict(size=4, threshold_range=(2.0, 1.0)), "lo ≤ hi"),
        (dict(size=4, threshold_range=(None, None)), "at least one side"),
        (dict(size=4, threshold_range=(0.0, float("inf"))), "finite numbers or None"),
        (dict(size=4, threshold_range=("0", 1.0)), "finite numbers or None"),
        (dict(size=4, threshold_range=(0.0,)), "finite numbers or None"),
        (dict(size=4, refractory=-1.0), "refractory"),
    ],
)
def test_bad_layer_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Layer(**kwargs)


def test_bad_network_settings():
    with pytest.raises(ConfigError, match="unknown learning rule 'hebb'"):
        small(rule="hebb")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        small(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="unknown Zor settings"):
        small(learning_rate=0.1)
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        small(lr=float("inf"))


def test_activation_given_as_function_or_torch_function_is_stored_by_name():
    assert Layer(3, activation_function=sigmoid).activation == "sigmoid"
    assert Layer(3, activation_function=torch.tanh).activation == "tanh"
    assert Layer(3).activation == "identity"


def test_seed_quick_start_api_with_layer_kwargs():
    # the seed's README example, verbatim in spirit
    snn = Zor([
        Layer(784, target_activation=0.9, max_update_norm=0.5, homeostasis_rate=0.2),
        Layer(128, target_activation=0.5, max_update_norm=0.5, homeostasis_rate=0.2),
        Layer(784, target_activation=0.5, activation_function=sigmoid, max_update_norm=0.5, homeostasis_rate=0.2),
    ], device="cpu")
    x = torch.rand(8, 784)
    out = snn.forward(x)
    assert out.shape == (8, 784) and torch.all((out >= 0) & (out <= 1))
    snn.reinforce(x - out)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_expected_and_given():
    net = small()
    with pytest.raises(ShapeError, match=r"expected shape \(B, 6\), got \(2, 5\)"):
        net.forward(torch.zeros(2, 5))
    with pytest.raises(ShapeError, match=r"expected shape \(B, 6\), got \(6,\)"):
        net.forward(torch.zeros(6))
    with pytest.raises(ShapeError, match="empty batch"):
        net.forward(torch.zeros(0, 6))
    with pytest.raises(DTypeError, match="floating-point.*uint8.*scale integer images"):
        net.forward(torch.zeros(2, 6, dtype=torch.uint8))
    with pytest.raises(DTypeError, match="floating-point array, got dtype int64"):
        net.forward(np.zeros((2, 6), dtype=np.int64))
    with pytest.raises(DTypeError, match="torch.Tensor or numpy array, got list"):
        net.forward([[0.0] * 6])
    bad = torch.zeros(2, 6)
    bad[1, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN/inf"):
        net.forward(bad)
    bad[1, 3] = float("inf")
    with pytest.raises(NonFiniteError):
        net.forward(bad)


def test_bad_errors_in_reinforce():
    net = small()
    with pytest.raises(StateError, match="needs a forward"):
        net.reinforce(torch.zeros(2, 6))
    net.forward(torch.rand(3, 6))
    with pytest.raises(ShapeError, match=r"expected shape \(3, 6\)"):
        net.reinforce(torch.zeros(2, 6))
    net.forward(torch.rand(3, 6))
    errors = torch.zeros(3, 6)
    errors[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="errors"):
        net.reinforce(errors)
    net.forward(torch.rand(3, 6))
    with pytest.raises(ShapeError, match="target"):
        net.train_batch(torch.rand(3, 6), torch.rand(2, 6))


def test_float64_and_numpy_inputs_are_accepted():
    net = small()
    a = net.forward(np.random.default_rng(0).random((2, 6)), train=False)
    b = net.forward(torch.rand(2, 6, dtype=torch.float64), train=False)
    assert a.dtype == b.dtype == torch.float32


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 4),
    cols=st.integers(0, 9),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_, np.complex64]),
    fill=st.sampled_from([0.0, 1.0, -3.5, float("nan"), float("inf")]),
)
def test_forward_rejects_or_accepts_cleanly(rows, cols, dtype, fill):
    net = small()
    x = np.full((rows, cols), fill if np.issubdtype(dtype, np.floating) else 1).astype(dtype)
    try:
        out = net.forward(x, train=False)
    except ZorError:
        return
    assert out.shape == (rows, 6) and torch.isfinite(out).all()
    assert cols == 6 and rows > 0 and np.issubdtype(dtype, np.floating) and np.isfinite(fill)


# ----------------------------------------------------------------------------- determinism
def test_seeded_training_is_deterministic_on_cpu():
    x, _ = load_bundled("train")
    runs = []
    for _ in range(2):
        net = Zor([Layer(784), Layer(32), Layer(784)], seed=7, device="cpu")
        net.fit(x[:20], steps=20, batch_size=8, progress=False)
        runs.append([w.detach().clone() for w in net.weights] + [net.threshold(1).clone()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    other = Zor([Layer(784), Layer(32), Layer(784)], seed=8, device="cpu")
    assert not torch.equal(other.weights[0], runs[0][0])


def test_train_false_learns_nothing():
    net = small()
    before = [w.clone() for w in net.weights] + [net.rate(1).clone()]
    net.forward(torch.rand(4, 6), train=False)
    with pytest.raises(StateError):
        net.reinforce(torch.zeros(4, 6))
    after = list(net.weights) + [net.rate(1)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


# ----------------------------------------------------------------------------- fit / evaluate
def test_fit_learns_the_bundled_subset_and_evaluate_reports_seed_metric():
    x, _ = load_bundled("train")
    xt, _ = load_bundled("test")
    net = Zor([Layer(784), Layer(64), Layer(784)], seed=0, device="cpu")
    before = net.evaluate(xt)
    hist = net.fit(x[:10], steps=150, batch_size=48, progress=False)
    after = net.evaluate(xt)
    assert hist.steps == 150 and len(hist.train_accuracy) == 150 and hist.seconds > 0
    assert after["psnr"] > before["psnr"] + 3.0
    assert after["accuracy"] == pytest.approx(100 * (1 - after["mae"]))
    mean_img = np.broadcast_to(x[:10].mean(0), xt.shape)
    assert after["mae"] < np.abs(mean_img - xt).mean()   # beats predicting the mean image


def test_fit_time_budget_and_validation():
    x, _ = load_bundled("train")
    net = Zor([Layer(784), Layer(16), Layer(784)], seed=0, device="cpu")
    hist = net.fit(x, steps=10_000, batch_size=16, time_budget=0.3, progress=False,
                   validation=(x[:20], None), eval_every=5)
    assert 0 < hist.steps < 10_000 and hist.val and hist.val[0][0] == 5
    with pytest.raises(ConfigError, match="steps"):
        net.fit(x, steps=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        net.fit(x, batch_size=0)
    with pytest.raises(ShapeError, match="rows to match"):
        net.fit(x, x[:3])


def test_predict_and_evaluate_restore_stateful_charges():
    net = Zor([Layer(3, decay=0.5), Layer(3)], device="cpu")
    net.forward(torch.ones(2, 3), train=False)
    state = net.state[0].clone()
    net.evaluate(torch.rand(5, 3))
    assert torch.equal(net.state[0], state)
    with pytest.raises(StateError, match=r"expected shape \(B, 3\)"):
        net.set_state([torch.zeros(2, 4), None])


def test_config_object_and_overrides():
    cfg = ZorConfig(lr=0.01, optimizer="adamw")
    net = Zor([Layer(2), Layer(2)], cfg, device="cpu", seed=3)
    assert net.config.lr == 0.01 and net.config.seed == 3 and isinstance(net.optimizer, torch.optim.AdamW)
    assert "rule='gated'" in repr(net)


# ----------------------------------------------------------------------------- curriculum
def test_curriculum_favours_hard_samples():
    s = CurriculumSampler(4, rng=np.random.default_rng(0))
    s.update(np.array([0, 1, 2, 3]), np.array([0.0, 0.0, 0.0, 1.0]))
    p = s.probabilities()
    # (1 − u)·w/Σw + u/N with u = 0.2, w = e + ε
    w = np.array([1e-3, 1e-3, 1e-3, 1.001])
    np.testing.assert_allclose(p, 0.8 * w / w.sum() + 0.05)
    counts = np.bincount(s.sample(4000), minlength=4)
    assert counts[3] > 3 * counts[:3].max()


def test_curriculum_unseen_samples_count_as_worst_and_disabled_is_uniform():
    s = CurriculumSampler(3, rng=np.random.default_rng(0))
    s.update(np.array([0]), np.array([0.5]))
    p = s.probabilities()
    assert p[1] == p[2] == p[0]          # unseen ones count as the worst seen (0.5)
    u = CurriculumSampler(3, enabled=False)
    np.testing.assert_allclose(u.probabilities(), [1 / 3] * 3)
    assert set(u.sample(300)) == {0, 1, 2}


@pytest.mark.parametrize("n", [7, 5000])    # the small path (one cumsum) and the blocked path
def test_curriculum_draws_follow_its_probabilities(n):
    s = CurriculumSampler(n, rng=np.random.default_rng(1))
    s.update(np.arange(n), np.random.default_rng(2).random(n) ** 3)
    p = s.probabilities()
    draws = 300_000
    freq = np.bincount(s.sample(draws), minlength=n) / draws
    # each frequency within 5 binomial standard deviations of its probability
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


def test_curriculum_first_partial_update_reweighs_every_block():
    """The first update gives every unseen sample the batch's worst error: on the blocked path
    (N > 4,096) every block's sum must follow, not only the sums of the blocks the batch touched."""
    n = 5000
    s = CurriculumSampler(n, rng=np.random.default_rng(3))
    s.update(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.4]))     # touches block 0 only
    np.testing.assert_allclose(s.block_sum, s.weight_blocks.sum(axis=1))
    p = s.probabilities()
    draws = 300_000
    freq = np.bincount(s.sample(draws), minlength=n) / draws
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


def test_homeostasis_defaults_on_hidden_layers_only():
    net = Zor([Layer(4), Layer(3), Layer(3, homeostasis_rate=0.2), Layer(4)], device="cpu")
    assert net._eta == [0.0, 1e-3, 0.2, 0.0]
    assert net.layers[1].target_activation == 0.75 and net.rate(1).tolist() == [0.75] * 3


def test_set_threshold():
    net = Zor([Layer(4), Layer(3), Layer(2)], device="cpu")
    net.set_threshold(1, 0.5)
    assert net.threshold(1).tolist() == [0.5] * 3
    net.set_threshold(1, np.array([0.1, 0.2, float("-inf")]))
    assert net.threshold(1)[2].item() == float("-inf")
    with pytest.raises(ShapeError, match=r"expected a number or shape \(3,\), got shape \(2,\)"):
        net.set_threshold(1, [1.0, 2.0])
    with pytest.raises(NonFiniteError):
        net.set_threshold(0, float("nan"))
    with pytest.raises(ConfigError, match="layer index"):
        net.set_threshold(3, 0.0)


# ----------------------------------------------------------------------------- forward-signal check
def deep(n_layers, init_scale):
    return Zor([Layer(64)] + [Layer(32) for _ in range(n_layers - 2)] + [Layer(4)], seed=0, device="cpu",
               init_scale=init_scale)


def test_fit_warns_once_when_the_forward_signal_dies_out():
    x = torch.rand(32, 64, generator=torch.Generator().manual_seed(0))
    y = torch.rand(32, 4, generator=torch.Generator().manual_seed(1))
    net = deep(14, 0.5)       # each 32-wide gated layer passes on a fraction: ~1e-6 of it reaches the top
    _, traces = net.run(x)
    assert float(traces[-1].c.std()) < 1e-3 * float(traces[1].c.std())
    with pytest.warns(ZorWarning, match=r"dies out across 14 layers.*Raise init_scale \(now 0.5"):
        net.fit(x, y, steps=1, progress=False)
    assert not issubclass(ZorWarning, ZorError) and issubclass(ZorWarning, UserWarning)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")            # once per network: a second fit stays quiet
        net.fit(x, y, steps=1, progress=False)
        deep(14, 2.0).fit(x, y, steps=1, progress=False)     # a larger scale carries the signal up
        deep(3, 0.5).fit(x, y, steps=1, progress=False)      # shallow networks are never checked
