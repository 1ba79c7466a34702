"""Parity of zor.runtime.Model with the torch engine (zor.Zor.run) on exported golden models.

Golden models are small, seeded Zor networks exported by ``zor.export.export`` (the
real exporter), the committed ``tests/golden/*.zor`` checkpoints exported the same way, and,
for the hand-built test files, ``test_runtime_support.from_zor``.
Tolerances: float32 outputs within 1e-5 absolute (the same float32 ops in another
order), spikes identical; int8 exports within 0.05 absolute on outputs in [0, 1].
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_runtime_support import from_zor
from zor.export import export
from zor.runtime import Model

from zor import Conv, Layer, Zor
from zor.engine.presets import seed_autoencoder
from zor.tasks.datasets import few_shot, load_bundled

F32_TOL = 1e-5


def engine_steps(net, xs, state=None):
    net.reset_state()
    if state is not None:
        net.set_state(state)
    outs = []
    for x in xs:
        out, traces = net.run(torch.from_numpy(x))
        outs.append((out.numpy(), [t.s.numpy().astype(bool) for t in traces]))
    return outs


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory):
    """The seed's few-shot autoencoder (784-128-784, sigmoid), trained briefly on 10 images."""
    x, y = load_bundled("train")
    net = seed_autoencoder(seed=0, device="cpu")
    net.fit(x[few_shot(y, 1)], steps=30, batch_size=10, progress=False)
    d = tmp_path_factory.mktemp("golden")
    export(net, d / "fewshot.onnx")
    export(net, d / "fewshot-int8.onnx", quantize="int8", calibration=x[:64], device="x86-64-avx2")
    return net, d, x


def test_float32_export_matches_the_engine(fewshot):
    net, d, x = fewshot
    m = Model(d / "fewshot.onnx", device="generic", threads=1)
    batch = x[100:132]
    ref = engine_steps(net, [batch])[0]
    out = m.run(batch, spikes=True)
    np.testing.assert_allclose(out["output"], ref[0], atol=F32_TOL)
    for i, s in enumerate(ref[1]):
        np.testing.assert_array_equal(out[f"spikes_{i}"], s)
    np.testing.assert_allclose(out["spike_rates"], [s.mean() for s in ref[1]])


def test_int8_export_stays_close_to_the_engine(fewshot):
    net, d, x = fewshot
    m = Model(d / "fewshot-int8.onnx", device="x86-64-avx2", threads=1)
    assert m.precision == "int8"
    batch = x[100:132]
    ref = engine_steps(net, [batch])[0][0]
    assert np.max(np.abs(m(batch) - ref)) < 0.05


def test_stateful_export_over_steps_from_zero_and_given_state(tmp_path):
    net = Zor([Layer(6, decay=0.5), Layer(5, activation_function="relu", decay=0.3, refractory=0.1,
                                          min_charge=0.02),
               Layer(3, activation_function="sigmoid", decay=0.8)], seed=3, device="cpu")
    export(net, tmp_path / "sf.onnx")
    m = Model(tmp_path / "sf.onnx", device="generic", threads=1)
    rng = np.random.default_rng(4)
    xs = rng.random((7, 4, 6), dtype=np.float32) * 1.5
    ref = engine_steps(net, xs)
    s = m.stream()
    for t, x in enumerate(xs):
        out = s.step(x, spikes=True)
        np.testing.assert_allclose(out["output"], ref[t][0], atol=F32_TOL, err_msg=f"step {t}")
        for i, sp in enumerate(ref[t][1]):
            np.testing.assert_array_equal(out[f"spikes_{i}"], sp, err_msg=f"step {t} layer {i}")
    # from a non-zero state: the engine and the stream start from the same charges
    start = [torch.from_numpy(rng.normal(size=(4, n)).astype(np.float32)) for n in (6, 5, 3)]
    ref = engine_steps(net, xs[:3], state=start)
    s.set_state({f"state_in_{i}": start[i].numpy() for i in range(3)})
    for t, x in enumerate(xs[:3]):
        np.testing.assert_allclose(s.step(x)["output"], ref[t][0], atol=F32_TOL, err_msg=f"step {t}")


def test_conv_export_matches_the_engine(tmp_path):
    net = Zor([Layer(64, shape=(1, 8, 8)), Conv(3, kernel_size=3, stride=1, activation_function="relu"),
               Layer(10)], seed=5, device="cpu")
    export(net, tmp_path / "conv.onnx")
    m = Model(tmp_path / "conv.onnx", device="generic", threads=1)
    x = np.random.default_rng(5).random((5, 64), dtype=np.float32)
    np.testing.assert_allclose(m(x), engine_steps(net, [x])[0][0], atol=F32_TOL)


def test_hand_built_test_files_match_the_engine(tmp_path):
    """The support builder used by the other runtime tests follows the engine too."""
    net = Zor([Layer(6, decay=0.5), Layer(5, activation_function="tanh", decay=0.3, refractory=0.1,
                                          reset_on_spike=False), Layer(4)], seed=1, device="cpu")
    m = Model(from_zor(net, tmp_path / "hb.onnx"), device="generic", threads=1)
    xs = np.random.default_rng(6).random((5, 3, 6), dtype=np.float32)
    ref = engine_steps(net, xs)
    s = m.stream()
    for t, x in enumerate(xs):
        np.testing.assert_allclose(s.step(x)["output"], ref[t][0], atol=F32_TOL)


GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.zor"))


@pytest.mark.parametrize("ckpt", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_checkpoints_exported_and_run(ckpt, tmp_path):
    """Every committed golden checkpoint: export, then Model (or a Stream) against Zor.run over 5 steps."""
    net = Zor.load(ckpt, device="cpu")
    export(ckpt, tmp_path / "g.onnx")
    m = Model(tmp_path / "g.onnx", device="generic", threads=1)
    assert m.sizes == net.sizes and m.stateful == net.stateful
    xs = np.random.default_rng(7).random((5, 3, net.sizes[0]), dtype=np.float32) * 2.0
    ref = engine_steps(net, xs)
    s = m.stream() if m.stateful else None
    for t, x in enumerate(xs):
        out = s.step(x, spikes=True) if s else m.run(x, spikes=True)
        np.testing.assert_allclose(out["output"], ref[t][0], atol=F32_TOL, err_msg=f"{ckpt.stem} step {t}")
        for i, sp in enumerate(ref[t][1]):
            np.testing.assert_array_equal(out[f"spikes_{i}"], sp, err_msg=f"{ckpt.stem} step {t} layer {i}")
