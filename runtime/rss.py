"""Peak memory of a model run, measured in a fresh process so that figures never mix.

:func:`peak_rss` starts ``python -c`` with a small script that imports the runtime,
notes the resident set so far (``import_rss_mb``), loads the model, runs it 20 times
at the asked batch (at most the file's batch limit) and reports its own high-water
mark (``peak_rss_mb``): ``VmHWM`` on Linux, ``ru_maxrss`` elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

__all__ = ["peak_rss"]

_RSS_CHILD = r"""
import json, sys


def hwm_mb():
    # VmHWM (Linux) is this process image's own peak: ru_maxrss would carry over the
    # parent's peak across fork+exec and report the benchmark's own memory.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # bytes on macOS, KiB elsewhere
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


import numpy as np
from zor.runtime import Model
base = hwm_mb()
path, device, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
weights = sys.argv[5] if len(sys.argv) > 5 else "auto"
m = Model(path, device=device, threads=threads or None, weights=weights)
if m.max_batch is not None:
    batch = min(batch, m.max_batch)
x = np.random.default_rng(0).random((batch, m.sizes[0]), dtype=np.float32)
for _ in range(20):
    m.run(x)
print(json.dumps({"peak_rss_mb": hwm_mb(), "import_rss_mb": base}))
"""


def peak_rss(path: str, device: str, threads: Optional[int], batch: int,
             weights: str = "auto") -> dict[str, Optional[float]]:
    """Peak RSS (MiB) of a fresh process running ``path`` at ``batch`` (at most the file's batch limit);
    None figures where unmeasurable."""
    if not Path("/proc/self/status").exists() and importlib.util.find_spec("resource") is None:   # Unix only
        return {"peak_rss_mb": None, "import_rss_mb": None}
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), device, str(threads or 0), str(batch), weights],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return {"peak_rss_mb": None, "import_rss_mb": None, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])
