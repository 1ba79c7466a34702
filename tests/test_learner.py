"""zor.runtime.Learner: learning with onnxruntime alone, sessions on disk, save, zor-learn, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.export.learnable import export_learnable
from zor.runtime import Learner, Model
from zor.runtime.learn_cli import main as learn_main
from zor.runtime.png import write_png

from zor import Layer, Zor
from zor.common.errors import (
    LearningDivergedError,
    ModelFileError,
    NonFiniteError,
    ShapeError,
    StateError,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learner")
    ae = Zor([Layer(16), Layer(8), Layer(16)], seed=0)
    export_learnable(ae, folder / "ae.onnx", batches=10)
    clf = Zor([Layer(16), Layer(8), Layer(3)], seed=1)
    export_learnable(clf, folder / "clf.onnx", batches=10)
    return folder, ae


def _x(n: int = 12, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32)


def test_steps_match_engine(files) -> None:
    folder, _ = files
    learner = Learner(folder / "ae.onnx")
    net = Zor([Layer(16), Layer(8), Layer(16)], seed=0)       # the same start as the export
    for k in range(5):
        x = _x(6, seed=k)
        err = learner.step(x, x)
        want = net.train_batch(x, x).numpy()
        np.testing.assert_allclose(err, want, atol=1e-5)
    np.testing.assert_allclose(learner.weights[0], net.weights[0].detach().numpy(), atol=1e-5)
    assert learner.steps_done == 5


def test_fit_learns(files) -> None:
    folder, _ = files
    learner = Learner(folder / "ae.onnx")
    x = _x(10)
    before = float(np.abs(learner.predict(x) - x).mean())
    hist = learner.fit(x, steps=80, batch_size=10, progress=False)
    after = float(np.abs(learner.predict(x) - x).mean())
    assert hist["steps"] == 80 and len(hist["train_accuracy"]) == 80
    assert after < before


def test_time_budget_stops_early(files) -> None:
    learner = Learner(files[0] / "ae.onnx")
    hist = learner.fit(_x(), steps=10_000, batch_size=4, time_budget=1e-9, progress=False)
    assert hist["steps"] == 1


def test_bad_input(files) -> None:
    learner = Learner(files[0] / "clf.onnx")
    x = _x(4)
    with pytest.raises(ShapeError, match=r"target: expected shape \(4, 3\)"):
        learner.step(x, np.zeros((5, 3), np.float32))
    with pytest.raises(ShapeError):
        learner.step(x, np.zeros((4, 2), np.float32))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(NonFiniteError):
        learner.step(bad, np.zeros((4, 3), np.float32))
    with pytest.raises(NonFiniteError):
        learner.step(x, np.full((4, 3), np.inf, np.float32))
    assert learner.steps_done == 0


def test_diverged_step_keeps_last_good_state(files) -> None:
    learner = Learner(files[0] / "clf.onnx")
    learner.step(_x(4), np.zeros((4, 3), np.float32))
    good = {k: v.copy() for k, v in learner.state.items()}
    with pytest.raises(LearningDivergedError, match="last good state \\(1 steps\\) kept"):
        learner.step(np.full((4, 16), 3e38, np.float32), np.zeros((4, 3), np.float32))
    assert learner.steps_done == 1
    for k, v in good.items():
        np.testing.assert_array_equal(learner.state[k], v)


def test_state_round_trip_and_refusals(files, tmp_path) -> None:
    folder, _ = files
    a = Learner(folder / "ae.onnx")
    a.fit(_x(), steps=5, batch_size=4, progress=False)
    a.save_state(tmp_path / "s.npz")
    b = Learner(folder / "ae.onnx")
    b.load_state(tmp_path / "s.npz")
    for k in a.names:
        np.testing.assert_array_equal(a.state[k], b.state[k])
    other = Learner(folder / "clf.onnx")
    with pytest.raises(StateError, match="belongs to another model"):
        other.load_state(tmp_path / "s.npz")
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="truncated or not a state file"):
        b.load_state(tmp_path / "cut.npz")


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_tampered_state_refused(pos: int, byte: int) -> None:
    from zor.runtime.learner_state import dump_state, parse_state
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.asarray(2.0, np.float32)}
    data = bytearray(dump_state(state, "a" * 64))
    pos %= len(data)
    if data[pos] == byte:
        return
    data[pos] = byte
    try:
        got = parse_state(bytes(data), "a" * 64, {"w": ((2, 3), "float32"), "step": ((), "float32")})
    except StateError:
        return
    for k, v in state.items():          # a flip the zip format ignores (e.g. a timestamp) changes no tensor
        np.testing.assert_array_equal(got.state[k], v)


def test_save_is_an_ordinary_model(files, tmp_path) -> None:
    learner = Learner(files[0] / "ae.onnx")
    x = _x()
    learner.fit(x, steps=20, batch_size=6, progress=False)
    learner.save(tmp_path / "adapted.onnx")
    m = Model(tmp_path / "adapted.onnx", threads=1)
    np.testing.assert_allclose(m.run(x)["output"], learner.predict(x), atol=1e-5)
    assert m.metadata.verification["learner"]["steps"] == 20


def test_not_a_learnable_file(tmp_path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"\x08\x08")
    with pytest.raises(ModelFileError, match="expected zor.format 'zor-learnable'"):
        Learner(tmp_path / "x.onnx")


def test_runtime_learning_never_imports_torch(files) -> None:
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from zor.runtime import Learner
        lr = Learner({str(files[0] / 'ae.onnx')!r})
        x = np.random.default_rng(0).random((8, 16), dtype=np.float32)
        lr.fit(x, steps=5, batch_size=4, progress=False)
        assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cli_npy_and_resume(files, tmp_path) -> None:
    folder, _ = files
    np.save(tmp_path / "x.npy", _x())
    args = [str(folder / "ae.onnx"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.onnx"), "--steps", "10",
            "--batch-size", "4", "--state", str(tmp_path / "s.npz")]
    r = CliRunner().invoke(learn_main, args)
    assert r.exit_code == 0, r.output
    assert "learned 10 steps" in r.output and (tmp_path / "s.npz").exists()
    r = CliRunner().invoke(learn_main, args)
    assert r.exit_code == 0 and "resumed the session" in r.output
    b = Learner(folder / "ae.onnx")
    b.load_state(tmp_path / "s.npz")
    assert float(b.state["step"]) == 20.0
    r = CliRunner().invoke(learn_main, [str(folder / "ae.onnx"), str(tmp_path / "x.npy"), "-o",
                                        str(folder / "ae.onnx")])
    assert r.exit_code == 2 and "same file as the input" in r.output


def test_cli_png_folder(files, tmp_path) -> None:
    folder, _ = files
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(6):
        write_png(imgs / f"{k % 3}_{k}.png", (np.random.default_rng(k).random((4, 4)) * 255).astype(np.uint8))
    r = CliRunner().invoke(learn_main, [str(folder / "clf.onnx"), str(imgs), "-o", str(tmp_path / "c.onnx"),
                                        "--steps", "5", "--batch-size", "3"])
    assert r.exit_code == 0, r.output
    (imgs / "7_bad.png").write_bytes((imgs / "0_0.png").read_bytes())
    r = CliRunner().invoke(learn_main, [str(folder / "clf.onnx"), str(imgs), "-o", str(tmp_path / "c.onnx")])
    assert r.exit_code == 2 and "class labels must lie in [0, 2]" in r.output


def test_tampered_learnable_file_refused(files, tmp_path) -> None:
    data = bytearray((files[0] / "ae.onnx").read_bytes())
    from zor.runtime.onnxmeta import scan_model
    raw = scan_model(bytes(data), digests=False).initializers["weight_0"].raw
    data[raw.offset + 5] ^= 0x40                               # one weight changed after export
    (tmp_path / "t.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="weight_0 does not match its SHA-256"):
        Learner(tmp_path / "t.onnx")
