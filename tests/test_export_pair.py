"""An --external-weights export switches the .onnx and its weights file as one: killed at any
rename or removal, the destination loads as the old model or as the new one, never as a mix.

Each case exports model A in-process, then model B in a child process whose ``os.replace``
(or ``os.unlink``) kills the process at its k-th call; the destination must then load and
answer as A (killed before the .onnx rename) or as B (after it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from zor.export import export
from zor.runtime import Model

from zor import Layer, Zor

CHILD = textwrap.dedent("""
    import os, signal, sys
    from zor import Layer, Zor
    from zor.export import export
    out, what, k, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    calls = [0]
    real = getattr(os, what)
    def dying(*args, **kw):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kw)
    setattr(os, what, dying)
    net = Zor([Layer(12, threshold=0.2), Layer(10, threshold=0.1), Layer(6)], seed=seed, device="cpu")
    export(net, out, external_weights=True, verify_model=False)
""")


def _net(seed: int) -> Zor:
    return Zor([Layer(12, threshold=0.2), Layer(10, threshold=0.1), Layer(6)], seed=seed, device="cpu")


def _answer(path, x):
    return Model(path, device="generic", threads=1, weights="load")(x)


def _child(out, what, k, seed):
    return subprocess.run([sys.executable, "-c", CHILD, str(out), what, str(k), str(seed)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    x = np.random.default_rng(0).random((3, 12), dtype=np.float32)
    out = {}
    for seed in (1, 2):
        export(_net(seed), d / f"r{seed}.onnx", external_weights=True, verify_model=False)
        out[seed] = _answer(d / f"r{seed}.onnx", x)
    assert np.abs(out[1] - out[2]).max() > 1e-3
    return x, out


@pytest.mark.parametrize("start", ["plain", "hashed"])
@pytest.mark.parametrize("what, k", [("replace", 1), ("replace", 2), ("unlink", 1), ("replace", 99)])
def test_killed_export_leaves_the_old_or_the_new_model(tmp_path, refs, start, what, k):
    x, ref = refs
    out = tmp_path / "m.onnx"
    export(_net(1), out, external_weights=True, verify_model=False)          # model A under m.weights
    if start == "hashed":                                                   # A again: now under m.<sha12>.weights
        export(_net(1), out, external_weights=True, verify_model=False)
        assert not (tmp_path / "m.weights").exists()
    before = sorted(p.name for p in tmp_path.iterdir())
    res = _child(out, what, k, seed=2)
    killed = res.returncode == -9
    assert killed == (k != 99) and (killed or res.returncode == 0), res.stderr[-2000:]
    got = _answer(out, x)
    is_a, is_b = np.array_equal(got, ref[1]), np.array_equal(got, ref[2])
    assert is_a or is_b, (what, k, sorted(p.name for p in tmp_path.iterdir()))
    if not killed:
        assert is_b and len([p for p in tmp_path.iterdir() if p.suffix == ".weights"]) == 1
    elif k == 1 and what == "replace":
        assert is_a                                    # killed at the weights rename: the old pair is whole
    # a later export always succeeds and leaves exactly one weights file, the one the .onnx names
    export(_net(2), out, external_weights=True, verify_model=False)
    assert np.array_equal(_answer(out, x), ref[2])
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len([n for n in names if n.endswith(".weights")]) == 1, (before, names)


def test_inline_export_over_an_external_one_removes_its_weights(tmp_path, refs):
    x, ref = refs
    out = tmp_path / "m.onnx"
    export(_net(1), out, external_weights=True, verify_model=False)
    export(_net(2), out, verify_model=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert np.array_equal(_answer(out, x), ref[2])


def test_weights_of_other_models_in_the_folder_are_kept(tmp_path):
    export(_net(1), tmp_path / "a.onnx", external_weights=True, verify_model=False)
    export(_net(1), tmp_path / "a.b.onnx", external_weights=True, verify_model=False)
    export(_net(2), tmp_path / "a.onnx", external_weights=True, verify_model=False)
    export(_net(2), tmp_path / "a.onnx", external_weights=True, verify_model=False)
    assert (tmp_path / "a.b.weights").exists()
    for name in ("a.onnx", "a.b.onnx"):
        Model(tmp_path / name, device="generic", threads=1)
    assert os.path.exists(tmp_path / "a.b.onnx")
