"""Imported NIR models (snnTorch's recurrent CuBa-LIF and convolutional LIF fixtures) streamed 100 steps with the
runtime alone: on the host (a torch-free subprocess) and on the emulated Raspberry Pi cores
(benchmarks/arm/nir_check.py), against the host's stream: every node's spikes equal at every step, every
state within the export's tolerance 1e-5 + 1e-5·|host|.

``ZOR_ARM``: ``0`` skips the emulated test; unset skips it, saying why, where the arm64 root of
benchmarks/arm/emulate.sh, qemu or root rights are missing (nir_check exits 77); ``require`` turns that skip
into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nir", reason="the 'nir' extra reads the NIR fixtures")

REPO = Path(__file__).resolve().parents[1]
CORES = ("cortex-a53", "cortex-a72", "cortex-a76")
MODELS = ("rsyn_cuba", "conv_lif")


def nir_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.arm.nir_check", *args], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nir_check")
    p = nir_check("prepare", str(folder))
    assert p.returncode == 0, p.stderr[-3000:]
    return folder


def test_host_run_without_torch_matches(work) -> None:
    p = nir_check("run", str(work), str(work / "h.json"))
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    report = json.loads((work / "h.json").read_text())
    assert report["passed"] and report["failures"] == [] and set(report["models"]) == set(MODELS)
    for name in MODELS:
        tensors = report["models"][name]["tensors"]
        assert report["models"][name]["steps"] == 100
        assert sum(k.startswith("spikes_") for k in tensors) == 7               # every node of the step order
        assert any(k.startswith("state_in_") for k in tensors)
    assert {"state_in_2_i", "state_in_2_v", "state_in_5_v", "state_in_edge_0"} <= set(report["models"]["rsyn_cuba"]["tensors"])


def test_a_changed_spike_or_state_is_found(work, tmp_path) -> None:
    """The comparison is not vacuous: one spike flipped in the host's record, or a state moved by 1e-3, fails."""
    bad = tmp_path / "bad"
    shutil.copytree(work, bad)
    with np.load(work / "rsyn_cuba-host.npz") as z:
        host = {k: z[k] for k in z.files}
    assert host["spikes_2"].any() and 0 < host["spikes_2"].mean() < 1          # the CuBa-LIF layer spikes
    host["spikes_2"][60, 3, 5] = ~host["spikes_2"][60, 3, 5]
    host["state_in_5_v"][80] += 1e-3
    np.savez(bad / "rsyn_cuba-host.npz", **host)
    p = nir_check("run", str(bad), str(bad / "h.json"))
    report = json.loads((bad / "h.json").read_text())
    assert p.returncode == 1 and not report["passed"]
    assert any("spikes_2: 1 spike(s) differ from the host, first at step 60" in f for f in report["failures"])
    assert any("state_in_5_v" in f for f in report["failures"])


@pytest.mark.arm
def test_emulated_pi_cores_match_host(work) -> None:
    mode = os.environ.get("ZOR_ARM", "")
    if mode == "0":
        pytest.skip("ZOR_ARM=0: emulated tests switched off")
    p = nir_check("emulate", str(work), timeout=1200)
    if p.returncode == 77:
        reason = f"nir_check cannot emulate here: {p.stderr.strip() or 'no arm64 root from emulate.sh'}"
        if mode == "require":
            pytest.fail(reason)
        pytest.skip(reason)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    for core in CORES:
        report = json.loads((work / f"{core}.json").read_text())
        assert report["machine"] == "aarch64", core
        assert report["passed"] and report["failures"] == [], (core, report["failures"])
        for name in MODELS:
            tensors = report["models"][name]["tensors"]
            assert all(t["differing"] == 0 for k, t in tensors.items() if k.startswith("spikes_")), (core, name)
            assert all(t["excess"] <= 0 for k, t in tensors.items() if k.startswith("state_in_")), (core, name)
