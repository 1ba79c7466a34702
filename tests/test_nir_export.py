"""export_nir end to end: verification before writing, the metadata contract, the runtime's Model.run / stream /
zor-run / zor-export on the exported step graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export import export_nir  # noqa: E402
from zor.export.cli import main as export_main  # noqa: E402
from zor.export.nir import initial_state, load_graph, simulate  # noqa: E402
from zor.export.nir.kinds import REGISTRY  # noqa: E402
from zor.runtime import Model  # noqa: E402
from zor.runtime.cli import run_main  # noqa: E402

from zor.common.errors import ConfigError, VerificationError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "nir"
RSYN = FIXTURES / "rsyn_cuba.nir"     # snnTorch: Affine → CubaLIF with a recurrent Affine → Affine → LIF
CONV = FIXTURES / "conv_lif.nir"      # snnTorch: Conv2d → LIF → Flatten → Affine → LIF, input (1, 14, 14)
DT = 1e-4


def events(shape, steps=30, batch=3, seed=5):
    return (np.random.default_rng(seed).random((steps, batch) + tuple(shape)) < 0.3).astype(np.float32)


def test_export_writes_state_metadata_and_verification(tmp_path):
    res = export_nir(RSYN, tmp_path / "r.onnx", dt=DT, steps=50)
    m = Model(res.path)
    graph = load_graph(RSYN)
    state = m.metadata.state
    # CubaLIF '1.lif' at position 2 of the order: i and v; LIF '3' at 5: v; the recurrent edge 1.w_rec → 1.lif
    assert [(s.input, s.output, s.size) for s in state] == [
        ("state_in_2_i", "state_out_2_i", 24), ("state_in_2_v", "state_out_2_v", 24), ("state_in_5_v", "state_out_5_v", 10),
        ("state_in_edge_0", "state_out_edge_0", 24)]
    bias = graph.nodes["1.w_rec"].params["bias"]
    np.testing.assert_array_equal(np.asarray(state[3].initial, np.float32), bias)   # the edge starts at its bias
    nir_meta = json.loads(m.metadata.raw["zor.nir"])
    assert nir_meta["source"] == "rsyn_cuba.nir" and nir_meta["dt"] == DT and nir_meta["discretisation"] == "euler"
    assert nir_meta["recurrent_edges"] == [["1.w_rec", "1.lif"]]
    ver = m.metadata.verification
    assert ver["passed"] is True and [r["start"] for r in ver["nir"]["runs"]] == ["zero state", "random state"]
    for run in ver["nir"]["runs"]:
        assert run["steps"] == 50 and run["passed"]
        for stats in run["spikes"].values():
            assert stats["agreement"] + stats["ties"] / (50 * 8 * 24) >= 1.0 - 1e-12
    assert "zor.integrity" in m.metadata.raw


def test_stream_equals_reference_and_run_with_explicit_state(tmp_path):
    export_nir(RSYN, tmp_path / "r.onnx", dt=DT, steps=20)
    m = Model(tmp_path / "r.onnx")
    xs = events((196,))
    ref = simulate(RSYN, xs, DT)
    s = m.stream()
    got = np.stack([s.step(x)["output"] for x in xs])
    assert (got == ref.outputs["output"]).mean() >= 0.999                 # spikes: ties at most
    # Model.run for one step with explicit state: step 10 from the reference's state after step 9
    state = {k: v[9] for k, v in ref.states.items()}
    out = m.run({"input": xs[10], **state})
    np.testing.assert_array_equal(out["output"], ref.outputs["output"][10])
    np.testing.assert_allclose(out["state_out_2_v"], ref.states["state_in_2_v"][10], atol=1e-5)


def test_conv_stream_takes_unflattened_events(tmp_path):
    export_nir(CONV, tmp_path / "c.onnx", dt=DT, steps=10)
    xs = events((1, 14, 14), steps=10)
    s1, s2 = Model(tmp_path / "c.onnx").stream(), Model(tmp_path / "c.onnx").stream()
    for x in xs:
        np.testing.assert_array_equal(s1.step(x)["output"], s2.step(x.reshape(len(x), -1))["output"])


def test_verification_failure_raises_typed_error_and_writes_nothing(tmp_path, monkeypatch):
    lif = REGISTRY["LIF"]
    original = lif.onnx_step

    def off_by_a_bit(node, b, x, state, dt):        # the exported leak 1 % stronger than the reference's
        return original(node, b, b.op("Mul", [x, b.const(np.float32(1.01), "bad")]), state, dt)

    monkeypatch.setattr(lif, "onnx_step", off_by_a_bit)
    out = tmp_path / "bad.onnx"
    with pytest.raises(VerificationError) as err:
        export_nir(RSYN, out, dt=DT, steps=20)
    assert not out.exists()
    assert err.value.report["passed"] is False and err.value.report["failures"]
    assert any("state_out_5_v" in f for f in err.value.report["failures"])


def test_initial_state_is_zero_but_edges(tmp_path):
    st = initial_state(load_graph(RSYN), 2)
    assert not st["state_in_2_v"].any() and st["state_in_edge_0"].shape == (2, 24)


def test_fp16_and_unknown_path_are_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="expected 'none' \\(float32\\) or 'int8'"):
        export_nir(RSYN, tmp_path / "q.onnx", dt=DT, quantize="fp16")
    with pytest.raises(ConfigError, match="expected 'dense', 'sparse'"):
        export_nir(RSYN, tmp_path / "s.onnx", dt=DT, path="union")
    assert not list(tmp_path.iterdir())


def test_sparse_form_equals_dense_and_takes_one_row(tmp_path):
    """--path sparse: the three Affine nodes read only the rows of non-zero inputs; same outputs as dense."""
    dense = export_nir(RSYN, tmp_path / "d.onnx", dt=DT, steps=30)
    sparse = export_nir(RSYN, tmp_path / "s.onnx", dt=DT, steps=30, path="sparse")
    assert dense.paths == {}
    assert [c["node"] for c in sparse.paths["connections"]] == ["0", "1.w_rec", "2"]
    assert sparse.paths["max_batch"] == 1 and sparse.verification["nir"]["runs"][0]["batch"] == 1
    m = Model(tmp_path / "s.onnx")
    assert m.path_kind == "sparse" and m.max_batch == 1
    xs = events((196,), steps=30, batch=1)
    a, b = Model(tmp_path / "d.onnx").stream(), m.stream()
    ya = np.stack([a.step(x)["output"] for x in xs])
    yb = np.stack([b.step(x)["output"] for x in xs])
    assert (ya == yb).mean() >= 0.999
    with pytest.raises(Exception, match="at most 1 row"):
        m.stream().step(xs[0].repeat(2, axis=0))


def test_cli_export_and_zor_run_on_events(tmp_path):
    out = tmp_path / "r.onnx"
    res = CliRunner().invoke(export_main, [str(RSYN), "-o", str(out), "--dt", str(DT), "--steps", "20"])
    assert res.exit_code == 0, res.output
    assert "verification from zero state over 20 steps" in res.output
    xs = events((196,), steps=15, batch=2)
    np.save(tmp_path / "ev.npy", xs)
    np.save(tmp_path / "ev1.npy", xs[:, 0])                  # (T, n): one sequence
    for name in ("ev", "ev1"):
        r = CliRunner().invoke(run_main, [str(out), str(tmp_path / f"{name}.npy"), "-o", str(tmp_path / f"{name}-y.npy")])
        assert r.exit_code == 0, r.output
    want = simulate(RSYN, xs, DT).outputs["output"]
    y, y1 = np.load(tmp_path / "ev-y.npy"), np.load(tmp_path / "ev1-y.npy")
    assert y.shape == (15, 2, 10) and y1.shape == (15, 10)
    assert (y == want).mean() >= 0.999 and (y1 == want[:, 0]).mean() >= 0.999
    np.save(tmp_path / "wrong.npy", np.zeros((5, 2, 7), np.float32))
    r = CliRunner().invoke(run_main, [str(out), str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "w-y.npy")])
    assert r.exit_code == 2 and "expected (T, B, 196) or (T, 196)" in r.output and not (tmp_path / "w-y.npy").exists()


def test_cli_dt_without_nir_and_nir_without_dt(tmp_path):
    r = CliRunner().invoke(export_main, [str(RSYN), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "needs --dt" in r.output
    ckpt = tmp_path / "m.zor"
    ckpt.write_bytes(b"x")
    r = CliRunner().invoke(export_main, [str(ckpt), "-o", str(tmp_path / "m.onnx"), "--dt", "1"])
    assert r.exit_code == 2 and "--dt is for NIR graphs" in r.output


FF = FIXTURES / "ff_lif.nir"           # snnTorch: Affine → LIF → Affine → LIF (1-D throughout)


def test_one_dimensional_graph_has_no_reshape_and_names_nodes_by_position(tmp_path):
    """A Reshape to the shape a (B, n) tensor already has is left out: the producer's output is renamed to
    the graph output (state_out_*, spikes_*, output); every node carries the NIR node's position k."""
    import onnx

    export_nir(FF, tmp_path / "f.onnx", dt=DT, steps=10)
    proto = onnx.load(tmp_path / "f.onnx")
    assert [n.op_type for n in proto.graph.node if n.op_type == "Reshape"] == []
    assert all(n.name.startswith("node") and "." in n.name for n in proto.graph.node)
    produced = {o for n in proto.graph.node for o in n.output}
    assert {o.name for o in proto.graph.output} <= produced


def test_stream_run_equals_step_by_step_and_carries_on(tmp_path):
    export_nir(RSYN, tmp_path / "r.onnx", dt=DT, steps=10)
    m = Model(tmp_path / "r.onnx")
    xs = events((196,), steps=12, batch=2)
    a, b = m.stream(), m.stream()
    want = np.stack([a.step(x)["output"] for x in xs])
    got = np.concatenate([b.run(xs[:5])["output"], b.run(xs[5:])["output"]])   # fresh, then carried
    np.testing.assert_array_equal(got, want)
    assert b.steps == 12
    for k, v in a.state.items():
        np.testing.assert_array_equal(b.state[k], v)
    c = Model(tmp_path / "r.onnx").stream()                        # events as (T, B, *input_shape) too
    np.testing.assert_array_equal(c.run(xs.reshape(12, 2, 196))["output"], want)


def test_stream_run_and_carried_step_refuse_bad_input(tmp_path):
    from zor.common.errors import NonFiniteError, ShapeError, StateError

    export_nir(CONV, tmp_path / "c.onnx", dt=DT, steps=5)
    s = Model(tmp_path / "c.onnx").stream()
    xs = events((1, 14, 14), steps=4, batch=2)
    s.run(xs)
    with pytest.raises(StateError, match="expected a batch of 2 rows"):
        s.run(xs[:, :1])
    with pytest.raises(StateError, match="expected a batch of 2 rows"):
        s.step(xs[0, :1])                                          # the carried step's own check
    with pytest.raises(ShapeError, match=r"expected a sequence \(T, B, 196\)"):
        s.run(xs[0].reshape(2, 196))                               # one step, not a sequence
    bad = xs.copy()
    bad[2, 1, 0, 3, 3] = np.nan
    before = s.state
    with pytest.raises(NonFiniteError, match="NaN"):
        s.run(bad)
    with pytest.raises(NonFiniteError, match="NaN"):
        s.step(bad[2])
    for k, v in before.items():                                    # nothing ran: the state is as it was
        np.testing.assert_array_equal(s.state[k], v)
    with pytest.raises(ShapeError, match="expected shape"):
        s.step(np.zeros((2, 195), np.float32))


def test_stream_run_input_checks_hold_for_any_shape_and_dtype(tmp_path):
    """Stream.run on arbitrary arrays: the right output shape, or a typed error naming what was expected."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from zor.common.errors import ZorError

    export_nir(FF, tmp_path / "f.onnx", dt=DT, steps=5)
    m = Model(tmp_path / "f.onnx")

    @settings(max_examples=60, deadline=None)
    @given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple) | st.sampled_from([(2, 1, 196), (3, 2, 196)]),
           dtype=st.sampled_from([np.float32, np.float64, np.int32, np.bool_]), nan=st.booleans())
    def check(shape, dtype, nan):
        xs = np.zeros(shape, dtype)
        if nan and xs.size and dtype in (np.float32, np.float64):
            xs.reshape(-1)[0] = np.nan
        s = m.stream()
        try:
            y = s.run(xs)["output"]
        except ZorError as exc:
            assert "expected" in str(exc)
            return
        assert shape[2:] == (196,) and np.issubdtype(dtype, np.floating) and not nan
        assert y.shape == (shape[0], shape[1], 10)
    check()
