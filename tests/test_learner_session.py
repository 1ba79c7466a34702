"""Learning sessions on disk and zor-learn's inputs: a resumed fit equals an uninterrupted one; damaged,
foreign and truncated state files are refused; every bad input of issue 25 ends in a clear error (exit 2)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zor.export.cli import main as export_main
from zor.export.learnable import export_learnable
from zor.runtime import Learner
from zor.runtime.learn_cli import main as learn_main
from zor.runtime.learner_state import dump_state, parse_state
from zor.runtime.png import write_png

from zor import Layer, Zor
from zor.common.curriculum import CurriculumSampler
from zor.common.errors import (
    DTypeError,
    LearningDivergedError,
    NonFiniteError,
    ShapeError,
    StateError,
)
from zor.engine.layer import Conv


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("session")
    export_learnable(Zor([Layer(16), Layer(8), Layer(16)], seed=0), folder / "ae.onnx", batches=5)
    export_learnable(Zor([Layer(16), Layer(8), Layer(3)], seed=1), folder / "clf.onnx", batches=5)
    return folder


def _x(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 16), dtype=np.float32)


def _assert_same_state(a: Learner, b: Learner) -> None:
    sa, sb = a.state, b.state
    for k in a.names:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# ------------------------------------------------------------------------------------------ resume
def test_resumed_fit_equals_uninterrupted(files, tmp_path) -> None:
    x = _x(10)
    whole = Learner(files / "ae.onnx", seed=3)
    h_whole = whole.fit(x, steps=12, batch_size=4, progress=False)
    first = Learner(files / "ae.onnx", seed=3)
    h_first = first.fit(x, steps=5, batch_size=4, progress=False)
    first.save_state(tmp_path / "s.npz")
    resumed = Learner(files / "ae.onnx", seed=99)               # another seed: the file's rng must win
    resumed.load_state(tmp_path / "s.npz")
    h_rest = resumed.fit(x.copy(), steps=7, batch_size=4, progress=False)
    assert h_first["curriculum"] == "new" and h_rest["curriculum"] == "continued"
    assert h_first["train_accuracy"] + h_rest["train_accuracy"] == h_whole["train_accuracy"]
    _assert_same_state(resumed, whole)
    assert resumed.steps_done == whole.steps_done == 12


def test_resume_without_the_sampler_draws_other_batches(files, tmp_path) -> None:
    """The check above is sensitive: the same tensors resumed with a fresh curriculum and rng differ."""
    x = _x(10)
    whole = Learner(files / "ae.onnx", seed=3)
    whole.fit(x, steps=12, batch_size=4, progress=False)
    first = Learner(files / "ae.onnx", seed=3)
    first.fit(x, steps=5, batch_size=4, progress=False)
    (tmp_path / "v1.npz").write_bytes(dump_state(first.state, first.model_hash))   # tensors only
    resumed = Learner(files / "ae.onnx", seed=3)
    resumed.load_state(tmp_path / "v1.npz")
    assert resumed.fit(x, steps=7, batch_size=4, progress=False)["curriculum"] == "new"
    assert not np.array_equal(resumed.state["weight_0"], whole.state["weight_0"])


def test_fit_twice_continues_and_other_data_restarts(files) -> None:
    x = _x(10)
    a, b = Learner(files / "ae.onnx"), Learner(files / "ae.onnx")
    a.fit(x, steps=9, batch_size=3, progress=False)
    b.fit(x, steps=4, batch_size=3, progress=False)
    assert b.fit(x, steps=5, batch_size=3, progress=False)["curriculum"] == "continued"
    _assert_same_state(a, b)
    assert b.fit(_x(10, seed=1), steps=1, batch_size=3, progress=False)["curriculum"] == "new"


@pytest.mark.parametrize("n", [10, 5000])     # one cumulative sum, and the blocked path (n > 4096)
def test_sampler_state_round_trip_draws_the_same(n: int) -> None:
    rng = np.random.default_rng(0)
    errors = np.random.default_rng(1).random((8, 16))
    a = CurriculumSampler(n, rng=rng)
    for k in range(3):
        a.update(a.sample(16), errors[k])
    saved, rng_state = a.get_state(), rng.bit_generator.state
    want = []
    for k in range(3, 8):
        idx = a.sample(16)
        want.append(idx)
        a.update(idx, errors[k])
    rng2 = np.random.default_rng(7)
    rng2.bit_generator.state = rng_state
    b = CurriculumSampler(n, rng=rng2)
    b.set_state(saved)
    for k in range(3, 8):
        idx = b.sample(16)
        np.testing.assert_array_equal(idx, want[k - 3])
        b.update(idx, errors[k])
    with pytest.raises(ValueError, match="expected n = 11"):
        CurriculumSampler(11).set_state(saved)
    for key, value in (("weight", -1.0), ("block_sum", np.inf), ("error", -0.5)):
        bad = dict(saved, **{key: saved[key].copy()})
        bad[key][0] = value
        with pytest.raises(ValueError, match=f"curriculum state {key}: expected finite values"):
            CurriculumSampler(n).set_state(bad)


def test_sampler_state_block_sums_follow_the_weights() -> None:
    """A state whose block sums disagree with its weights (tampered, or saved before every block
    was re-summed at the first update) draws as the weights say: the sums are recomputed."""
    n = 5000
    a = CurriculumSampler(n, rng=np.random.default_rng(0))
    a.update(np.array([0, 1]), np.array([0.3, 0.6]))
    saved = a.get_state()
    skewed = dict(saved, block_sum=np.full_like(saved["block_sum"], 70.0))
    b = CurriculumSampler(n, rng=np.random.default_rng(0))
    b.set_state(skewed)
    np.testing.assert_array_equal(b.block_sum, a.block_sum)
    np.testing.assert_allclose(b.block_sum, b.weight_blocks.sum(axis=1))


# ------------------------------------------------------------------------------- state file refusals
def test_state_of_another_model_or_missing_refused(files, tmp_path) -> None:
    a = Learner(files / "ae.onnx")
    a.fit(_x(), steps=3, batch_size=4, progress=False)
    a.save_state(tmp_path / "s.npz")
    other = Learner(files / "clf.onnx")
    before = other.state
    with pytest.raises(StateError, match="belongs to another model"):
        other.load_state(tmp_path / "s.npz")
    with pytest.raises(StateError, match="cannot read it"):
        other.load_state(tmp_path / "missing.npz")
    _assert_same_state(other, Learner(files / "clf.onnx"))
    assert other.steps_done == 0 and all(np.array_equal(before[k], other.state[k]) for k in before)


def _session_file(files) -> tuple[bytes, Learner]:
    a = Learner(files / "ae.onnx")
    a.fit(_x(), steps=3, batch_size=4, progress=False)
    s = a._session_state()
    return dump_state(s.state, a.model_hash, s), a


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0))
def test_truncated_state_refused(files, cut: int) -> None:
    data, a = _session_file(files)
    cut %= len(data)
    expected = {n: (v.shape, v.dtype) for n, v in a.state.items()}
    with pytest.raises(StateError):
        parse_state(data[:cut], a.model_hash, expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_tampered_session_refused_or_unchanged(files, pos: int, byte: int) -> None:
    data, a = _session_file(files)
    expected = {n: (v.shape, v.dtype) for n, v in a.state.items()}
    want = parse_state(data, a.model_hash, expected)
    buf = bytearray(data)
    pos %= len(buf)
    if buf[pos] == byte:
        return
    buf[pos] = byte
    try:
        got = parse_state(bytes(buf), a.model_hash, expected)
    except StateError:
        return
    for k, v in want.state.items():     # a flip the zip format ignores (a timestamp, a CRC) changes nothing
        np.testing.assert_array_equal(got.state[k], v)
    assert (got.steps_done, got.rng) == (want.steps_done, want.rng)
    for k, v in want.sampler.items():
        np.testing.assert_array_equal(got.sampler[k], v)


def test_tampered_session_header_refused(files) -> None:
    data, a = _session_file(files)
    expected = {n: (v.shape, v.dtype) for n, v in a.state.items()}
    with np.load(io.BytesIO(data), allow_pickle=False) as z:          # a well-formed zip, header edited
        arrays = {k: z[k] for k in z.files}
    for edit in (lambda h: h["session"].update(steps_done=9), lambda h: h["names"].reverse()):
        h = json.loads(bytes(arrays["__header__"]).decode())
        edit(h)
        buf = io.BytesIO()
        np.savez(buf, **dict(arrays, __header__=np.frombuffer(json.dumps(h).encode(), np.uint8)))
        with pytest.raises(StateError, match="digest"):
            parse_state(buf.getvalue(), a.model_hash, expected)


# ------------------------------------------------------------------------------------- bad input
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 5), width=st.integers(1, 20), t_rows=st.integers(1, 5), t_width=st.integers(1, 5),
       poison=st.sampled_from([None, np.nan, np.inf, -np.inf]), where=st.sampled_from(["x", "target"]),
       dtype=st.sampled_from(["float32", "float64", "int32"]))
def test_step_input_checks(files, rows, width, t_rows, t_width, poison, where, dtype) -> None:
    learner = Learner(files / "clf.onnx")
    x = np.full((rows, width), 0.5, dtype=np.float32)
    t = np.zeros((t_rows, t_width), np.float32)
    if poison is not None:
        (x if where == "x" else t)[0, 0] = poison
    if dtype != "int32" or poison is None:
        x = x.astype(dtype)
    # checked in this order: x (dtype, shape), target (shape), the rows agree; then NaN and inf, found by the
    # step's health (the step is refused, then x and target are named); an x converted from float64 is
    # checked for them while it is converted, first
    if x.dtype == np.int32:
        want = DTypeError
    elif width != 16:
        want = ShapeError
    elif poison is not None and where == "x" and dtype == "float64":
        want = NonFiniteError
    elif t_width != 3 or t_rows != rows:
        want = ShapeError
    elif poison is not None:
        want = NonFiniteError
    else:
        want = None
    before = learner.state
    if want is None:
        assert learner.step(x, t).shape == (rows, 3)
    else:
        with pytest.raises(want, match=f"{where}: expected finite" if want is NonFiniteError else "expected"):
            learner.step(x, t)
        for k, v in before.items():                       # a refused step changes nothing
            np.testing.assert_array_equal(learner.state[k], v)
    assert learner.steps_done == (0 if want else 1)


@pytest.mark.parametrize("where, poison", [("x", np.nan), ("x", np.inf), ("x", -np.inf), ("target", np.nan),
                                           ("target", -np.inf)])
def test_non_finite_input_found_by_the_step_and_named(files, where, poison) -> None:
    """The step's health holds 0·Σx and mean|target − y|: a NaN or inf in x or the target makes it not finite,
    the step is refused and the input named (no check of x before the step where the file has that health)."""
    learner = Learner(files / "clf.onnx")
    assert learner._x_in_health
    x, t = _x(4), np.zeros((4, 3), np.float32)
    learner.step(x, t)
    before = learner.state
    (x if where == "x" else t)[2, 1] = poison
    with pytest.raises(NonFiniteError, match=f"{where}: expected finite values.*first at \\(2, 1\\)"):
        learner.step(x, t)
    assert learner.steps_done == 1
    for k, v in before.items():
        np.testing.assert_array_equal(learner.state[k], v)


def test_fit_stops_on_divergence_and_keeps_last_good_state(files) -> None:
    learner = Learner(files / "clf.onnx")
    x = np.concatenate([_x(4), np.full((1, 16), 3e38, np.float32)])
    y = np.zeros((5, 3), np.float32)
    learner.fit(x[:4], y[:4], steps=2, batch_size=4, progress=False)
    good = learner.state
    with pytest.raises(LearningDivergedError, match="last good state \\(2 steps\\) kept") as exc:
        learner.fit(x, y, steps=200, batch_size=5, progress=False)
    assert exc.value.exit_code == 2
    assert learner.steps_done == 2
    for k, v in good.items():
        np.testing.assert_array_equal(learner.state[k], v)


def test_divergence_caught_without_norm_clip_and_nan_state_refused(tmp_path) -> None:
    """A layer without a norm clip is outside the graph's health scalar: its new weights are checked
    directly; a state file holding NaN is refused (the health argument needs a finite state)."""
    export_learnable(Zor([Layer(16), Layer(8, max_update_norm=None), Layer(3)], seed=2), tmp_path / "n.onnx",
                     batches=5)
    learner = Learner(tmp_path / "n.onnx")
    assert learner._weights == ["weight_1"]
    learner.step(_x(4), np.zeros((4, 3), np.float32))
    good = learner.state
    with pytest.raises(LearningDivergedError, match="step 2"):
        learner.step(np.full((4, 16), 3e38, np.float32), np.zeros((4, 3), np.float32))
    for k, v in good.items():
        np.testing.assert_array_equal(learner.state[k], v)
    bad = dict(good, weight_0=np.full_like(good["weight_0"], np.nan))
    (tmp_path / "nan.npz").write_bytes(dump_state(bad, learner.model_hash))
    with pytest.raises(StateError, match="expected finite values, got NaN or inf in \\['weight_0'\\]"):
        learner.load_state(tmp_path / "nan.npz")


def test_bound_buffers_follow_batch_size_changes(files) -> None:
    """Both IO bindings rebind output and error when the batch size changes; every step equals the engine's."""
    learner = Learner(files / "ae.onnx")
    net = Zor([Layer(16), Layer(8), Layer(16)], seed=0)          # the export's start
    for k, rows in enumerate([6, 3, 6, 1, 1, 7]):
        x = _x(rows, seed=k)
        np.testing.assert_allclose(learner.step(x, x), net.train_batch(x, x).numpy(), atol=1e-5)
        np.testing.assert_allclose(learner.predict(x), net.forward(x, train=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(learner.weights[0], net.weights[0].detach().numpy(), atol=1e-5)


def test_errors_returned_by_step_are_the_callers(files) -> None:
    """step() returns an array of its own (bound as the graph's error output, not copied): later steps, a fit
    and a batch-size change leave it as it was, and each equals target − output of its step (the engine's)."""
    learner = Learner(files / "ae.onnx")
    net = Zor([Layer(16), Layer(8), Layer(16)], seed=0)          # the export's start
    kept = []
    for k, rows in enumerate([5, 5, 5, 2, 5]):
        x = _x(rows, seed=10 + k)
        err = learner.step(x, x)
        np.testing.assert_allclose(err, net.train_batch(x, x).numpy(), atol=1e-5)
        kept.append((err, err.copy()))
    learner.fit(_x(), steps=5, batch_size=4, progress=False)
    learner.step(_x(3), _x(3))
    for err, copy in kept:
        np.testing.assert_array_equal(err, copy)
    assert len({id(e) for e, _ in kept}) == len(kept)


def test_tiny_moments_flushed_every_64_steps(files) -> None:
    """Moments, traces and rates with |a| < 1e-34 (subnormal or about to be within 64 steps of decay by 0.9)
    are set to 0 every 64th step; 1e-34 and up, weights and thresholds are left alone."""
    from zor.runtime.learner import FLUSH_EVERY, TINY
    assert (FLUSH_EVERY, TINY) == (64, 1e-34) and 0.9 ** FLUSH_EVERY * TINY > 1.1754944e-38
    learner = Learner(files / "ae.onnx")
    live = learner._bound.live
    values = np.array([5e-35, -5e-35, 1e-45, 2e-34, -3e-34, 0.25], np.float32)
    live["adam_m_0"].flat[:6] = values
    live["adam_v_1"].flat[:3] = [1e-40, 1.5e-34, 0.5]
    live["weight_0"].flat[0] = 1e-40
    learner._flush()
    np.testing.assert_array_equal(live["adam_m_0"].flat[:6], np.array([0, 0, 0, 2e-34, -3e-34, 0.25], np.float32))
    np.testing.assert_array_equal(live["adam_v_1"].flat[:3], np.array([0, 1.5e-34, 0.5], np.float32))
    assert live["weight_0"].flat[0] == np.float32(1e-40)
    calls = []
    learner._flush = lambda: calls.append(learner.steps_done)
    learner.fit(_x(), steps=140, batch_size=4, progress=False)
    assert calls == [64, 128]


# ------------------------------------------------------------------------------------------ CLI
def _learn(*args: str):
    return CliRunner().invoke(learn_main, [str(a) for a in args])


def test_cli_npy_targets_labels_and_floats(files, tmp_path) -> None:
    np.save(tmp_path / "x.npy", _x(9))
    np.save(tmp_path / "labels.npy", np.arange(9) % 3)
    np.save(tmp_path / "y.npy", np.eye(3, dtype=np.float32)[np.arange(9) % 3])
    for targets in ("labels.npy", "y.npy"):
        r = _learn(files / "clf.onnx", tmp_path / "x.npy", "-o", tmp_path / f"{targets}.onnx", "--targets",
                   tmp_path / targets, "--steps", "4", "--batch-size", "3")
        assert r.exit_code == 0, r.output
        assert "learned 4 steps" in r.output and (tmp_path / f"{targets}.onnx").exists()


@pytest.mark.parametrize("case, message", [
    ("nan_x", "non-finite|NaN"), ("inf_target", "non-finite|inf"), ("short_target", "expected 9 rows"),
    ("wide_target", "expected"), ("narrow_x", "expected"), ("no_targets", "pass --targets"),
    ("not_npy", "expected a .npy array"), ("garbage_npy", "expected a .npy array file"),
    ("label_range", "class labels must lie in \\[0, 2\\]"), ("int_x", "expected")])
def test_cli_bad_npy_input_exits_2(files, tmp_path, case: str, message: str) -> None:
    x, y = _x(9), np.eye(3, dtype=np.float32)[np.arange(9) % 3]
    data, targets = tmp_path / "x.npy", tmp_path / "y.npy"
    if case == "nan_x":
        x[2, 3] = np.nan
    if case == "inf_target":
        y[1, 1] = np.inf
    if case == "short_target":
        y = y[:5]
    if case == "wide_target":
        y = np.zeros((9, 4), np.float32)
    if case == "narrow_x":
        x = x[:, :10]
    if case == "label_range":
        y = np.arange(9)
    if case == "int_x":
        x = (x * 10).astype(np.int32)
    np.save(data, x)
    np.save(targets, y)
    if case == "not_npy":
        data = tmp_path / "x.csv"
        data.write_text("1,2\n")
    if case == "garbage_npy":
        data.write_bytes(b"\x93NUMPY garbage")
    args = [files / "clf.onnx", data, "-o", tmp_path / "out.onnx", "--steps", "2", "--batch-size", "3"]
    r = _learn(*(args + ([] if case == "no_targets" else ["--targets", targets])))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and not (tmp_path / "out.onnx").exists()
    assert __import__("re").search(message, r.output), r.output


def test_cli_state_of_another_model_or_truncated_exits_2(files, tmp_path) -> None:
    np.save(tmp_path / "x.npy", _x(9))
    r = _learn(files / "ae.onnx", tmp_path / "x.npy", "-o", tmp_path / "a.onnx", "--steps", "3",
               "--batch-size", "3", "--state", tmp_path / "ae.npz")
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "labels.npy", np.arange(9) % 3)
    r = _learn(files / "clf.onnx", tmp_path / "x.npy", "--targets", tmp_path / "labels.npy", "-o",
               tmp_path / "c.onnx", "--state", tmp_path / "ae.npz")
    assert r.exit_code == 2 and "belongs to another model" in r.output, r.output
    data = (tmp_path / "ae.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) - 100])
    r = _learn(files / "ae.onnx", tmp_path / "x.npy", "-o", tmp_path / "a2.onnx", "--state", tmp_path / "cut.npz")
    assert r.exit_code == 2 and "truncated or not a state file" in r.output, r.output
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "a2.onnx").exists()


def test_cli_resume_equals_one_run(files, tmp_path) -> None:
    np.save(tmp_path / "x.npy", _x(10))
    common = [files / "ae.onnx", tmp_path / "x.npy", "--batch-size", "4", "--seed", "5"]
    assert _learn(*common, "-o", tmp_path / "one.onnx", "--steps", "8", "--state", tmp_path / "one.npz").exit_code == 0
    assert _learn(*common, "-o", tmp_path / "a.onnx", "--steps", "3", "--state", tmp_path / "two.npz").exit_code == 0
    r = _learn(*common, "-o", tmp_path / "b.onnx", "--steps", "5", "--state", tmp_path / "two.npz")
    assert r.exit_code == 0 and "resumed the session" in r.output and "afresh" not in r.output, r.output
    one, two = Learner(files / "ae.onnx"), Learner(files / "ae.onnx")
    one.load_state(tmp_path / "one.npz")
    two.load_state(tmp_path / "two.npz")
    _assert_same_state(one, two)
    assert (tmp_path / "one.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_cli_diverged_keeps_state_and_exits_2(files, tmp_path) -> None:
    np.save(tmp_path / "ok.npy", _x(6))
    np.save(tmp_path / "huge.npy", np.full((6, 16), 3e38, np.float32))
    r = _learn(files / "ae.onnx", tmp_path / "ok.npy", "-o", tmp_path / "a.onnx", "--steps", "2",
               "--batch-size", "3", "--state", tmp_path / "s.npz")
    assert r.exit_code == 0, r.output
    r = _learn(files / "ae.onnx", tmp_path / "huge.npy", "-o", tmp_path / "b.onnx", "--steps", "2",
               "--state", tmp_path / "s.npz")
    assert r.exit_code == 2, r.output
    assert "learning diverged at step 3" in r.output and "saved in" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "b.onnx").exists()
    b = Learner(files / "ae.onnx")
    b.load_state(tmp_path / "s.npz")
    assert b.steps_done == 2 and float(b.state["step"]) == 2.0
    r = _learn(files / "ae.onnx", tmp_path / "huge.npy", "-o", tmp_path / "c.onnx", "--steps", "2")
    assert r.exit_code == 2 and "pass --state FILE" in r.output


def test_cli_png_folder_and_bad_images(files, tmp_path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(6):
        grey = (np.random.default_rng(k).random((4, 4)) * 255).astype(np.uint8)
        write_png(imgs / f"{k % 3}_{k}.png", grey if k % 2 else np.stack([grey] * 3, axis=-1))  # grey and colour
    r = _learn(files / "clf.onnx", imgs, "-o", tmp_path / "c.onnx", "--steps", "3", "--batch-size", "2",
               "--state", tmp_path / "s.npz")
    assert r.exit_code == 0 and "learned 3 steps" in r.output, r.output
    bad_cases = {
        "5_big.png": (np.zeros((5, 5), np.uint8), "expected an image of 16 pixels"),
        "cat.png": (np.zeros((4, 4), np.uint8), "expected a file name LABEL_name.png"),
        "7_label.png": (np.zeros((4, 4), np.uint8), "class labels must lie in \\[0, 2\\]"),
    }
    for name, (img, message) in bad_cases.items():
        write_png(imgs / name, img)
        r = _learn(files / "clf.onnx", imgs, "-o", tmp_path / "bad.onnx", "--steps", "2")
        assert r.exit_code == 2 and __import__("re").search(message, r.output), (name, r.output)
        (imgs / name).unlink()
    (imgs / "1_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    r = _learn(files / "clf.onnx", imgs, "-o", tmp_path / "bad.onnx", "--steps", "2")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    (imgs / "1_broken.png").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _learn(files / "clf.onnx", empty, "-o", tmp_path / "bad.onnx")
    assert r.exit_code == 2 and "found none" in r.output
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_learnable_refuses_conv_exit_2(tmp_path) -> None:
    ckpt = tmp_path / "conv.zor"
    Zor([Layer(16, shape=(1, 4, 4)), Conv(2, kernel_size=3), Layer(3)], seed=0).save(ckpt)
    r = CliRunner().invoke(export_main, ["export", str(ckpt), "-o", str(tmp_path / "c.onnx"), "--learnable"])
    assert r.exit_code == 2 and "layer 1 is a 'conv' layer; supported: stateless dense" in r.output, r.output
    assert not (tmp_path / "c.onnx").exists()
