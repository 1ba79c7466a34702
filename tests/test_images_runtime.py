"""zor.runtime.tasks (images): tiling round trips, resizing, image checks, PNG files (palette, 16-bit,
empty), and the colorize / denoise / classify helpers on hand-built models whose outputs
can be derived by hand for any image size."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_runtime_support import build_model
from zor.runtime import Model
from zor.runtime import tasks as R

from zor.common import imagemath as M
from zor.common.errors import ConfigError, DataError, DTypeError, ShapeError
from zor.tasks import images as I

INF = float("inf")
P = 4                                     # patch size of the hand-built models


def _model(path, task, n_in, w, out_act="identity"):
    n_out = w.shape[1]
    return Model(build_model(path, [{"size": n_in}, {"size": n_out, "activation": out_act}], [w],
                             [np.full(n_in, -INF), np.full(n_out, -INF)], task=task), device="generic", threads=1)


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory):
    """Per pixel: a code = b code = 0.5·L/100, i.e. a = b = 128·(L/100 − 1) (W = [0.5 I, 0.5 I])."""
    task = I.colorize_task(P)
    w = np.concatenate([0.5 * np.eye(P * P), 0.5 * np.eye(P * P)], axis=1)
    return _model(tmp_path_factory.mktemp("m") / "colorize.onnx", task, P * P, w)


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    """The identity on 4x4 images (W = I): denoise(x) must give luma(x) back at any size."""
    return _model(tmp_path_factory.mktemp("m") / "denoise.onnx", I.denoise_task({"kind": "none"}, P, P),
                  P * P, np.eye(P * P))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """2x2 images, scores = (top-left pixel, bottom-right pixel, mean of the four)."""
    w = np.array([[1, 0, 0.25], [0, 0, 0.25], [0, 0, 0.25], [0, 1, 0.25]])
    return _model(tmp_path_factory.mktemp("m") / "classify.onnx", I.classify_task(["tl", "br", "mean"], 2, 2), 4, w)


# --------------------------------------------------------------------------- tiling
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), patch=st.integers(1, 9), data=st.data())
def test_untile_of_tile_is_the_image(h, w, patch, data):
    stride = data.draw(st.integers(1, patch))
    img = np.random.default_rng(h * 100 + w).random((h, w, 2))
    pats, t = R.tile(img, patch, stride)
    assert pats.shape[1:] == (patch, patch, 2) and len(pats) == t.count
    np.testing.assert_allclose(R.untile(pats, t), img, atol=1e-12)


def test_tiling_by_hand():
    img = np.arange(6.0).reshape(2, 3)
    pats, t = R.tile(img, 2, 2)          # margin 0; 3 columns need 2 positions: one symmetric pad column
    assert (t.rows, t.cols, t.top, t.left) == (1, 2, 0, 0)
    assert pats[1].tolist() == [[2.0, 2.0], [5.0, 5.0]]
    one, t1 = R.tile(np.ones((4, 4)), 4, 2)                   # exactly one patch: no padding
    assert one.shape == (1, 4, 4) and (t1.top, t1.left, t1.count) == (0, 0, 1)
    w = R.window(4)
    assert w.min() > 0 and np.allclose(w, w.T) and np.isclose(w[1, 1], np.sin(np.pi * 1.5 / 4) ** 4)
    # blending: two overlapping constant patches 0 and 1 give a weighted mean in between
    pats, t = R.tile(np.zeros((4, 6)), 4, 2)
    out = R.untile(np.stack([np.full((4, 4), float(k % 2)) for k in range(t.count)]), t)
    assert out.min() >= 0.0 and out.max() <= 1.0 and 0.0 < out.mean() < 1.0


def test_tiling_errors():
    with pytest.raises(ConfigError, match="stride 5 larger than the patch 4"):
        R.tile(np.zeros((8, 8)), 4, 5)
    with pytest.raises(ConfigError, match="patch must be an int ≥ 1"):
        R.tile(np.zeros((8, 8)), 0, 1)
    with pytest.raises(ShapeError, match=r"expected an \(H, W\) or \(H, W, C\) image"):
        R.tile(np.zeros((0, 8)), 4, 2)
    _, t = R.tile(np.zeros((8, 8)), 4, 2)
    with pytest.raises(ShapeError, match=f"expected {t.count} patches of 4x4"):
        R.untile(np.zeros((2, 4, 4)), t)


# --------------------------------------------------------------------------- images
def test_resize_by_hand():
    img = np.zeros((4, 4))
    img[:2, :2] = 1.0
    np.testing.assert_allclose(R.resize(img, 2, 2), [[1.0, 0.0], [0.0, 0.0]], atol=1e-12)      # 2x2 block means
    # 3 → 2: output 0 averages [0, 1.5): pixel 0 whole, half of pixel 1 → (1·a + 0.5·b) / 1.5
    np.testing.assert_allclose(R.resize(np.array([[3.0, 6.0, 9.0]]), 1, 2), [[4.0, 8.0]], atol=1e-12)
    np.testing.assert_allclose(R.resize(np.full((5, 7, 3), 0.3), 28, 28), np.full((28, 28, 3), 0.3), atol=1e-12)
    # growing 2 → 4: linear interpolation at 0.25·(2j + 1) − 0.5, edges held
    np.testing.assert_allclose(R.resize(np.array([[0.0, 1.0]]), 1, 4), [[0.0, 0.25, 0.75, 1.0]])
    big = np.repeat(np.repeat(np.random.default_rng(0).random((7, 7)), 4, axis=0), 4, axis=1)
    np.testing.assert_allclose(R.resize(big, 7, 7), big[::4, ::4], atol=1e-12)       # exact for whole factors
    with pytest.raises(ShapeError, match="target size must be ≥ 1x1"):
        R.resize(img, 0, 2)


def test_as_float_image_kinds():
    assert R.as_float_image(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert R.as_float_image(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255
    assert R.as_float_image(rgba).shape == (2, 2, 3)
    assert R.as_float_image(np.ones((2, 2, 2), np.uint8) * 255).shape == (2, 2)     # grey + alpha
    with pytest.raises(DataError, match=r"expected float pixels in \[0, 1\], got values in \[0, 255\]"):
        R.as_float_image(np.array([[0.0, 255.0]]))
    with pytest.raises(DataError, match="expected finite pixels"):
        R.as_float_image(np.array([[np.nan]]))
    with pytest.raises(DTypeError, match="expected uint8, uint16 or float pixels, got dtype int32"):
        R.as_float_image(np.zeros((2, 2), np.int32))
    with pytest.raises(ShapeError, match=r"got shape \(2, 2, 5\)"):
        R.as_float_image(np.zeros((2, 2, 5)))
    with pytest.raises(ShapeError, match="got an empty image"):
        R.as_float_image(np.zeros((0, 3)))
    with pytest.raises(DTypeError, match="got str"):
        R.as_float_image("cat.png")


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int64, np.bool_, np.complex64]))
def test_as_float_image_never_crashes_badly(shape, dtype):
    x = np.zeros(shape, dtype)
    try:
        out = R.as_float_image(x)
    except (ShapeError, DTypeError, DataError):
        return
    assert out.ndim in (2, 3) and out.dtype == np.float64 and out.min() >= 0 and out.max() <= 1


def test_load_image_png_kinds_and_bad_files(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(R.load_image(tmp_path / "rgb.png"), rgb)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    expected = np.asarray(pal.convert("RGB"))
    assert np.array_equal(R.load_image(tmp_path / "pal.png"), expected)
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(grey16.astype(np.int32)).convert("I;16").save(tmp_path / "g16.png")
    assert np.array_equal(R.load_image(tmp_path / "g16.png"), (grey16 >> 8).astype(np.uint8))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"the file is empty \(0 bytes\): expected a PNG image"):
        R.load_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(DataError, match="expected a PNG file"):
        R.load_image(tmp_path / "text.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "rgb.png").read_bytes()[:40])
    with pytest.raises(DataError, match="truncated"):
        R.load_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match="no such image file"):
        R.load_image(tmp_path / "missing.png")
    R.save_image(tmp_path / "out.png", rgb / 255.0)
    assert np.array_equal(R.load_image(tmp_path / "out.png"), rgb)


# --------------------------------------------------------------------------- task helpers
@pytest.mark.parametrize("shape", [(4, 4), (9, 13), (1, 30), (16, 5)])
def test_colorize_is_the_per_pixel_formula_at_any_size(colorizer, shape):
    grey = np.random.default_rng(sum(shape)).random(shape)
    out = R.colorize(colorizer, grey)
    assert out.shape == shape + (3,)
    light = R.lightness(grey)                                        # L/100 of the sRGB grey
    lab = np.stack([100 * light, 128 * (light - 1), 128 * (light - 1)], axis=-1)
    np.testing.assert_allclose(out, M.lab_to_rgb(lab), atol=2e-5)


def test_colorize_of_a_grey_prediction_gives_the_grey_image_back(tmp_path):
    # sigmoid output with W = 0: every code is 0.5, i.e. a = b = 0 → the input's own grey
    m = _model(tmp_path / "g.onnx", I.colorize_task(P), P * P, np.zeros((P * P, 2 * P * P)), out_act="sigmoid")
    grey = np.random.default_rng(0).random((7, 10))
    out = R.colorize(m, grey)
    # 1e-4: the sRGB grey (v, v, v) sits at a ≈ −0.0025, b ≈ 0.0047 with the standard D65 constants,
    # not exactly at a = b = 0, so its "grey" prediction is off by ~4e-5
    np.testing.assert_allclose(out, np.repeat(grey[..., None], 3, axis=-1), atol=1e-4)
    rgb = np.random.default_rng(1).random((6, 6, 3))                 # colour in: only its lightness is used
    lab = np.stack([100 * R.lightness(rgb), np.zeros((6, 6)), np.zeros((6, 6))], axis=-1)
    np.testing.assert_allclose(R.colorize(m, rgb), M.lab_to_rgb(lab), atol=1e-6)


def test_denoise_identity_model_returns_the_image_at_any_size(denoiser):
    for shape in [(4, 4), (11, 6), (3, 3)]:
        img = np.random.default_rng(0).random(shape)
        np.testing.assert_allclose(R.denoise(denoiser, img), img, atol=1e-6)
    rgb = np.random.default_rng(1).random((5, 9, 3))
    np.testing.assert_allclose(R.denoise(denoiser, rgb), rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    u8 = (np.arange(16, dtype=np.uint8) * 16).reshape(4, 4)
    np.testing.assert_allclose(R.denoise(denoiser, u8), u8 / 255.0, atol=1e-6)


def test_classify_images_resizes_by_hand(classifier):
    img = np.zeros((4, 4))
    img[:2, :2] = 1.0
    res = R.classify_images(classifier, img)
    # resized to [[1, 0], [0, 0]] (block means): tl 1, br 0, mean 1/4
    np.testing.assert_allclose(res.scores, [[1.0, 0.0, 0.25]], atol=1e-6)
    assert res.label == "tl" and res.index.tolist() == [0]                # one image: one str label
    stack = np.stack([img, img[::-1, ::-1]])[..., None]               # (B, H, W, 1)
    assert R.classify_images(classifier, stack).label == ["tl", "br"]
    assert R.classify_images(classifier, np.zeros((3, 6, 6))).index.shape == (3,)   # (B, H, W): 6 is no channel count
    assert R.classify_images(classifier, [img, np.ones((3, 5, 3), np.uint8) * 255]).label == ["tl", "tl"]
    with pytest.raises(ShapeError, match="expected at least one image"):
        R.classify_images(classifier, [])


def test_run_task_notes_and_mismatches(colorizer, denoiser, classifier):
    out = R.run_task(classifier, "classify", np.zeros((6, 6, 3)))
    assert out.classes is not None and any("resized 6x6 → 2x2" in n for n in out.notes)
    assert any("luma" in n for n in out.notes)
    assert R.run_task(classifier, "classify", np.zeros((2, 2))).notes == []
    out = R.run_task(colorizer, "colorize", np.zeros((9, 9)))
    assert out.image.shape == (9, 9, 3) and "tiled into" in out.notes[0]
    out = R.run_task(denoiser, "denoise", np.zeros((4, 4, 3)))
    assert out.image.shape == (4, 4) and out.notes == ["colour image: denoised on its luma (the model is grey)"]
    with pytest.raises(ConfigError, match="--task colorize: the model was trained for 'classify': expected --task "
                                          "classify"):
        R.run_task(classifier, "colorize", np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="unknown task 'segment'"):
        R.run_task(classifier, "segment", np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="colorize\\(\\): the model's task is 'denoise'"):
        R.colorize(denoiser, np.zeros((4, 4)))


def test_task_patch_checks(tmp_path):
    task = I.colorize_task(P)
    assert R.task_patch(task) == (4, 2)
    bad = json.loads(json.dumps(task))
    bad["patch"]["size"] = 8
    with pytest.raises(ConfigError, match="patch size 8 differs from the model's input image 4x4"):
        R.task_patch(bad)
    with pytest.raises(ConfigError, match="declares no input image"):
        R.task_patch({"name": "colorize", "input": {}})
    wrong = _model(tmp_path / "w.onnx", task, P * P, np.zeros((P * P, 3)))
    with pytest.raises(ConfigError, match="expected 2·4² = 32"):
        R.colorize(wrong, np.zeros((4, 4)))


def test_imaging_stays_torch_free():
    import subprocess
    import sys

    code = ("import sys, zor.runtime.tasks, zor.tasks.images; "
            "bad = [m for m in ('torch', 'onnx', 'skimage', 'sklearn') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"importing the imaging modules loaded {proc.stdout.strip()} {proc.stderr}"


# --------------------------------------------------------------------------- Model helpers and zor-run --task
def test_classify_reads_the_kind_of_input_from_its_shape(classifier):
    rng = np.random.default_rng(3)
    big = rng.random((6, 6, 3))                      # not the model's 2x2: resized and made grey
    c = R.classify(classifier, big)
    assert c.label == R.classify_images(classifier, big).label
    rows = rng.random((3, 4)).astype(np.float32)     # rows of the model's width go straight through
    np.testing.assert_allclose(R.classify(classifier, rows).scores, classifier.run(rows)["output"])


def test_zor_run_task_on_png_files(colorizer, denoiser, classifier, tmp_path):
    from click.testing import CliRunner
    from zor.runtime.cli import run_main

    rng = np.random.default_rng(4)
    Image.fromarray((rng.random((10, 6)) * 255).astype(np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray((rng.random((5, 5, 3)) * 255).astype(np.uint8)).convert("P").save(tmp_path / "pal.png")
    (tmp_path / "empty.png").write_bytes(b"")

    def run(model, task, *args):
        return CliRunner().invoke(run_main, [str(model.path), *map(str, args), "--task", task,
                                             "--device", "generic"])

    res = run(colorizer, "colorize", tmp_path / "grey.png", tmp_path / "pal.png", "-o", tmp_path / "col")
    assert res.exit_code == 0, res.output
    out = R.load_image(tmp_path / "col" / "grey.png")
    assert out.shape == (10, 6, 3)
    expected = R.colorize(colorizer, R.load_image(tmp_path / "grey.png"))
    np.testing.assert_allclose(out / 255.0, expected, atol=0.5 / 255 + 1e-9)
    assert "tiled" in res.output                     # the note about what was done to the input

    res = run(denoiser, "denoise", tmp_path / "grey.png", "-o", tmp_path / "den.png")
    assert res.exit_code == 0 and R.load_image(tmp_path / "den.png").shape == (10, 6)

    res = run(classifier, "classify", tmp_path / "pal.png", "-o", tmp_path / "cls.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "cls.json").read_text())
    assert doc["label"] in ("tl", "br", "mean") and len(doc["scores"]) == 3 and "resized" in res.output

    for bad, match in ((tmp_path / "empty.png", "empty"), ):
        res = run(classifier, "classify", bad, "-o", tmp_path / "x.json")
        assert res.exit_code == 2 and match in res.output
    res = run(classifier, "colorize", tmp_path / "grey.png", "-o", tmp_path / "y.png")
    assert res.exit_code == 2 and "trained for 'classify'" in res.output
    np.save(tmp_path / "rows.npy", np.zeros((1, 4), np.float32))
    res = run(classifier, "classify", tmp_path / "rows.npy", "-o", tmp_path / "z.json")
    assert res.exit_code == 2 and "expected a .png image" in res.output
