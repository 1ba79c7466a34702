"""Event tensors through a NIR import (zor.runtime.events): the (T, ...) shapes accepted, ``zor-run`` end to end
on a folder of event files, and bad event files refused with exit 2, nothing written, no traceback."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from zor.common.errors import ShapeError

nir = pytest.importorskip("nir", reason="the 'nir' extra reads NIR graphs")

from zor.export import export_nir  # noqa: E402
from zor.runtime import Model  # noqa: E402
from zor.runtime.cli import run_main  # noqa: E402
from zor.runtime.events import event_batches, is_event_model, run_events  # noqa: E402

RSYN = Path(__file__).parent / "fixtures" / "nir" / "rsyn_cuba.nir"     # input (196,), output (10,)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("events") / "r.onnx"
    export_nir(RSYN, path, dt=1e-4, steps=10)
    return path


def events(t=12, b=3, seed=1):
    return (np.random.default_rng(seed).random((t, b, 196)) < 0.3).astype(np.float32)


def fake(shape):
    """What event_batches reads of a model: the input shape in zor.task and the flat width n_0."""
    task = {"source": "nir", "input": {"shape": list(shape)}}
    return SimpleNamespace(metadata=SimpleNamespace(task=task), sizes=[math.prod(shape)])


@settings(max_examples=200, deadline=None)
@given(shape=st.sampled_from([(4,), (1, 2, 2), (2, 3)]), dims=st.lists(st.integers(1, 4), min_size=1, max_size=5))
def test_event_shapes_accepted_are_exactly_the_four_forms(shape, dims):
    """(T, *shape), (T, n_0), (T, B, *shape), (T, B, n_0) and nothing else; the values kept in C order."""
    model, n0 = fake(shape), math.prod(shape)
    xs = np.arange(math.prod(dims), dtype=np.float32).reshape(dims)
    forms = {(dims[0], *shape): False, (dims[0], n0): False}
    if len(dims) >= 2:
        forms.update({(dims[0], dims[1], *shape): True, (dims[0], dims[1], n0): True})
    try:
        got, batched = event_batches(model, xs)
    except ShapeError as exc:
        assert tuple(dims) not in forms and "expected (T, B, " in str(exc)
        return
    assert tuple(dims) in forms and batched == forms[tuple(dims)]
    assert got.dtype == np.float32 and got.shape == (dims[0], dims[1] if batched else 1, n0)
    np.testing.assert_array_equal(got.reshape(-1), xs.reshape(-1))


def test_run_events_is_one_stream_step_per_time_step(model_path):
    m = Model(model_path)
    assert is_event_model(m)
    xs = events()
    stream = m.stream()
    want = np.stack([stream.step(x)["output"] for x in xs])
    np.testing.assert_array_equal(run_events(m, xs), want)                       # (T, B, 10)
    np.testing.assert_array_equal(run_events(m, xs.astype(bool)), want)          # bool and uint8 events: the same
    np.testing.assert_array_equal(run_events(m, xs.astype(np.uint8)), want)


def test_zor_run_a_folder_of_event_files(model_path, tmp_path):
    xs = events()
    np.save(tmp_path / "a.npy", xs)
    np.save(tmp_path / "b.npy", xs[:5, 0])                     # (T, n_0): one sequence
    r = CliRunner().invoke(run_main, [str(model_path), str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o",
                                      str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    a, b = np.load(tmp_path / "out" / "a.npy"), np.load(tmp_path / "out" / "b.npy")
    np.testing.assert_array_equal(a, run_events(Model(model_path), xs))
    assert b.shape == (5, 10) and set(np.unique(a)) <= {0.0, 1.0}


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p, np.where(events() > 0, np.nan, 0).astype(np.float32)), "non-finite value(s): expected finite"),
    (lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True), "expected a .npy array file of events"),
    (lambda p: np.save(p, np.zeros((0, 196), np.float32)), "expected (T, B, 196) or (T, 196)"),
    (lambda p: np.save(p, np.zeros((4, 2, 195), np.float32)), "got (4, 2, 195)"),
    (lambda p: np.save(p, np.zeros((4, 196), np.complex64)), "expected numbers"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00garbage"), "expected a .npy array file of events"),
])
def test_bad_event_files_exit_2_and_write_nothing(model_path, tmp_path, make, message):
    make(tmp_path / "ev.npy")
    r = CliRunner().invoke(run_main, [str(model_path), str(tmp_path / "ev.npy"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "y.npy").exists()
