"""Row blocks of the learnable step graph (zor.export.learnable_blocks): the split, the graph that uses it
against the graph without it, the check against the engine, and the runtime Learner bound to row views."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import zor.export.learnable_blocks as lb
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.export.learnable import export_learnable, initial_state, verify_learnable
from zor.export.learnable_graph import build_step_graph, spec_of, state_names
from zor.runtime import Learner

from zor import Layer, Zor


def test_row_blocks_of_784_256_10_by_hand() -> None:
    """784·256 = 200,704 elements > 65,536: ⌈200704 / 65536⌉ = 4 blocks of 784/4 = 196 rows for W_0 and
    its two Adam moments; W_1 (2,560 elements) is not split."""
    blocks = lb.row_blocks([784, 256, 10], "adamw", [0.0, 0.0, 0.0])
    assert {b["state"] for b in blocks} == {"weight_0", "adam_m_0", "adam_v_0"}
    w = [b for b in blocks if b["state"] == "weight_0"]
    assert [b["rows"] for b in w] == [[0, 196], [196, 392], [392, 588], [588, 784]]
    assert [(b["input"], b["output"]) for b in w][1] == ("weight_0.1", "weight_0_out.1")


def test_row_blocks_name_momentum_and_novelty(monkeypatch) -> None:
    """9 × 7 = 63 elements, at most 20 per block: ⌈63/20⌉ = 4 blocks, rows round(k·9/4) = 0, 2, 4, 7, 9;
    SGD keeps one momentum, novelty adds its trace; 7 × 4 = 28 → 2 blocks of rows 0–4, 4–7 (round(3.5) = 4)."""
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    blocks = lb.row_blocks([9, 7, 4], "sgd", [0.1, 0.0, 0.0])
    assert sorted({b["state"] for b in blocks}) == ["momentum_0", "momentum_1", "novelty_0", "weight_0", "weight_1"]
    assert [b["rows"] for b in blocks if b["state"] == "novelty_0"] == [[0, 2], [2, 4], [4, 7], [7, 9]]
    assert [b["rows"] for b in blocks if b["state"] == "weight_1"] == [[0, 4], [4, 7]]


def _net(**kw) -> Zor:
    return Zor([Layer(9, homeostasis_rate=0.01), Layer(7, novelty_factor=kw.pop("novelty", 0.0)), Layer(4)],
               seed=1, **kw)


def _run(proto, spec: dict, state: dict, x: np.ndarray, target: np.ndarray) -> dict:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got, new = lb.run_step(sess, spec, state_names(spec), state, x, target, ("output", "health"))
    return dict(new, output=got["output"], health=got["health"])


@pytest.mark.parametrize("kw", [{}, {"optimizer": "sgd", "novelty": 0.2}, {"optimizer": "adam", "rule": "normalized"},
                                {"rule": "coactivity", "weight_decay": 0.0}])
def test_blocked_graph_computes_the_unblocked_step(monkeypatch, kw) -> None:
    """The same start and batch through the graph in row blocks and the whole graph: every new state tensor,
    the output and health agree to float rounding (the blocks' norms are summed in another order)."""
    net = _net(**kw)
    whole = build_step_graph(net)
    spec_whole = spec_of(net)
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    spec = spec_of(net)
    assert spec["blocks"] and not spec_whole["blocks"]
    blocked = build_step_graph(net)
    assert {i.name for i in blocked.graph.input} >= {"weight_0", "weight_0.3", "weight_1.1"}
    rng = np.random.default_rng(0)
    x, target = rng.random((5, 9), dtype=np.float32), rng.random((5, 4), dtype=np.float32)
    state = initial_state(net)
    a, b = _run(blocked, spec, state, x, target), _run(whole, spec_whole, state, x, target)
    for name, want in b.items():
        np.testing.assert_allclose(a[name], want, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("kw", [{}, {"optimizer": "sgd", "novelty": 0.2}])
def test_blocked_graph_passes_the_check_against_the_engine(monkeypatch, kw) -> None:
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    rep = verify_learnable(_net(**kw), batches=15, batch_size=6)
    assert rep["passed"], rep["failures"]
    assert rep["worst"]["weight_0"] <= 1e-4 and rep["spike_mismatches"] == 0


def test_learner_on_a_blocked_file_matches_the_whole_one(monkeypatch, tmp_path) -> None:
    """Two files of one start, with and without row blocks: 12 learner steps on the same batches end in the
    same state (to 1e-5 relative); the blocked learner's save_state/load_state resumes bit for bit."""
    net = _net()
    export_learnable(net, tmp_path / "whole.onnx", batches=5)
    monkeypatch.setattr(lb, "BLOCK_ELEMENTS", 20)
    export_learnable(net, tmp_path / "blocked.onnx", batches=5)
    whole, blocked = Learner(tmp_path / "whole.onnx"), Learner(tmp_path / "blocked.onnx")
    assert blocked.spec["blocks"] and not whole.spec["blocks"]
    rng = np.random.default_rng(3)
    batches = [(rng.random((6, 9), dtype=np.float32), rng.random((6, 4), dtype=np.float32)) for _ in range(12)]
    for x, t in batches[:6]:
        np.testing.assert_allclose(blocked.step(x, t), whole.step(x, t), rtol=1e-5, atol=1e-6)
    blocked.save_state(tmp_path / "s.npz")
    for x, t in batches[6:]:
        blocked.step(x, t), whole.step(x, t)
    for name, want in whole.state.items():                      # θ of the output layer is −inf in both
        np.testing.assert_allclose(blocked.state[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(blocked.predict(batches[0][0]), whole.predict(batches[0][0]), rtol=1e-5, atol=1e-6)
    resumed = Learner(tmp_path / "blocked.onnx")
    resumed.load_state(tmp_path / "s.npz")
    for x, t in batches[6:]:
        resumed.step(x, t)
    for name, value in blocked.state.items():
        np.testing.assert_array_equal(resumed.state[name], value, err_msg=name)
    blocked.save(tmp_path / "adapted.onnx")                     # checked against the step graph's output
    assert (tmp_path / "adapted.onnx").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 12), st.integers(-2, 12)), min_size=1, max_size=5))
def test_learner_refuses_blocks_that_do_not_split_the_rows(rows) -> None:
    """A file's listed row blocks must split the state tensor's 9 rows into consecutive ranges lo < hi from 0
    to 9, else ModelFileError (exit 2) before anything is bound; any such split is taken."""
    from zor.runtime.learner_file import check_blocks as _check_blocks

    from zor.common.errors import ModelFileError
    start = {"weight_0": np.zeros((9, 7), np.float32), "step": np.zeros((), np.float32)}
    blocks = [{"state": "weight_0", "rows": [lo, hi], "input": f"weight_0.{k}", "output": f"weight_0_out.{k}"}
              for k, (lo, hi) in enumerate(rows)]
    ok = rows[0][0] == 0 and rows[-1][1] == 9 and all(lo < hi for lo, hi in rows) \
        and all(rows[k][1] == rows[k + 1][0] for k in range(len(rows) - 1))
    if ok:
        _check_blocks(blocks, start, "m.onnx")
    else:
        with pytest.raises(ModelFileError, match="blocks: expected consecutive row ranges") as exc:
            _check_blocks(blocks, start, "m.onnx")
        assert exc.value.exit_code == 2


@pytest.mark.parametrize("blocks", [[{"state": "weight_5", "rows": [0, 9], "input": "a", "output": "b"}],
                                    [{"state": "step", "rows": [0, 1], "input": "a", "output": "b"}],
                                    [{"rows": [0, 9]}], ["weight_0"], [{"state": "weight_0", "rows": [0],
                                                                        "input": "a", "output": "b"}]])
def test_learner_refuses_malformed_blocks(blocks) -> None:
    from zor.runtime.learner_file import check_blocks as _check_blocks

    from zor.common.errors import ModelFileError
    start = {"weight_0": np.zeros((9, 7), np.float32), "step": np.zeros((), np.float32)}
    with pytest.raises(ModelFileError, match="zor.learnable blocks"):
        _check_blocks(blocks, start, "m.onnx")
