"""The three image-task examples run end to end in --quick mode: train, export (float32 verified,
int8 within budget), serve through the runtime from PNG files, benchmark, and draw the figure."""

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_classify_example(tmp_path, capsys):
    assert example("classify").main(["--quick", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["export"]["verification_passed"] is True and s["runtime_agreement"] == 100.0
    assert s["export"]["int8_metric"]["drop"] <= 0.5 and s["export"]["int8_bytes"] < s["export"]["float32_bytes"]
    assert any("resized 56x56 → 28x28" in n for n in s["zor_run_notes"])
    assert {"float32", "int8"} <= set(s["bench"]["models"])
    assert (tmp_path / "classify.png").read_bytes()[:8] == PNG_MAGIC
    assert "verification passed" in capsys.readouterr().out


@pytest.mark.slow
def test_colorize_example_with_cifar(tmp_path):
    from PIL import Image

    wheel = tmp_path / "wheel"
    wheel.mkdir()
    with zipfile.ZipFile(wheel / "foolbox-0-py3-none-any.whl", "w") as z:
        for k in range(6):
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
            z.writestr(f"foolbox/data/cifar10_{k:02d}_{k}.png", buf.getvalue())
    out = tmp_path / "out"
    assert example("colorize").main(["--quick", "--out", str(out), "--cifar", str(wheel)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["cifar"]["grey"]["chroma_ratio"] < 0.01 and np.isfinite(s["cifar"]["zor"]["delta_e_ab"])
    assert s["export"]["int8_metric"]["drop"] <= 0.5
    assert "tiled into" in s["zor_run_notes"][0]
    assert (out / "colorize.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "flower-colour.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_denoise_example(tmp_path):
    assert example("denoise").main(["--quick", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    for kind in ("gaussian", "salt_and_pepper"):
        assert s["psnr"][kind]["zor"] > s["psnr"][kind]["noisy"]                # it denoises at all
        assert abs(s["runtime_psnr_200"][kind]["float32"] - s["runtime_psnr_200"][kind]["int8"]) < 0.5
    assert s["mosaic"]["zor"] > s["mosaic"]["noisy"]
    assert s["zor_run_notes"] == ["56x56 image tiled into 4 28x28 patches side by side"]
    assert (tmp_path / "denoise.png").read_bytes()[:8] == PNG_MAGIC
