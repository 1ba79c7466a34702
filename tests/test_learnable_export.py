"""zor.export.learnable: the learning step as an ONNX graph, checked against the engine and by hand."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from zor.export.cli import main as export_main
from zor.export.learnable import (
    MOMENT_TOLERANCE,
    TOLERANCE,
    export_learnable,
    initial_state,
    verify_learnable,
)
from zor.export.learnable_graph import build_step_graph

from zor import Layer, Zor
from zor.common.errors import UnsupportedLayerError
from zor.engine.layer import Conv


def _net(rule: str, novelty: float, scaling: bool, optimizer: str = "adamw") -> Zor:
    return Zor([Layer(12), Layer(10, activation_function="relu"), Layer(8, novelty_factor=novelty), Layer(5)],
               seed=3, rule=rule, error_scaling=scaling, optimizer=optimizer)


@pytest.mark.parametrize("rule", ["coactivity", "normalized", "post_spikes", "gated"])
@pytest.mark.parametrize("novelty", [0.0, 0.3])
@pytest.mark.parametrize("scaling", [True, False])
def test_graph_matches_engine_every_rule(rule: str, novelty: float, scaling: bool) -> None:
    rep = verify_learnable(_net(rule, novelty, scaling), batches=20, batch_size=6)
    assert rep["passed"], rep["failures"]
    assert rep["spike_mismatches"] == 0 and rep["spikes"] > 0
    assert all(v <= (MOMENT_TOLERANCE if k.startswith(("adam_", "novelty_")) else TOLERANCE)
               for k, v in rep["worst"].items())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_graph_matches_engine_other_optimisers(optimizer: str) -> None:
    net = Zor([Layer(9, homeostasis_rate=0.01), Layer(7, activation_function="sigmoid", threshold_range=(0.0, 0.4),
                                                      max_update_norm=None),
               Layer(4, activation_function="tanh", max_weight=None)], seed=1, optimizer=optimizer, weight_decay=0.05)
    rep = verify_learnable(net, batches=20, batch_size=5)
    assert rep["passed"], rep["failures"]


def test_one_step_by_hand() -> None:
    """[1] → [1], coactivity, SGD lr 0.1 without momentum, no error scaling; W = 0.1, x = 2, target = 1:
    a_0 = 2, y = 0.2, δ = 0.8, E = a_0·a_1 = 0.4, G = a_0·δ = 1.6, U = G·E = 0.64 (‖U‖ < 1: no clip),
    W ← 0.1 + 0.1·0.64 = 0.164; r_0 ← 0.9·0.75 + 0.1·1 = 0.775."""
    net = Zor([Layer(1), Layer(1)], seed=0, rule="coactivity", optimizer="sgd", lr=0.1, momentum=0.0,
              weight_decay=0.0, error_scaling=False)
    net.weights[0].data.fill_(0.1)
    sess = ort.InferenceSession(build_step_graph(net).SerializeToString(), providers=["CPUExecutionProvider"])
    state = initial_state(net)
    got = dict(zip(["output", "error", "weight_0_out", "rate_0_out"],
                   sess.run(["output", "error", "weight_0_out", "rate_0_out"],
                            {"x": np.array([[2.0]], np.float32), "target": np.array([[1.0]], np.float32), **state})))
    assert got["output"][0, 0] == pytest.approx(0.2, abs=1e-6)
    assert got["error"][0, 0] == pytest.approx(0.8, abs=1e-6)
    assert got["weight_0_out"][0, 0] == pytest.approx(0.164, abs=1e-6)
    assert got["rate_0_out"][0] == pytest.approx(0.775, abs=1e-6)


def test_unsupported_layers_refused() -> None:
    conv = Zor([Layer(16, shape=(1, 4, 4)), Conv(2, kernel_size=3), Layer(3)], seed=0)
    with pytest.raises(UnsupportedLayerError, match="layer 1 is a 'conv' layer; supported: stateless dense"):
        build_step_graph(conv)
    stateful = Zor([Layer(4), Layer(3, decay=0.5), Layer(2)], seed=0)
    with pytest.raises(UnsupportedLayerError, match="layer 1 is stateful") as exc:
        build_step_graph(stateful)
    assert exc.value.exit_code == 2


def test_export_writes_file_with_state_and_metadata(tmp_path) -> None:
    net = Zor([Layer(6), Layer(5), Layer(6)], seed=0)
    out = tmp_path / "m-learn.onnx"
    rep = export_learnable(net, out, batches=10)
    assert rep["passed"]
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["zor.format"] == "zor-learnable"
    spec = json.loads(meta["zor.learnable"])
    assert spec["rule"] == "gated" and spec["optimizer"] == "adamw" and spec["sizes"] == [6, 5, 6]
    assert spec["state"][:5] == ["step", "moment_steps", "weight_0", "adam_m_0", "adam_v_0"]
    assert spec["moment_scaling"] == {"every": 64, "betas": [0.9, 0.999], "decay": 1.0 - 1e-3 * 0.01}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert float(inits["moment_steps"]) == 0.0                   # the start state at scale 1
    np.testing.assert_array_equal(inits["weight_0"], net.weights[0].detach().numpy())
    assert json.loads(meta["zor.verification"])["batches"] == 10


def test_cli_learnable(tmp_path) -> None:
    ckpt = tmp_path / "m.zor"
    Zor([Layer(6), Layer(4), Layer(6)], seed=0).save(ckpt)
    r = CliRunner().invoke(export_main, ["export", str(ckpt), "-o", str(tmp_path / "l.onnx"), "--learnable"])
    assert r.exit_code == 0, r.output
    assert "learnable step; verified against the engine over 100 batches" in r.output
    r = CliRunner().invoke(export_main, ["export", str(ckpt), "-o", str(tmp_path / "q.onnx"), "--learnable",
                                         "--quantize", "int8"])
    assert r.exit_code == 2 and "expected no --quantize" in r.output
    stateful = tmp_path / "s.zor"
    Zor([Layer(4), Layer(3, decay=0.5), Layer(2)], seed=0).save(stateful)
    r = CliRunner().invoke(export_main, ["export", str(stateful), "-o", str(tmp_path / "s.onnx"), "--learnable"])
    assert r.exit_code == 2 and "stateful" in r.output and not (tmp_path / "s.onnx").exists()


def test_graph_operators_are_the_learners_allowlist() -> None:
    from zor.common.format import LEARNABLE_OPERATORS
    for rule in ("coactivity", "normalized", "post_spikes", "gated"):
        for opt in ("adam", "adamw", "sgd"):
            net = Zor([Layer(5, activation_function="tanh"), Layer(4, activation_function="relu", novelty_factor=0.1),
                       Layer(3, activation_function="sigmoid")], seed=0, rule=rule, optimizer=opt)
            ops = {n.op_type for n in build_step_graph(net).graph.node}
            assert ops <= LEARNABLE_OPERATORS, ops - LEARNABLE_OPERATORS


@pytest.mark.parametrize("lr, wd, want_w", [(0.1, 0.0, 0.2), (0.1, 0.5, 0.195), (0.0, 0.5, 0.1)])
def test_one_adamw_step_by_hand(lr: float, wd: float, want_w: float) -> None:
    """[1] → [1] as in test_one_step_by_hand (U = 0.64, grad g = −0.64), AdamW at t = 1:
    m = (1 − β₁)·g = −0.064, v = (1 − β₂)·g² = 4.096e-4, m̂ = −0.64, v̂ = 0.4096,
    W ← W·(1 − lr·wd) − lr·m̂/(√v̂ + 1e-8) = 0.1·(1 − lr·wd) + lr (to 1e-8): 0.2, 0.195, and 0.1 at lr 0
    (the lr = 0 graph takes the path without the BatchNormalization affine); health = |δ| + g² = 1.2096.

    With lr > 0 the graph holds the moments scaled (zor.common.moments): after the step, τ = 1, m̃ = m/β₁,
    ṽ = v/β₂, and with a weight decay W̃ = W/(1 − lr·wd); from τ = 10 (m̃ = ṽ = 0, W̃ = 0.1/(1 − lr·wd)¹⁰) the
    same step ends in W̃ = W/(1 − lr·wd)¹¹, m̃ = m/β₁¹¹, ṽ = v/β₂¹¹."""
    net = Zor([Layer(1), Layer(1)], seed=0, rule="coactivity", optimizer="adamw", lr=lr, weight_decay=wd,
              error_scaling=False)
    net.weights[0].data.fill_(0.1)
    proto = build_step_graph(net)
    assert ("BatchNormalization" in {n.op_type for n in proto.graph.node}) == (lr > 0)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = ["weight_0_out", "adam_m_0_out", "adam_v_0_out", "step_out", "health"]
    scaled, decayed = lr > 0, lr > 0 and wd > 0
    assert ("moment_steps" in initial_state(net)) == scaled
    for tau in (0, 10) if scaled else (0,):
        state = dict(initial_state(net), moment_steps=np.asarray(tau, np.float32)) if scaled else initial_state(net)
        state["weight_0"] = state["weight_0"] / np.float32((1 - lr * wd) ** tau if decayed else 1.0)
        got = dict(zip(names, sess.run(names, {"x": np.array([[2.0]], np.float32),
                                               "target": np.array([[1.0]], np.float32), **state})))
        k = tau + 1 if scaled else 0
        assert got["weight_0_out"][0, 0] == pytest.approx(want_w / (1 - lr * wd) ** (k if decayed else 0), rel=1e-5)
        assert got["adam_m_0_out"][0, 0] == pytest.approx(-0.064 / 0.9 ** k, rel=1e-6)
        assert got["adam_v_0_out"][0, 0] == pytest.approx(4.096e-4 / 0.999 ** k, rel=1e-5)
        assert float(got["step_out"]) == 1.0
        assert float(got["health"]) == pytest.approx(0.8 + 0.64 ** 2, rel=1e-6)   # mean|δ| + ‖grad‖² (no clip)


def test_folded_column_step_by_hand() -> None:
    """[2] → [1], post_spikes, the output spiking for good (θ = −inf), SGD lr 0.1 without momentum, no error
    scaling, no norm clip: x = (0.5, 2), W = (0.2, 0.1)ᵀ, target 1: c = 0.5·0.2 + 2·0.1 = 0.3, δ = 0.7;
    E′ = clip(mean_b a_0, 0, 1) = (0.5, 1) folded into the small side: U = (a_0 ⊙ E′ / B)ᵀ δ = (0.175, 1.4),
    W ← W + 0.1·U = (0.2175, 0.24); the output layer's rate r ← 0.9 r + 0.1 (s ≡ 1, no gate pass)."""
    net = Zor([Layer(2, max_update_norm=None), Layer(1)], seed=0, rule="post_spikes", optimizer="sgd", lr=0.1,
              momentum=0.0, weight_decay=0.0, error_scaling=False)
    net.weights[0].data.copy_(torch.tensor([[0.2], [0.1]]))
    proto = build_step_graph(net)
    assert "Greater" not in {n.op_type for n in proto.graph.node if "threshold_1" in n.input}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    state = initial_state(net)
    names = ["output", "weight_0_out", "rate_1_out", "health"]
    got = dict(zip(names, sess.run(names, {"x": np.array([[0.5, 2.0]], np.float32),
                                           "target": np.array([[1.0]], np.float32), **state})))
    assert got["output"][0, 0] == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(got["weight_0_out"][:, 0], [0.2175, 0.24], atol=1e-6)
    assert got["rate_1_out"][0] == pytest.approx(0.9 * state["rate_1"][0] + 0.1, abs=1e-6)
    assert float(got["health"]) == pytest.approx(0.7, abs=1e-6)                  # mean|δ|, no norm clip
