"""Atomic writes, and the demo's code path on a tiny budget."""

import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest

from zor.common.errors import OutputPathError
from zor.common.fileio import atomic_path, write_bytes_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044, f"written files must be readable by others per umask, got {oct(mode)}"


def test_atomic_write_errors(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        write_bytes_atomic(tmp_path / "no" / "f", b"x")
    with pytest.raises(OutputPathError, match="is a folder"):
        write_bytes_atomic(tmp_path, b"x")


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("zor_demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    summary = demo.run_demo(tmp_path, steps=30, n_test=50, progress=False)
    out = capsys.readouterr().out
    assert "100(1-MAE)" in out and "mean image" in out
    assert (tmp_path / "fewshot.zor").is_file() and (tmp_path / "reconstructions.png").is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"] == 30 and saved["test_images"] == 50
    # exported and served by the runtime: float32 matches the engine, int8 within its budget
    rt = saved["runtime"]
    assert (tmp_path / "fewshot.onnx").is_file() and (tmp_path / "fewshot-int8.onnx").is_file()
    assert rt["float32"]["max_abs_diff_vs_engine"] <= 1e-5
    metric = "one_minus_mae_percent"         # 100·(1 − MAE), named for what it is, not "accuracy"
    assert "accuracy" not in summary["zor"] and "none" not in rt
    assert rt["float32"]["metric"][metric] == pytest.approx(summary["zor"][metric], abs=1e-4)
    assert abs(rt["int8"]["metric"][metric] - summary["zor"][metric]) <= 0.5
    assert rt["int8"]["bytes"] < 0.35 * rt["float32"]["bytes"]
    assert "export (zor-export) and the torch-free runtime" in out
    # untrained: ~7 dB; after 30 steps Zor already beats the mean image (~12 vs ~10.4 dB)
    assert summary["zor"]["psnr_db"] > summary["mean_image"]["psnr_db"]
