"""Task helpers (reconstruct, classify) and the dependency-free PNG reader/writer."""

import numpy as np
import pytest
from PIL import Image
from test_runtime_support import build_model
from zor.runtime import Model, tasks
from zor.runtime.png import read_png, write_png
from zor.runtime.tasks import images_from_rows, rows_from_images

from zor.common.errors import ConfigError, DataError, DTypeError

INF = float("inf")


@pytest.fixture(scope="module")
def identity_image_model(tmp_path_factory):
    """4x4 grey images in [−1, 1] (input.range) → the same rows (W = I, θ = −inf everywhere)."""
    task = {"name": "reconstruct", "input": {"range": [-1, 1], "image": {"height": 4, "width": 4, "channels": 1}},
            "output": {"range": [-1, 1]}}
    path = build_model(tmp_path_factory.mktemp("t") / "id.onnx", [{"size": 16}, {"size": 16}], [np.eye(16)],
                       [np.full(16, -INF), np.full(16, -INF)], task=task)
    return Model(path, device="generic", threads=1)


def test_rows_from_images_scales_uint8_into_the_input_range():
    spec = {"range": [-1, 1], "image": {"height": 2, "width": 2}}
    rows = rows_from_images(np.array([[0, 255], [51, 102]], np.uint8), spec)
    np.testing.assert_allclose(rows, [[-1.0, 1.0, -0.6, -0.2]], rtol=1e-6)     # p/255·2 − 1
    assert rows_from_images(np.zeros((3, 4)), spec).shape == (3, 4)            # rows pass through
    with pytest.raises(DTypeError, match="expected uint8 pixels or floats"):
        rows_from_images(np.zeros((2, 2), np.int32), spec)


def test_images_from_rows_maps_back_to_unit_range():
    img = images_from_rows(np.array([[-1.0, 0.0, 1.0, 3.0]]), {"range": [-1, 1]}, (2, 2))
    np.testing.assert_allclose(img, [[[0.0, 0.5], [1.0, 1.0]]])               # clipped to [0, 1]


def test_reconstruct_images_round_trip(identity_image_model):
    imgs = np.stack([np.array([0, 51, 102, 255] * 4, np.uint8).reshape(4, 4)] * 2)
    out = tasks.reconstruct(identity_image_model, imgs)
    assert out.shape == (2, 4, 4)
    np.testing.assert_allclose(out, imgs / 255.0, atol=1e-6)
    single = tasks.reconstruct(identity_image_model, imgs[0])
    assert single.shape == (4, 4)
    rows = tasks.reconstruct(identity_image_model, np.full((1, 16), 5.0, np.float32))
    np.testing.assert_allclose(rows, np.ones((1, 16)))                         # clipped to output.range


def test_classify_labels_and_task_checks(tmp_path, identity_image_model):
    path = build_model(tmp_path / "c.onnx", [{"size": 3}, {"size": 3}], [np.eye(3)],
                       [np.full(3, -INF), np.full(3, -INF)],
                       task={"name": "classify", "labels": ["a", "b", "c"]})
    m = Model(path, device="generic", threads=1)
    res = tasks.classify(m, np.array([[0.1, 0.9, 0.0], [0.0, 0.0, 0.2]], np.float32))
    assert res.index.tolist() == [1, 2] and res.label == ["b", "c"] and res.scores.shape == (2, 3)
    with pytest.raises(ConfigError, match="task is 'classify': expected one of reconstruct"):
        tasks.reconstruct(m, np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="task is 'reconstruct': expected one of classify"):
        tasks.classify(identity_image_model, np.zeros((1, 16), np.float32))
    bad = build_model(tmp_path / "b.onnx", [{"size": 3}, {"size": 3}], [np.eye(3)],
                      [np.zeros(3), np.full(3, -INF)], task={"name": "classify", "labels": ["a"]})
    with pytest.raises(ConfigError, match="lists 1 labels: expected one per output unit"):
        tasks.classify(Model(bad, device="generic", threads=1), np.zeros((1, 3), np.float32))


@pytest.mark.parametrize("mode, shape", [("L", (9, 7)), ("RGB", (9, 7, 3)), ("RGBA", (9, 7, 4)), ("P", (9, 7, 3)),
                                         ("LA", (9, 7, 2)), ("I;16", (9, 7)), ("1", (9, 7))])
def test_read_png_agrees_with_pillow(tmp_path, mode, shape):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr16 = (rng.random(shape) * 65535).astype(np.uint16)
        Image.fromarray(arr16).save(tmp_path / "a.png")
        want = (arr16 >> 8).astype(np.uint8)
    else:
        arr = (rng.random(shape) * 255).astype(np.uint8)
        img = Image.fromarray(arr).convert(
            "RGB" if mode == "P" else mode)
        if mode == "P":
            img = img.quantize(16)                                  # a 4-bit palette PNG
        img.save(tmp_path / "a.png")
        want = np.asarray(Image.open(tmp_path / "a.png").convert("RGB" if mode in ("RGB", "RGBA", "P") else "L"))
        if mode == "LA":
            want = np.asarray(Image.open(tmp_path / "a.png"))[..., 0]
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), want)


def test_write_png_is_read_by_pillow(tmp_path):
    arr = (np.random.default_rng(1).random((5, 6, 3)) * 255).astype(np.uint8)
    write_png(tmp_path / "o.png", arr)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), arr)
    np.testing.assert_array_equal(read_png(tmp_path / "o.png"), arr)


def test_bad_png_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"GIF89a....")
    with pytest.raises(DataError, match="expected a PNG file"):
        read_png(tmp_path / "x.png")
    write_png(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[:30])
    with pytest.raises(DataError, match="truncated"):
        read_png(tmp_path / "t.png")
    with pytest.raises(DataError, match="expected uint8 pixels"):
        write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))
