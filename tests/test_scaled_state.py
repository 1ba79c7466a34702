"""Scaled state of a learnable step graph (zor.common.moments): Adam's moments held as m β₁^−τ, v β₂^−τ and
AdamW's weights as W decay^−τ, put back to scale 1 by the Learner every 64 steps; what users see is at scale 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.export.learnable import export_learnable
from zor.runtime import Learner
from zor.runtime.learner_file import check_scaling
from zor.runtime.learner_state import dump_state

from zor import Layer, Zor
from zor.common import moments
from zor.common.errors import ModelFileError, StateError

ADAMW = {"optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.01}


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    path = tmp_path_factory.mktemp("scaled") / "ae.onnx"
    export_learnable(Zor([Layer(16), Layer(8), Layer(16)], seed=0), path, batches=5)
    return path


def _x(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 16), dtype=np.float32)


# ------------------------------------------------------------------------------------------ the record
@pytest.mark.parametrize("change, want", [
    ({}, {"every": 64, "betas": [0.9, 0.999], "decay": 1.0 - 1e-5}),
    ({"optimizer": "adam"}, {"every": 64, "betas": [0.9, 0.999], "decay": None}),      # L2 in the gradient
    ({"weight_decay": 0.0}, {"every": 64, "betas": [0.9, 0.999], "decay": None}),      # nothing decays W
    ({"lr": 0.5, "weight_decay": 1.0}, {"every": 64, "betas": [0.9, 0.999], "decay": None}),   # 0.5^−128
    ({"optimizer": "sgd"}, None), ({"lr": 0.0}, None),
    ({"betas": [0.5, 0.999]}, None), ({"betas": [0.9, 1.0]}, None), ({"betas": [0.0, 0.999]}, None),
])
def test_scaling_record(change: dict, want) -> None:
    """Scaled where β^−128 stays ≤ 1e12 (β ≥ 0.806): 0.9 grows 851× in 64 steps, 0.999 1.07×."""
    assert moments.scaling_of(dict(ADAMW, **change)) == want
    assert 0.9 ** -128 <= moments.MAX_GROWTH < 0.8 ** -128


@settings(max_examples=80, deadline=None)
@given(tau=st.integers(0, 2 * moments.EVERY), seed=st.integers(0, 2 ** 16),
       decay=st.sampled_from([None, 1.0 - 1e-5, 0.95]))
def test_to_graph_and_back(tau: int, seed: int, decay) -> None:
    """to_graph at τ then from_graph returns the state within float32 rounding (two products by β^±τ); rescale
    does from_graph in place; what is not scaled passes untouched."""
    rng = np.random.default_rng(seed)
    scaling = {"every": 64, "betas": [0.9, 0.999], "decay": decay}
    state = {"step": np.asarray(7.0, np.float32), moments.STATE: np.zeros((), np.float32),
             "weight_0": rng.normal(size=(3, 4)).astype(np.float32),
             "adam_m_0": rng.normal(size=(3, 4)).astype(np.float32) * 1e-3,
             "adam_v_0": rng.random((3, 4), dtype=np.float32) * 1e-6, "rate_1": rng.random(4, dtype=np.float32)}
    held = moments.to_graph(state, scaling, tau)
    assert float(held[moments.STATE]) == tau
    np.testing.assert_allclose(held["adam_m_0"], state["adam_m_0"] * 0.9 ** -tau, rtol=1e-6)
    if decay is None:
        assert held["weight_0"] is state["weight_0"]
    back = moments.from_graph(held, scaling)
    for k in state:
        np.testing.assert_allclose(back[k], state[k], rtol=2e-6, err_msg=k)
    assert back["rate_1"] is state["rate_1"] and back["step"] is state["step"]
    inplace = {k: np.array(v) for k, v in held.items()}
    moments.rescale(inplace, scaling)
    for k in state:
        np.testing.assert_array_equal(inplace[k], back[k], err_msg=k)


@settings(max_examples=60, deadline=None)
@given(record=st.one_of(st.none(), st.dictionaries(st.sampled_from(["every", "betas", "decay"]),
                                                  st.one_of(st.integers(-3, 200), st.floats(allow_nan=True),
                                                            st.lists(st.floats(0, 1), max_size=3), st.none()))),
       listed=st.booleans())
def test_a_scaling_record_not_the_optimisers_is_refused(record, listed: bool) -> None:
    """A file's record must be the one its optimiser settings give, with the state moment_steps listed."""
    spec = dict(ADAMW, state=[])
    names = ["step", moments.STATE] if listed else ["step"]
    good = moments.scaling_of(spec)
    if record == good and listed or record is None and not listed:
        assert check_scaling(record, spec, names, "m.onnx") == record
    else:
        with pytest.raises(ModelFileError, match="moment_scaling: expected"):
            check_scaling(record, spec, names, "m.onnx")


# ------------------------------------------------------------------------------------------ the Learner
def test_learner_follows_the_engine_across_rescalings(ae) -> None:
    """200 steps (rescaled at 64, 128, 192): the state the Learner shows stays at the engine's, W within 1e-4
    and the moments within 1e-3 (relative), and shows the moments at scale 1 (moment_steps 0)."""
    learner = Learner(ae)
    assert learner._scaling == {"every": 64, "betas": [0.9, 0.999], "decay": 1.0 - 1e-5}
    net = Zor([Layer(16), Layer(8), Layer(16)], seed=0)
    for k in range(200):
        x = _x(6, seed=k)
        learner.step(x, x)
        net.train_batch(x, x)
        if k + 1 in (63, 64, 65, 130, 200):
            assert float(learner._bound.live[moments.STATE]) == (k + 1) % 64
            got, st0 = learner.state, net.optimizer.state[net.weights[0]]
            assert float(got[moments.STATE]) == 0.0
            for name, want, tol in (("weight_0", net.weights[0], 1e-4), ("adam_m_0", st0["exp_avg"], 1e-3),
                                    ("adam_v_0", st0["exp_avg_sq"], 1e-3)):
                want = want.detach().numpy()
                assert np.linalg.norm(got[name] - want) <= tol * np.linalg.norm(want), (k, name)


def test_resume_across_a_rescaling_is_bit_for_bit(ae, tmp_path) -> None:
    """A state file holds the tensors as the graph does (τ = 6 here): 70 + 80 steps resumed end where 150 do."""
    x = _x(10)
    whole = Learner(ae, seed=5)
    whole.fit(x, steps=150, batch_size=4, progress=False)
    first = Learner(ae, seed=5)
    first.fit(x, steps=70, batch_size=4, progress=False)
    assert float(first._bound.live[moments.STATE]) == 6.0
    first.save_state(tmp_path / "s.npz")
    resumed = Learner(ae, seed=1)
    resumed.load_state(tmp_path / "s.npz")
    resumed.fit(x, steps=80, batch_size=4, progress=False)
    for k, v in whole._bound.live.items():
        np.testing.assert_array_equal(resumed._bound.live[k], v, err_msg=k)


@pytest.mark.parametrize("tau", [-1.0, 65.0, 2.5, math.inf])
def test_state_file_with_a_moment_count_out_of_range_refused(ae, tmp_path, tau: float) -> None:
    learner = Learner(ae)
    learner.step(_x(4), _x(4))
    before = learner.state
    bad = dict(learner._file_state(), moment_steps=np.asarray(tau, np.float32))
    (tmp_path / "s.npz").write_bytes(dump_state(bad, learner.model_hash))
    with pytest.raises(StateError, match="moment_steps|finite"):
        learner.load_state(tmp_path / "s.npz")
    for k, v in before.items():
        np.testing.assert_array_equal(learner.state[k], v)


def test_one_array_rewritten_between_steps_is_read_anew(ae) -> None:
    """step() binds x and target once while the caller passes the same arrays; the binding reads their memory
    when the step runs, so rewriting them in place between steps gives the steps of fresh arrays."""
    same, fresh = Learner(ae), Learner(ae)
    buf = np.empty((6, 16), np.float32)
    for k in range(5):
        buf[...] = _x(6, seed=k)
        np.testing.assert_array_equal(same.step(buf, buf), fresh.step(_x(6, seed=k), _x(6, seed=k)))
    for k, v in fresh._bound.live.items():
        np.testing.assert_array_equal(same._bound.live[k], v, err_msg=k)
