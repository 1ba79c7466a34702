"""zor.runtime.tasks.classify on images of any size, dtype (uint8, uint16, float) and channel count.

The models are hand-built so every score can be derived by hand: a grey 2x2 classifier
whose scores are (top-left pixel, bottom-right pixel, mean of the four), and an RGB 2x2
classifier whose scores are the mean red, green and blue over the image.
"""

import numpy as np
import pytest
from test_runtime_support import build_model
from zor.runtime import Model
from zor.runtime import tasks as R

from zor.common.errors import ConfigError

INF = float("inf")


def _model(path, task, w):
    n_in, n_out = w.shape
    return Model(build_model(path, [{"size": n_in}, {"size": n_out, "activation": "identity"}], [w],
                             [np.full(n_in, -INF), np.full(n_out, -INF)], task=task), device="generic", threads=1)


def _task(h, w, c, labels):
    return {"name": "classify", "input": {"shape": [None, h * w * c], "range": [0.0, 1.0],
                                          "image": {"height": h, "width": w, "channels": c}},
            "output": {"shape": [None, len(labels)]}, "labels": list(labels)}


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    w = np.array([[1, 0, 0.25], [0, 0, 0.25], [0, 0, 0.25], [0, 1, 0.25]])
    return _model(tmp_path_factory.mktemp("m") / "grey.onnx", _task(2, 2, 1, ["tl", "br", "mean"]), w)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    # rows are (y, x, channel) in C order: pixel k channel j sits at 3k + j; each score is that channel's mean
    w = np.zeros((12, 3))
    for k in range(4):
        for j in range(3):
            w[3 * k + j, j] = 0.25
    return _model(tmp_path_factory.mktemp("m") / "rgb.onnx", _task(2, 2, 3, ["red", "green", "blue"]), w)


def _quadrants(h, w, dtype, top_left, channels=None):
    """An h x w image (h, w even) whose top-left quadrant is ``top_left`` (the dtype's full scale
    when 1) and the rest 0; with ``channels``, that many identical channels."""
    full = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    img = np.zeros((h, w), dtype)
    img[: h // 2, : w // 2] = np.asarray(top_left * full).astype(dtype)
    return img if channels is None else np.repeat(img[..., None], channels, axis=-1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("size, channels", [
    (size, channels) for size in [(2, 2), (4, 4), (56, 56), (6, 10)] for channels in [None, 1, 2, 3, 4]
    if (size, channels) != ((2, 2), 2)])       # (2, 2, 2) is a stack of two 2x2 images: see test_input_kind_...
def test_grey_model_takes_integer_images_of_any_size_and_channel_count(grey, dtype, size, channels):
    # a bright top-left quadrant area-averages to the 2x2 image [[1, 0], [0, 0]]: tl 1, br 0, mean 1/4
    img = _quadrants(*size, dtype, 1, channels)
    if channels == 2:
        img[..., 1] = np.iinfo(dtype).max                       # grey + alpha: the alpha is ignored
    if channels == 4:
        img[..., 3] = 0                                          # RGBA: alpha dropped
    c = R.classify(grey, img)
    np.testing.assert_allclose(c.scores, [[1.0, 0.0, 0.25]], atol=1e-4)
    assert c.label == "tl" and c.index.tolist() == [0]          # one image: one str label


def test_issue_example_uint8_56x56x3_on_a_grey_model(grey):
    img = np.zeros((56, 56, 3), np.uint8)
    img[28:, 28:] = (255, 255, 255)
    assert R.classify(grey, img).label == "br"


def test_uint16_takes_its_own_full_scale(grey):
    img = np.full((2, 2), 65535 // 2, np.uint16)                 # half of 16-bit full scale
    np.testing.assert_allclose(R.classify(grey, img).scores, [[0.5, 0.5, 0.5]], atol=1e-4)


def test_own_size_uint8_images_and_stacks_become_rows(grey):
    img = np.array([[255, 0], [0, 51]], np.uint8)
    np.testing.assert_allclose(R.classify(grey, img).scores, [[1.0, 0.2, 0.3]], atol=1e-6)
    stack = np.stack([img, img[::-1, ::-1]])                      # (B, H, W) of the model's own size
    assert R.classify(grey, stack).label == ["tl", "br"]


def test_list_of_images_of_several_sizes_and_dtypes(grey):
    imgs = [_quadrants(4, 4, np.uint8, 1), _quadrants(8, 6, np.uint16, 1, 3)[::-1, ::-1],
            _quadrants(3 * 2, 3 * 2, np.float32, 1)]
    assert R.classify(grey, imgs).label == ["tl", "br", "tl"]
    same = [_quadrants(6, 6, np.uint8, 1), _quadrants(6, 6, np.uint8, 1)[::-1, ::-1]]
    assert R.classify(grey, same).label == ["tl", "br"]          # two 6x6 images, not one 6x6 "3-channel" image


def test_rgb_model_keeps_colour_and_takes_grey(rgb):
    img = np.zeros((10, 10, 3), np.uint8)
    img[..., 2] = 255                                            # blue everywhere
    c = R.classify(rgb, img)
    np.testing.assert_allclose(c.scores, [[0.0, 0.0, 1.0]], atol=1e-4)
    assert c.label == "blue"
    rgba = np.concatenate([img, np.full((10, 10, 1), 7, np.uint8)], axis=-1).astype(np.uint16) * 257
    np.testing.assert_allclose(R.classify(rgb, rgba).scores, [[0.0, 0.0, 1.0]], atol=1e-4)
    grey_img = np.full((5, 7), 0.5, np.float32)                  # grey: the same value in every channel
    np.testing.assert_allclose(R.classify(rgb, grey_img).scores, [[0.5, 0.5, 0.5]], atol=1e-4)
    out = R.run_task(rgb, "classify", grey_img)
    assert any("RGB" in n for n in out.notes) and not any("luma" in n for n in out.notes)


@pytest.mark.parametrize("x, kind", [
    (np.zeros((2, 2), np.uint8), "own"),
    (np.zeros((5, 2, 2), np.float32), "own"),
    (np.zeros((2, 2, 2), np.uint8), "own"),             # ends in the model's (H, W): a stack of two images
    (np.zeros((2, 2), np.uint16), "images"),
    (np.zeros((56, 56, 3), np.uint8), "images"),
    (np.zeros((3, 4), np.float32), "rows"),
    (np.zeros((3, 4), np.uint8), "images"),
])
def test_input_kind_reads_dtype_and_shape(grey, x, kind):
    assert R.input_kind(grey, x) == kind


def test_a_model_of_two_channels_cannot_take_other_images(tmp_path):
    two = _model(tmp_path / "two.onnx", _task(2, 2, 2, ["a", "b"]), np.eye(8)[:, :2])
    with pytest.raises(ConfigError, match="expected 1 \\(grey\\) or 3 \\(RGB\\)"):
        R.classify(two, np.zeros((4, 4), np.uint8))
