"""zor.tasks.images: colour spaces (hand values, round trips, parity with scikit-image), noise,
patches, the photo split, the CIFAR-10 samples from a wheel, and the task dicts."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from zor.common import imagemath as M
from zor.common.errors import DataError, DataNotFoundError, ShapeError
from zor.tasks import images as I

unit = st.floats(0.0, 1.0, allow_nan=False, width=64)


# --------------------------------------------------------------------------- colour
def test_lab_of_white_black_and_primaries_by_reference_values():
    # CIE Lab of sRGB white/black is (100, 0, 0)/(0, 0, 0); sRGB red is (53.24, 80.09, 67.20),
    # green (87.73, −86.18, 83.18), blue (32.30, 79.19, −107.86) (standard D65 tables)
    lab = M.rgb_to_lab(np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(lab[3], [87.73, -86.18, 83.18], atol=0.05)
    np.testing.assert_allclose(lab[4], [32.30, 79.19, -107.86], atol=0.05)


def test_lab_matches_scikit_image():
    from skimage import color

    x = np.random.default_rng(0).random((20, 30, 3))
    np.testing.assert_allclose(M.rgb_to_lab(x), color.rgb2lab(x), atol=1e-9)
    lab = color.rgb2lab(x)
    np.testing.assert_allclose(M.lab_to_rgb(lab), color.lab2rgb(lab), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4, 3), elements=unit))
def test_lab_and_ycbcr_round_trip(rgb):
    # 1e-7: the sRGB (0.04045 / 0.0031308) and Lab (0.008856 / 0.206893) break points of the
    # standard constants are not exactly each other's images (a jump of ~3e-8 at c = 0.04045)
    np.testing.assert_allclose(M.lab_to_rgb(M.rgb_to_lab(rgb)), rgb, atol=1e-7)
    np.testing.assert_allclose(M.ycbcr_to_rgb(M.rgb_to_ycbcr(rgb)), rgb, atol=1e-12)


def test_ycbcr_by_hand():
    # Y = .299 R + .587 G + .114 B; Cb = .5 + (B − Y)/1.772; Cr = .5 + (R − Y)/1.402
    ycc = M.rgb_to_ycbcr(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(ycc[0], [0.299, 0.5 - 0.299 / 1.772, 0.5 + 0.701 / 1.402], atol=1e-12)
    np.testing.assert_allclose(ycc[1], [0.5, 0.5, 0.5], atol=1e-12)


def test_ab_code_and_planes_round_trip():
    assert M.encode_ab(0.0) == 0.5 and M.encode_ab(-128.0) == 0.0 and M.encode_ab(128.0) == 1.0
    np.testing.assert_allclose(M.decode_ab(np.array([0.0, 0.25, 0.5, 1.0, 1.7])), [-128, -64, 0, 128, 128])
    rgb = np.random.default_rng(1).random((3, 4, 5, 3)).astype(np.float32)
    grey, ab = M.lab_planes(rgb)
    assert grey.shape == (3, 20) and ab.shape == (3, 40) and grey.dtype == np.float32
    np.testing.assert_allclose(M.rgb_from_planes(grey, ab, 4, 5), rgb, atol=2e-5)
    # the a plane comes first: a of pixel (0, 0) of image 0
    np.testing.assert_allclose(ab[0, 0], M.encode_ab(M.rgb_to_lab(rgb[0, 0, 0])[1]), atol=1e-6)


def test_colour_bad_input():
    with pytest.raises(ShapeError, match=r"expected colours on the last axis \(\.\.\., 3\), got shape \(2, 4\)"):
        M.rgb_to_lab(np.zeros((2, 4)))
    with pytest.raises(DataError, match="expected finite values, got 1 NaN/inf"):
        M.lab_to_rgb(np.array([np.nan, 0, 0]))
    with pytest.raises(ShapeError, match=r"expected RGB images \(N, H, W, 3\)"):
        M.lab_planes(np.zeros((4, 4, 3)))
    with pytest.raises(ShapeError, match="expected grey"):
        M.rgb_from_planes(np.zeros((1, 4)), np.zeros((1, 4)), 2, 2)


# --------------------------------------------------------------------------- noise
def test_salt_and_pepper_by_hand():
    x = np.full((1000, 10), 0.5, np.float32)
    assert np.array_equal(M.salt_and_pepper(x, 0.0, np.random.default_rng(0)), x)
    full = M.salt_and_pepper(x, 1.0, np.random.default_rng(0))
    assert set(np.unique(full)) == {0.0, 1.0} and full.dtype == np.float32
    part = M.salt_and_pepper(x, 0.2, np.random.default_rng(0))
    hit = part != 0.5
    assert abs(hit.mean() - 0.2) < 0.015                       # 10,000 pixels: 4 standard deviations
    assert abs((part[hit] == 1.0).mean() - 0.5) < 0.04


def test_gaussian_noise_statistics_and_clipping():
    x = np.full((200, 50), 0.5)
    y = M.gaussian_noise(x, 0.1, np.random.default_rng(0))
    assert abs((y - x).std() - 0.1) < 0.003 and abs((y - x).mean()) < 0.003
    z = M.gaussian_noise(np.zeros((10, 10)), 5.0, np.random.default_rng(0))
    assert z.min() >= 0.0 and z.max() <= 1.0
    assert np.array_equal(M.gaussian_noise(x, 0.0, np.random.default_rng(0)), x)


def test_noisy_pairs_and_noise_errors():
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    noisy, clean = M.noisy_pairs(x, "gaussian", 0.2, seed=1, copies=2)
    assert noisy.shape == clean.shape == (6, 4)
    assert np.array_equal(clean[0], clean[1]) and not np.array_equal(noisy[0], noisy[1])
    with pytest.raises(DataError, match="unknown noise 'speckle'"):
        M.add_noise(x, "speckle", 0.1, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"amount must lie in \[0, 1\], got 1.5"):
        M.salt_and_pepper(x, 1.5, np.random.default_rng(0))
    with pytest.raises(DataError, match="sigma must be a finite number"):
        M.gaussian_noise(x, float("nan"), np.random.default_rng(0))
    with pytest.raises(DataError, match="expected float pixels in"):
        M.gaussian_noise(np.zeros((2, 2), np.uint8), 0.1, np.random.default_rng(0))


# --------------------------------------------------------------------------- patches
def test_downscale_and_patches_by_hand():
    img = np.arange(16.0).reshape(4, 4)
    # block means of [[0,1],[4,5]] = 2.5, [[2,3],[6,7]] = 4.5, [[8,9],[12,13]] = 10.5, ...
    np.testing.assert_allclose(M.downscale(img, 2), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(M.downscale(np.arange(25.0).reshape(5, 5), 2), [[3.0, 5.0], [13.0, 15.0]])
    p = M.patches(img, 2, 2)
    assert p.shape == (4, 2, 2) and p[1].tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert M.patches(np.zeros((5, 6, 3)), 3, 1).shape == (12, 3, 3, 3)
    with pytest.raises(ShapeError, match="smaller than one 8x8 patch"):
        M.patches(img, 8, 1)
    with pytest.raises(ShapeError, match="smaller than the factor"):
        M.downscale(img, 5)
    with pytest.raises(DataError, match="factor must be an int"):
        M.downscale(img, 1.5)


def test_colorization_data_keeps_held_out_photos_apart():
    d = I.colorization_data(size=8, stride=8, scales=(8,), train=("coffee",), held_out=("flower",))
    xg, yab = d["train"]
    tg, tab = d["test"]
    assert xg.shape[1] == 64 and yab.shape[1] == 128 and tg.shape[1] == 64
    # coffee is 400x600 → 50x75 at scale 8 → 6x9 = 54 patches, ×2 with mirror images
    assert len(xg) == 108 and len(d["train_rgb"]) == 108
    # flower is 427x640 → 53x80 → 6x10 = 60 patches, no mirrors
    assert len(tg) == 60
    assert 0.0 <= xg.min() and xg.max() <= 1.0 and 0.0 <= yab.min() and yab.max() <= 1.0
    with pytest.raises(DataError, match="must not be trained on"):
        I.colorization_data(train=("coffee",), held_out=("coffee",))
    with pytest.raises(DataError, match="unknown photo 'mona'"):
        I.load_photo("mona")


def test_cifar10_samples_read_from_a_wheel(tmp_path):
    from PIL import Image

    wheel = tmp_path / "foolbox-9.9-py3-none-any.whl"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    with zipfile.ZipFile(wheel, "w") as z:
        for k, (img, label) in enumerate(zip(pixels, (3, 8))):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            z.writestr(f"foolbox/data/cifar10_{k:02d}_{label}.png", buf.getvalue())
        z.writestr("foolbox/data/mnist_00_7.png", b"not read")
    x, y = I.load_cifar10_samples(tmp_path)
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [3, 8]
    np.testing.assert_allclose(x, pixels / 255.0, atol=1e-7)
    with pytest.raises(DataNotFoundError, match="pip download foolbox --no-deps"):
        I.load_cifar10_samples(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no foolbox-"):
        I.find_foolbox_wheel(tmp_path / "empty")
    bad = tmp_path / "bad" / "foolbox-1-py3-none-any.whl"
    bad.parent.mkdir()
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="not a readable wheel"):
        I.load_cifar10_samples(bad)


# --------------------------------------------------------------------------- tasks
def test_one_hot_and_task_dicts():
    assert M.one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\)"):
        M.one_hot(np.array([3]), 3)
    with pytest.raises(DataError, match="expected 1-D integer labels"):
        M.one_hot(np.array([0.5]), 3)
    c = I.classify_task(["a", "b"])
    assert c["name"] == "classify" and c["labels"] == ["a", "b"] and c["input"]["image"]["height"] == 28
    z = I.colorize_task(16)
    assert z["output"]["shape"] == [None, 512] and z["patch"] == {"size": 16, "stride": 8, "window": "hann",
                                                                   "padding": "reflect"}
    assert z["colour"]["ab_scale"] == M.AB_SCALE
    d = I.denoise_task({"kind": "gaussian", "level": 0.3})
    assert d["noise"]["level"] == 0.3 and d["output"]["image"]["width"] == 28
