"""50 learning steps with the runtime alone: on the host (a torch-free subprocess) and on the emulated
Raspberry Pi cores (benchmarks/arm/learn_check.py), each against the host's Learner run.

``ZOR_ARM``: ``0`` skips the emulated test; unset skips it, saying why, where the arm64 root of
benchmarks/arm/emulate.sh, qemu or root rights are missing (learn_check exits 77); ``require``
turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORES = ("cortex-a53", "cortex-a72", "cortex-a76")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("learn_check")
    p = subprocess.run([sys.executable, "-m", "benchmarks.arm.learn_check", "prepare", str(folder)], cwd=REPO,
                       capture_output=True, text=True, check=False, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return folder


def test_host_run_without_torch_matches(work) -> None:
    p = subprocess.run([sys.executable, "-m", "benchmarks.arm.learn_check", "run", str(work), str(work / "h.json")],
                       cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    report = json.loads((work / "h.json").read_text())
    assert report["passed"] and report["steps"] == 50 and report["failures"] == []
    assert report["relative"]["weight_0"] <= 1e-4 and report["relative"]["output"] <= 1e-4


@pytest.mark.arm
def test_emulated_pi_cores_match_host(work) -> None:
    mode = os.environ.get("ZOR_ARM", "")
    if mode == "0":
        pytest.skip("ZOR_ARM=0: emulated tests switched off")
    p = subprocess.run([sys.executable, "-m", "benchmarks.arm.learn_check", "emulate", str(work)], cwd=REPO,
                       capture_output=True, text=True, check=False, timeout=1200)
    if p.returncode == 77:
        reason = f"learn_check cannot emulate here: {p.stderr.strip() or 'no arm64 root from emulate.sh'}"
        if mode == "require":
            pytest.fail(reason)
        pytest.skip(reason)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    for core in CORES:
        report = json.loads((work / f"{core}.json").read_text())
        assert report["machine"] == "aarch64", core
        assert report["passed"] and report["failures"] == [], (core, report["failures"])
        assert all(v <= 1e-3 for v in report["relative"].values()), (core, report["relative"])
