"""Convolutional Zor models of the image tasks through the export registry, int8 and the runtime.

The conv kind itself (Reshape → Conv → Reshape, per-unit θ expanded from per-channel
θ) is export's (``export/converters.py``); these tests take image-task-shaped conv
models (28×28 classifier, 16×16 colorizer, a conv-output denoiser) through
``zor.export.export`` (float32 verified, int8 with the Conv kernels quantized) and the
torch-free runtime, and check per-channel thresholds by hand."""

import numpy as np
import onnx
import pytest
import torch
from zor.export import export
from zor.export.registry import kind_of
from zor.runtime import Model
from zor.runtime import tasks as R

from zor import Conv, Layer, Zor
from zor.common.imagemath import one_hot
from zor.tasks.datasets import CLASS_NAMES, load_bundled
from zor.tasks.images import classify_task, colorize_task, denoise_task


@pytest.fixture(scope="module")
def bundled():
    x, y = load_bundled("train")
    xt, yt = load_bundled("test")
    return x, y, xt, yt


def conv_classifier(bundled, steps=60):
    x, y, _, _ = bundled
    net = Zor([Layer(784, shape=(1, 28, 28)), Conv(8, kernel_size=5, stride=2), Layer(10)], seed=0, device="cpu",
              task=classify_task(CLASS_NAMES))
    net.fit(x, one_hot(y), steps=steps, batch_size=48, progress=False)
    return net


def test_registry_classifies_conv_layers_as_conv():
    assert kind_of(Conv(4)) == "conv" and kind_of(Layer(4)) == "dense"


def test_conv_classifier_exports_verified_with_per_channel_thresholds(tmp_path, bundled):
    net = conv_classifier(bundled)
    with torch.no_grad():
        net.threshold(1).copy_(torch.tensor([0.0, 0.1, -0.1, 0.2, 0.05, -0.05, 0.3, 0.0]))
    res = export(net, tmp_path / "c.onnx")
    assert res.verification["passed"] is True
    layers = res.verification["float32"]["layers"]
    assert all(r["mismatches"] == 0 for r in layers)
    proto = onnx.load(str(tmp_path / "c.onnx"))
    assert "Conv" in {n.op_type for n in proto.graph.node}
    theta = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}["threshold_1"]
    # 8 channels of 12x12: θ_c repeated for the 144 units of channel c, in channel-major order
    assert theta.shape == (8 * 144,)
    np.testing.assert_array_equal(theta.reshape(8, 144), np.repeat(net.threshold(1).numpy()[:, None], 144, axis=1))
    model = Model(tmp_path / "c.onnx", device="generic", threads=1)
    _, _, xt, yt = bundled
    np.testing.assert_allclose(model.run(xt[:64])["output"], net.predict(xt[:64]).numpy(), atol=1e-5)
    assert model.metadata.task["name"] == "classify" and model.metadata.layers[1]["kind"] == "conv"
    res_png = R.classify_images(model, (xt[:3].reshape(3, 28, 28, 1) * 255).astype(np.uint8))
    assert res_png.index.tolist() == net.predict(xt[:3]).numpy().argmax(1).tolist()


def test_per_channel_thresholds_gate_whole_channels_in_the_runtime(tmp_path, bundled):
    net = conv_classifier(bundled, steps=2)
    with torch.no_grad():     # channel 0 never spikes (θ huge), channel 1 always (θ = −inf), the rest as trained
        net.threshold(1)[0] = 1e9
        net.threshold(1)[1] = -float("inf")
    export(net, tmp_path / "g.onnx")
    model = Model(tmp_path / "g.onnx", device="generic", threads=1)
    _, _, xt, _ = bundled
    spikes = model.run(xt[:5], outputs=["spikes_1"])["spikes_1"].reshape(5, 8, 12, 12)
    assert not spikes[:, 0].any() and spikes[:, 1].all()
    _, traces = net.run(xt[:5])
    assert np.array_equal(spikes.reshape(5, -1), traces[1].s.numpy() > 0.5)


def test_conv_classifier_int8_quantizes_the_kernel_within_budget(tmp_path, bundled):
    net = conv_classifier(bundled)
    res = export(net, tmp_path / "q.onnx", quantize="int8", max_drop=2.0, spike_budget=0.95)
    q = res.quantization
    assert "Conv" in q["op_types"] and q["metric"]["metric"] == "accuracy" and q["metric"]["reference"] == "labels"
    assert q["metric"]["drop"] <= 2.0
    proto = onnx.load(str(tmp_path / "q.onnx"))
    conv = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    if 0 not in q["fallback"]:                        # the kernel reaches the Conv through a DequantizeLinear
        assert producers[conv[0].input[1]] == "DequantizeLinear"
    assert q["size"]["ratio"] < 0.5                     # int8 weights: under half the float32 graph
    model = Model(tmp_path / "q.onnx", device="generic", threads=1)
    assert model.precision == "int8"


def test_conv_colorizer_tiles_whole_images_like_the_engine(tmp_path):
    rng = np.random.default_rng(0)
    net = Zor([Layer(256, shape=(1, 16, 16)), Conv(4, kernel_size=3, padding=1), Layer(512, activation_function="sigmoid")],
              seed=0, device="cpu", task=colorize_task(16))
    xs = rng.random((64, 256), dtype=np.float32)
    net.fit(xs, rng.random((64, 512), dtype=np.float32), steps=5, batch_size=16, progress=False)
    export(net, tmp_path / "col.onnx")
    model = Model(tmp_path / "col.onnx", device="generic", threads=1)

    class Engine:                                       # the same helper on the torch engine
        metadata, sizes = model.metadata, model.sizes

        def run(self, x):
            return {"output": net.predict(x).numpy()}

    img = rng.random((21, 37, 3))
    np.testing.assert_allclose(R.colorize(model, img), R.colorize(Engine(), img), atol=1e-4)


def test_conv_output_denoiser_runs_any_size(tmp_path):
    net = Zor([Layer(784, shape=(1, 28, 28)), Conv(4, kernel_size=3, padding=1), Conv(1, kernel_size=3, padding=1)],
              seed=0, device="cpu", task=denoise_task({"kind": "gaussian", "level": 0.3}))
    x, _ = load_bundled("train")
    net.fit(x[:64], x[:64], steps=5, batch_size=16, progress=False)
    res = export(net, tmp_path / "d.onnx")
    assert res.verification["passed"] is True
    model = Model(tmp_path / "d.onnx", device="generic", threads=1)
    mosaic = np.block([[x[0].reshape(28, 28), x[1].reshape(28, 28)]])            # 28x56: two tiles side by side
    out = R.denoise(model, mosaic)
    expected = np.clip(net.predict(x[:2]).numpy(), 0, 1).reshape(2, 28, 28)
    np.testing.assert_allclose(out, np.concatenate(list(expected), axis=1), atol=1e-5)


def test_bench_counts_conv_synapses_per_kernel_not_dense(tmp_path):
    from zor.runtime.bench import connection_macs, spike_stats

    net = Zor([Layer(784, shape=(1, 28, 28)), Conv(4, kernel_size=5, stride=2), Layer(10)], seed=0, device="cpu")
    net.save(tmp_path / "c.zor")
    export(tmp_path / "c.zor", tmp_path / "c.onnx")
    m = Model(tmp_path / "c.onnx", device="generic", threads=1)
    # conv: each of the 4·12·12 output units reads a 5×5 patch of 1 channel = 14,400 MACs,
    # not 784·576; dense 576 → 10 = 5,760
    assert connection_macs(m) == [1 * 25 * 4 * 144, 576 * 10]
    stats = spike_stats(m, np.ones((2, 784), np.float32))
    assert stats["dense_macs_per_inference"] == 14400 + 5760
    assert stats["synops_per_inference"] <= stats["dense_macs_per_inference"]
