"""Fashion-MNIST loading: the IDX reader, the search order, the bundled subset."""

import gzip
import struct

import numpy as np
import pytest

from zor.common import metrics
from zor.common.errors import DataError, DataNotFoundError
from zor.tasks import datasets


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_fake_set(folder, n=6, gz=True):
    rng = np.random.default_rng(0)
    imgs = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s in ("train", "t10k")}
    labs = {s: (np.arange(n) % 10).astype(np.uint8) for s in ("train", "t10k")}
    for split in ("train", "t10k"):
        for kind, arr in ((f"{split}-images-idx3-ubyte", imgs[split]), (f"{split}-labels-idx1-ubyte", labs[split])):
            data = idx_bytes(arr)
            (folder / (kind + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return imgs, labs


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    imgs, labs = write_fake_set(tmp_path, gz=gz)
    x, y = datasets.load_fashion_mnist("train", path=tmp_path)
    assert x.shape == (6, 784) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, imgs["train"].reshape(6, 784) / np.float32(255))
    np.testing.assert_array_equal(y, labs["train"])


def test_env_var_is_searched(tmp_path, monkeypatch):
    write_fake_set(tmp_path)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    x, _ = datasets.load_fashion_mnist("test")
    assert x.shape == (6, 784)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as exc:
        datasets.load_fashion_mnist("train", path=tmp_path / "nowhere")
    assert "load_bundled" in str(exc.value) and isinstance(exc.value, FileNotFoundError)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    with pytest.raises(DataNotFoundError, match="ZOR_FASHION_MNIST"):
        datasets.load_fashion_mnist("train")


def test_corrupt_idx_files(tmp_path):
    good = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "trunc").write_bytes(good[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        datasets.read_idx(tmp_path / "trunc")
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="expected an IDX header"):
        datasets.read_idx(tmp_path / "foreign")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        datasets.read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="split must be one of"):
        datasets.load_fashion_mnist("valid", path=tmp_path)


def test_bundled_subset():
    x, y = datasets.load_bundled("train")
    xt, yt = datasets.load_bundled("test")
    assert x.shape == (200, 784) and xt.shape == (500, 784)
    assert np.bincount(y).tolist() == [20] * 10
    assert 0.0 <= x.min() and x.max() <= 1.0
    idx = datasets.few_shot(y, 1)
    assert sorted(y[idx].tolist()) == list(range(10))
    with pytest.raises(DataError, match="only 20 samples"):
        datasets.few_shot(y, 21)


def test_full_fashion_mnist_when_installed():
    if not datasets.DEBIAN_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    x, y = datasets.load_fashion_mnist("train")
    xt, yt = datasets.load_fashion_mnist("test")
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert np.bincount(y).tolist() == [6000] * 10
    # the bundled subset is taken from it: first 20 per class
    xb, _ = datasets.load_bundled("train")
    np.testing.assert_array_equal(xb[:20], x[np.flatnonzero(y == 0)[:20]])


def test_metrics_by_hand():
    out, tgt = np.array([[0.0, 0.5]]), np.array([[0.5, 0.5]])
    m = metrics.reconstruction(out, tgt)
    # MAE = 0.25, MSE = 0.125, PSNR = 10·log10(1/0.125) = 9.0309
    assert m["accuracy"] == pytest.approx(75.0) and m["mse"] == pytest.approx(0.125)
    assert m["psnr"] == pytest.approx(9.0309, abs=1e-4)
    assert metrics.class_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 50.0
