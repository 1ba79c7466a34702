"""The runtime and its command lines import neither torch nor onnx."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["zor.runtime", "zor.runtime.cli", "zor.runtime.bench", "zor.runtime.png",
                                    "zor.devices", "zor.devices.cli"])
def test_runtime_modules_stay_light(module):
    code = (f"import sys, {module}; "
            "bad = [m for m in ('torch', 'onnx', 'PIL', 'matplotlib') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"import {module} loaded {proc.stdout.strip()} {proc.stderr}"


def test_running_a_model_loads_no_torch(tmp_path):
    import numpy as np
    from test_runtime_support import build_model

    path = build_model(tmp_path / "m.onnx", [{"size": 3}, {"size": 2}], [np.ones((3, 2))],
                       [np.zeros(3), np.full(2, -np.inf)])
    code = ("import sys, numpy as np; from zor.runtime import Model; "
            f"m = Model({str(path)!r}, device='generic', threads=1); m.run(np.ones((1, 3), np.float32)); "
            "m.run(np.ones((1, 3), np.float32), spikes=True); "
            "sys.exit(1 if 'torch' in sys.modules or 'onnx' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
