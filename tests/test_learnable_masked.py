"""The co-activity on the active post units only (zor.export.learnable_masked): which connections take it, the
graph it builds against the full form, the check against the engine, and the Learner on such a file (W_i held
transposed inside, (n_i, n_{i+1}) outside)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import zor.export.learnable_blocks as lb
from zor.export.learnable import export_learnable, initial_state, verify_learnable
from zor.export.learnable_graph import build_step_graph, spec_of, state_names
from zor.export.learnable_masked import masked_ops
from zor.runtime import Learner

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ModelFileError


def test_masked_connections_by_hand() -> None:
    """784·256 = 200,704 > 65,536 and the hidden layer can fall silent: connection 0 only (connection 1 is 2,560
    elements and its post layer, the output, spikes for good); 784·64 = 50,176 is not row-blocked: none."""
    always = [False, False, True]
    assert lb.masked_connections([784, 256, 10], "gated", always, [0.0] * 3) == [0]
    assert lb.masked_connections([784, 256, 10], "post_spikes", always, [0.0] * 3) == [0]
    assert lb.masked_connections([784, 256, 10], "coactivity", always, [0.0] * 3) == []    # E = a_iᵀ a_{i+1}
    assert lb.masked_connections([784, 256, 10], "normalized", always, [0.0] * 3) == []
    assert lb.masked_connections([784, 256, 10], "gated", always, [0.1, 0.0, 0.0]) == []   # novelty on W_0
    assert lb.masked_connections([784, 256, 10], "gated", [False, True, True], [0.0] * 3) == []
    assert lb.masked_connections([784, 64, 784], "gated", always, [0.0] * 3) == []
    assert lb.transposed_names([0], "adamw") == ["weight_0", "adam_m_0", "adam_v_0"]
    assert lb.transposed_names([2], "sgd") == ["weight_2", "momentum_2"]


def test_the_format_lists_every_operator_the_masked_form_emits() -> None:
    assert set(masked_ops()) <= fmt.LEARNABLE_OPERATORS


def _net(theta: float | None = None, **kw) -> Zor:
    """9-7-4, W_0 9 × 7 = 63 elements: row-blocked and masked with BLOCK_ELEMENTS = 20. ``theta``: θ_1 of the
    hidden units 0..3 (1e9: they never spike), or of all 7 units when negative (−1e9: every unit spikes)."""
    net = Zor([Layer(9, homeostasis_rate=0.01), Layer(7), Layer(4)], seed=1, **kw)
    if theta is not None:
        with torch.no_grad():
            net.threshold(1)[: 4 if theta > 0 else 7] = theta
    return net


def _run(proto, spec: dict, state: dict, x: np.ndarray, target: np.ndarray) -> dict:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got, new = lb.run_step(sess, spec, state_names(spec), state, x, target, ("output", "health"))
    return dict(new, output=got["output"], health=got["health"])


@pytest.mark.parametrize("theta", [None, 1e9, -1e9])
@pytest.mark.parametrize("kw", [{}, {"optimizer": "sgd"}, {"rule": "post_spikes", "optimizer": "adam"}])
def test_masked_graph_computes_the_full_step(monkeypatch, theta, kw) -> None:
    """The same start and batch through the masked graph (W_0 transposed, U on the active post units) and the
    full one (every product): every new state tensor, the output and health agree to float rounding, with some
    hidden units silent (θ = None: as drawn; 1e9: 4 of 7 silent) and with every one active (−1e9)."""
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    net = _net(theta, **kw)
    spec = spec_of(net)
    assert spec["transposed"][0] == "weight_0" and {b["rows"][1] for b in spec["blocks"]} >= {7}
    masked = build_step_graph(net)
    spec_full = spec_of(net, masked=False)
    assert spec_full["transposed"] == [] and spec_full["blocks"][0]["rows"] == [0, 2]      # rows of W_0 (9, 7)
    full = build_step_graph(net, masked=False)
    rng = np.random.default_rng(0)
    x, target = rng.random((5, 9), dtype=np.float32), rng.random((5, 4), dtype=np.float32)
    state = initial_state(net)
    a, b = _run(masked, spec, state, x, target), _run(full, spec_full, state, x, target)
    for name, want in b.items():
        np.testing.assert_allclose(a[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
    if theta == 1e9 and not kw:               # AdamW from m = 0: the silent units' columns get no gradient
        np.testing.assert_array_equal(a["adam_m_0"][:, :4], 0.0)
        assert np.abs(a["adam_m_0"][:, 4:]).max() > 0


def test_no_hidden_unit_spikes_the_masked_graph_still_steps(monkeypatch) -> None:
    """K = 0 (θ_1 = 1e9 for every hidden unit): the gathered products are the one zero row, every block gathers
    it, the norm is 0 (clipped by max(·, 1e-12)), W_0 only decays: W ← W (1 − lr·wd), by hand."""
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    net = _net()
    with torch.no_grad():
        net.threshold(1)[:] = 1e9
    spec = spec_of(net)
    state = initial_state(net)
    rng = np.random.default_rng(1)
    got = _run(build_step_graph(net), spec, state, rng.random((3, 9), dtype=np.float32),
               rng.random((3, 4), dtype=np.float32))
    lr, wd = net.config.lr, net.config.weight_decay
    np.testing.assert_allclose(got["weight_0"], state["weight_0"] * np.float32(1 - lr * wd), rtol=1e-6)
    np.testing.assert_array_equal(got["adam_m_0"], 0.0)
    assert np.isfinite(got["health"])


@pytest.mark.parametrize("theta", [None, 1e9])
def test_masked_graph_passes_the_check_against_the_engine(monkeypatch, theta) -> None:
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    rep = verify_learnable(_net(theta), batches=15, batch_size=6)
    assert rep["passed"], rep["failures"]
    assert rep["worst"]["weight_0"] <= 1e-4 and rep["spike_mismatches"] == 0


def test_export_without_the_masked_form(monkeypatch, tmp_path) -> None:
    """export_learnable(masked=False): W_0 stays (9, 7) in the file, in row blocks of W_0's rows, no masking
    operator in the graph; its learner ends 5 steps where the masked file's does (to 1e-5 relative)."""
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    net = _net()
    export_learnable(net, tmp_path / "full.onnx", batches=5, masked=False)
    export_learnable(net, tmp_path / "masked.onnx", batches=5)
    full, masked = Learner(tmp_path / "full.onnx"), Learner(tmp_path / "masked.onnx")
    assert full.spec["transposed"] == [] and full._bound.live["weight_0"].shape == (9, 7)
    assert "NonZero" not in {n.op_type for n in onnx.load(tmp_path / "full.onnx").graph.node}
    rng = np.random.default_rng(4)
    for _ in range(5):
        x, t = rng.random((6, 9), dtype=np.float32), rng.random((6, 4), dtype=np.float32)
        np.testing.assert_allclose(masked.step(x, t), full.step(x, t), rtol=1e-5, atol=1e-6)
    for name, want in full.state.items():
        np.testing.assert_allclose(masked.state[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_learner_keeps_w_as_n_i_by_n_next_outside(monkeypatch, tmp_path) -> None:
    """The file holds W_0ᵀ (7, 9) as its start; Learner.state, weights and state files hold W_0 (9, 7); a
    resumed session ends bit for bit where an uninterrupted one does."""
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    net = _net(1e9)
    export_learnable(net, tmp_path / "m.onnx", batches=5)
    lr = Learner(tmp_path / "m.onnx")
    assert lr.spec["transposed"] == ["weight_0", "adam_m_0", "adam_v_0"]
    assert lr._bound.live["weight_0"].shape == (7, 9)
    np.testing.assert_array_equal(lr.state["weight_0"], initial_state(net)["weight_0"])
    assert lr.weights[0].shape == (9, 7) and lr.state["adam_v_0"].shape == (9, 7)
    rng = np.random.default_rng(2)
    batches = [(rng.random((6, 9), dtype=np.float32), rng.random((6, 4), dtype=np.float32)) for _ in range(8)]
    for x, t in batches[:4]:
        lr.step(x, t)
    lr.save_state(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert z[f"s_{lr.names.index('weight_0')}"].shape == (9, 7)
    for x, t in batches[4:]:
        lr.step(x, t)
    resumed = Learner(tmp_path / "m.onnx")
    resumed.load_state(tmp_path / "s.npz")
    for x, t in batches[4:]:
        resumed.step(x, t)
    for name, value in lr.state.items():
        np.testing.assert_array_equal(resumed.state[name], value, err_msg=name)
    lr.save(tmp_path / "adapted.onnx")                  # the inference file takes W_0 as (9, 7), checked


@pytest.mark.parametrize("names", [["weight_1"], ["threshold_0"], ["weight_9"], "weight_0", [3]])
def test_learner_refuses_a_transposed_list_that_does_not_fit(names) -> None:
    """spec["transposed"] must name weight-shaped state tensors held as (n_{i+1}, n_i) (W_0ᵀ (7, 9) here): another
    tensor, one held the other way (W_1 (7, 4)), an unknown one or a non-list is refused (exit 2)."""
    from zor.runtime.learner_file import check_turned as _check_turned
    start = {"weight_0": np.zeros((7, 9), np.float32), "weight_1": np.zeros((7, 4), np.float32),
             "threshold_0": np.zeros(9, np.float32)}
    with pytest.raises(ModelFileError, match="transposed: expected weight-shaped") as exc:
        _check_turned(names, start, [9, 7, 4], "m.onnx")
    assert exc.value.exit_code == 2
    assert _check_turned(["weight_0"], start, [9, 7, 4], "m.onnx") == {"weight_0"}


@pytest.mark.parametrize("theta, form", [(-1e9, 1), (1e9, 0)])
def test_learner_runs_the_every_unit_graph_when_most_units_spike(monkeypatch, tmp_path, theta, form) -> None:
    """A masked file carries the every-unit graph (checked against the engine too); the Learner runs it once more
    than EVERY_UNIT_ABOVE = 60 % of the hidden units spiked (−1e9: 7 of 7; 1e9: 3 of 7 = 43 %: the masked one),
    and either way learns what a masked=False file learns (to 1e-5 relative)."""
    from zor.runtime.learner_forms import CHOOSE_EVERY, EVERY_UNIT_KEY
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    net = _net(theta)
    rep = export_learnable(net, tmp_path / "m.onnx", batches=5)
    assert rep["every_unit"]["passed"] and rep["every_unit"]["spike_mismatches"] == 0
    export_learnable(net, tmp_path / "full.onnx", batches=5, masked=False)
    lr, full = Learner(tmp_path / "m.onnx"), Learner(tmp_path / "full.onnx")
    assert EVERY_UNIT_KEY in lr.meta and EVERY_UNIT_KEY not in full.meta and full._forms.twin is None
    rng = np.random.default_rng(5)
    for _ in range(3 * CHOOSE_EVERY):
        x, t = rng.random((6, 9), dtype=np.float32), rng.random((6, 4), dtype=np.float32)
        np.testing.assert_allclose(lr.step(x, t), full.step(x, t), rtol=1e-5, atol=1e-6)
    assert lr._forms.form == form and lr._forms.counts[form] >= 2 * CHOOSE_EVERY
    for name, want in full.state.items():
        np.testing.assert_allclose(lr.state[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_twin_graph_that_is_not_one_is_refused(monkeypatch, tmp_path) -> None:
    """The every-unit graph is checked like the file's own: not base64, not ONNX, or holding an operator a
    learnable export never emits → ModelFileError (exit 2)."""
    import base64

    from onnx import helper
    from zor.runtime.learner_forms import EVERY_UNIT_KEY, _twin
    odd = helper.make_model(helper.make_graph([helper.make_node("Einsum", ["a", "a"], ["b"], equation="i,i->i")], "g",
                                              [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2])],
                                              [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])]))
    for text, match in (("not base64 !", "expected a base64"), (base64.b64encode(b"\x08\x07junk").decode(), "base64"),
                        (base64.b64encode(odd.SerializeToString()).decode(), "Einsum")):
        with pytest.raises(ModelFileError, match=match) as exc:
            _twin({EVERY_UNIT_KEY: text}, ort.SessionOptions(), "m.onnx")
        assert exc.value.exit_code == 2
    assert _twin({}, ort.SessionOptions(), "m.onnx") is None
