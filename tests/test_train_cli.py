"""``python -m zor.train``: options, bad input (exit 2 with the expected value named), resume, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from zor import Zor
from zor.common.errors import ConfigError
from zor.train import RANDOM_ROWS, load_data, main, parse_layers

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--data", "bundled", "--layers", "784,16,784", "--batch-size", "8", "--no-progress", "--single"]


def _invoke(*args: str):
    return CliRunner().invoke(main, [*SMALL, *args])


def test_parse_layers_by_hand():
    assert parse_layers("784,64,784") == [784, 64, 784]
    for bad in ("784", "784,,784", "784,-1,784", "a,b", "784,0"):
        with pytest.raises(ConfigError, match="--layers"):
            parse_layers(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_parse_layers_takes_any_text_without_a_traceback(text):
    try:
        sizes = parse_layers(text)
    except ConfigError:
        return
    assert len(sizes) >= 2 and all(isinstance(n, int) and n > 0 for n in sizes)


def test_a_run_writes_a_checkpoint_and_a_summary(tmp_path):
    r = _invoke("--device", "cpu", "--steps", "6", "--checkpoint", str(tmp_path / "m.zor"), "--json", str(tmp_path / "s.json"))
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["steps"] == 6 and summary["world_size"] == 1 and summary["sizes"] == [784, 16, 784]
    assert summary["batch_size"] == 8 and summary["device"] == "cpu" and summary["start_step"] == 0
    assert Zor.load(tmp_path / "m.zor", device="cpu").sizes == [784, 16, 784]


def test_resume_on_the_command_line_equals_an_uninterrupted_run(tmp_path):
    whole, part = tmp_path / "whole.zor", tmp_path / "part.zor"
    base = ["--device", "cpu", "--per-class", "2"]
    assert _invoke(*base, "--steps", "20", "--checkpoint", str(whole)).exit_code == 0
    assert _invoke(*base, "--steps", "9", "--checkpoint", str(part)).exit_code == 0
    r = _invoke(*base, "--steps", "20", "--checkpoint", str(part), "--resume")
    assert r.exit_code == 0, r.output
    assert "start_step=9" in r.output and "steps=20" in r.output
    a, b = Zor.load(whole, device="cpu"), Zor.load(part, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))


def test_resume_with_other_settings_names_the_difference(tmp_path):
    path = tmp_path / "m.zor"
    assert _invoke("--device", "cpu", "--steps", "2", "--checkpoint", str(path)).exit_code == 0
    r = _invoke("--device", "cpu", "--steps", "4", "--checkpoint", str(path), "--resume", "--lr", "0.01")
    assert r.exit_code == 2
    assert "lr: checkpoint 0.001, this run 0.01" in r.output


@pytest.mark.parametrize("args, message", [
    (["--layers", "784,16,10"], "reconstruction needs the last layer as wide as the first (784), got 10"),
    (["--layers", "100,16,100"], "must have 784 units for bundled"),
    (["--layers", "784"], "at least two positive sizes"),
    (["--resume"], "--resume needs --checkpoint PATH"),
    (["--timeout", "0"], "--timeout: expected a positive number of seconds"),
    (["--device", "tpu"], "--device: expected auto, cpu or cuda, got 'tpu'"),
    (["--rule", "nope"], "unknown learning rule 'nope'"),
    (["--per-class", "30"], "class 0 has only 20 samples, expected ≥ 30"),
])
def test_bad_options_exit_2_naming_what_was_expected(args, message):
    r = _invoke("--steps", "1", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_missing_output_folders_are_made_and_a_folder_as_output_is_refused(tmp_path):
    path = tmp_path / "runs" / "a" / "m.zor"
    r = _invoke("--device", "cpu", "--steps", "2", "--checkpoint", str(path))
    assert r.exit_code == 0, r.output
    assert path.is_file()
    r = _invoke("--device", "cpu", "--steps", "2", "--checkpoint", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.output            # click refuses it first


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path):
    r = _invoke("--device", "cpu", "--steps", "2", "--layers", "784,16,10", "--checkpoint",
                str(tmp_path / "new" / "m.zor"))
    assert r.exit_code == 2 and not (tmp_path / "new").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is present")
def test_cuda_without_a_gpu_exits_2():
    r = _invoke("--steps", "1", "--device", "cuda")
    assert r.exit_code == 2
    assert "--device cuda asked for, but torch sees no CUDA GPU" in r.output


def test_distributed_without_torchrun_names_the_missing_variables(monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(main, ["--steps", "1", "--no-progress", "--distributed", "--device", "cpu"])
    assert r.exit_code == 2
    assert "missing: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (torchrun sets them all)" in r.output


def test_random_data_is_seeded_and_as_wide_as_the_first_layer():
    a, b = load_data("random", 32, None, seed=3), load_data("random", 32, None, seed=3)
    assert a.shape == (RANDOM_ROWS, 32) and a.dtype.name == "float32" and (a == b).all()
    assert 0.0 <= a.min() and a.max() < 1.0


def test_python_dash_m_runs_it():
    r = subprocess.run([sys.executable, "-m", "zor.train", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--batch-size" in r.stdout and "torchrun" in r.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_a_cuda_run_writes_a_checkpoint_that_loads_on_cpu(tmp_path):
    r = _invoke("--device", "cuda", "--steps", "50", "--checkpoint", str(tmp_path / "m.zor"))
    assert r.exit_code == 0, r.output
    assert "device=cuda" in r.output
    assert Zor.load(tmp_path / "m.zor", device="cpu").sizes == [784, 16, 784]
