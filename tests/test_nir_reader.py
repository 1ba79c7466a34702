"""The NIR reader's input checks: every malformed graph is a NirGraphError (exit 2) naming the node and what was
expected, and nothing is written at the output path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export.cli import main as export_main  # noqa: E402
from zor.export.nir import export_nir, load_graph, simulate  # noqa: E402

from zor.common.errors import NirGraphError  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "nir" / "ff_lif.nir"
A = np.asarray
F = np.float32


def lif(n=2, **over):
    p = dict(tau=np.full(n, 2e-3, F), r=np.ones(n, F), v_leak=np.zeros(n, F), v_threshold=np.ones(n, F),
             v_reset=np.zeros(n, F))
    p.update(over)
    return nir.LIF(**p)


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def good():
    return graph({"input": nir.Input(A([3])), "fc": nir.Affine(np.ones((2, 3), F), np.zeros(2, F)), "lif": lif(),
                  "output": nir.Output(A([2]))}, [("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_good_graph_loads():
    g = load_graph(good())
    assert g.order == ["input", "fc", "lif", "output"] and g.input_shape == (3,) and g.output_shape == (2,)


def test_unknown_node_type_lists_supported():
    g = good()
    g.nodes["lif"] = nir.Delay(np.ones(2, F))
    with pytest.raises(NirGraphError, match=r"node 'lif' has NIR type 'Delay'.*expected one of Affine.*LIF"):
        load_graph(g)


def test_nan_parameter_names_node():
    g = good()
    g.nodes["lif"] = lif(tau=np.array([2e-3, np.nan], F))
    with pytest.raises(NirGraphError, match=r"node 'lif' \(LIF\): parameter tau holds 1 non-finite"):
        load_graph(g)


def test_shapes_that_do_not_meet():
    g = good()
    g.nodes["fc"] = nir.Affine(np.ones((2, 4), F), np.zeros(2, F))      # takes 4, the input gives 3
    with pytest.raises(NirGraphError, match=r"node 'fc' \(Affine\) declares input shape \[4\] but its incoming edges "
                                            r"carry \[3\]: expected the shapes to meet"):
        load_graph(g)
    g.nodes["fc"].input_type = {}                                       # undeclared: the weight itself is checked
    with pytest.raises(NirGraphError, match=r"node 'fc' \(Affine\): weight \[2, 4\] does not meet the input \[3\]"):
        load_graph(g)


def test_parameter_of_wrong_size():
    g = good()
    g.nodes["lif"] = lif(n=3)                                            # 3 thresholds for 2 units
    g.nodes["lif"].input_type = {}
    with pytest.raises(NirGraphError, match=r"node 'lif' \(LIF\): parameter tau has shape \[3\]: expected a scalar"):
        load_graph(g)


def test_dangling_edge():
    g = good()
    g.edges.append(("lif", "nowhere"))
    with pytest.raises(NirGraphError, match=r"'nowhere' is not a node \(dangling edge\)"):
        load_graph(g)


def test_missing_parameter():
    g = good()
    del g.nodes["lif"].tau
    with pytest.raises(NirGraphError, match=r"node 'lif' \(LIF\) has no parameter 'tau'"):
        load_graph(g)


def test_unfed_node():
    g = good()
    g.nodes["extra"] = lif()
    with pytest.raises(NirGraphError, match=r"node 'extra' \(LIF\) has no incoming edge"):
        load_graph(g)


def test_non_positive_tau():
    g = good()
    g.nodes["lif"] = lif(tau=np.array([2e-3, 0.0], F))
    with pytest.raises(NirGraphError, match=r"tau holds 1 value\(s\) ≤ 0"):
        simulate(g, np.zeros((1, 1, 3), F), 1e-3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dt=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan)))
def test_bad_dt_refused_and_nothing_written(dt, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(NirGraphError, match="expected a positive finite time step"):
        export_nir(good(), out, dt=dt)
    assert not out.exists()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=FIXTURE.stat().st_size - 1))
def test_truncated_file_refused(cut, tmp_path):
    p = tmp_path / "cut.nir"
    p.write_bytes(FIXTURE.read_bytes()[:cut])
    with pytest.raises(NirGraphError, match=r"expected (a NIR graph|an HDF5 file)"):
        load_graph(p)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_foreign_bytes_refused(data, tmp_path):
    p = tmp_path / "x.nir"
    p.write_bytes(data)
    with pytest.raises(NirGraphError):
        load_graph(p)


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), steps=st.integers(1, 3))
def test_simulate_refuses_inputs_of_the_wrong_shape(shape, steps):
    g = good()
    xs = np.zeros([steps, 1] + shape, F)
    if shape == [3]:
        assert simulate(g, xs, 1e-3).outputs["output"].shape == (steps, 1, 2)
    else:
        with pytest.raises(Exception, match=r"expected \(T, B, 3\)"):
            simulate(g, xs, 1e-3)


def test_cli_bad_file_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all")
    out = tmp_path / "out" / "m.onnx"
    res = CliRunner().invoke(export_main, [str(bad), "-o", str(out), "--dt", "1e-3"])
    assert res.exit_code == 2 and "not an HDF5 file" in res.output and "Traceback" not in res.output
    assert not out.exists() and not out.parent.exists()


def test_cli_unknown_node_exits_2(tmp_path):
    g = good()
    g.nodes["lif"] = nir.Delay(np.ones(2, F))
    nir.write(str(tmp_path / "d.nir"), g)
    res = CliRunner().invoke(export_main, [str(tmp_path / "d.nir"), "-o", str(tmp_path / "m.onnx"), "--dt", "1e-3"])
    assert res.exit_code == 2 and "'Delay'" in res.output and "expected one of" in res.output
    assert not (tmp_path / "m.onnx").exists()


def test_cli_output_equal_to_input_exits_2(tmp_path):
    p = tmp_path / "g.nir"
    nir.write(str(p), good())
    before = p.read_bytes()
    res = CliRunner().invoke(export_main, [str(p), "-o", str(p), "--dt", "1e-3"])
    assert res.exit_code == 2 and p.read_bytes() == before
