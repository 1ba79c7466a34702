"""The GPU check works before a GPU is lent: ``benchmarks.gpu_check --smoke`` runs its parity, export,
throughput and profile parts with the CPU standing in for the GPU, at 256-wide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_part_of_the_gpu_check_runs_on_the_cpu(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    assert result["gpu"] is None
    # the same seeded run twice on one device: the same weights, bit for bit, and the same accuracy
    assert result["parity"]["max_weight_diff"] == 0.0
    assert result["parity"]["cpu_train_accuracy"] == result["parity"]["cuda_train_accuracy"]
    assert result["export"]["passed"] is True
    t = result["throughput"]
    assert t["zor_cuda_samples_per_s"] > 0 and t["mlp_cuda_samples_per_s"] > 0
    assert t["cuda_vs_cpu_1thread"] > 0 and t["quickstart_cpu_s"] > 0 and t["quickstart_cuda_s"] > 0
    assert result["profile"]["layers"] == "256-256-256" and result["profile"]["batch"] == 64
