"""`import zor`, `zor.runtime` and `zor.devices` stay light: no torch, no onnx."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["zor", "zor.runtime", "zor.devices", "zor.common.errors", "zor.tasks.datasets", "zor.common.metrics"])
def test_import_does_not_load_torch_or_onnx(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"import {module} loaded {proc.stdout.strip()} {proc.stderr}"


def test_engine_names_load_torch_on_first_use():
    code = "import sys, zor; assert 'torch' not in sys.modules; zor.Zor; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
