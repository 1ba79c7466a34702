#!/usr/bin/env bash
# The GPU check in one command (about 5 minutes on one GPU, setup included):
#
#   benchmarks/gpu_check.sh [PYTHON]
#
# PYTHON: the interpreter to use (default: $PYTHON, else .venv/bin/python, else python3).
# It must have torch (a CUDA build, to check anything); nothing large is downloaded here.
# When this repository is not installed in that Python, it is installed editable without
# dependencies (offline-safe). Results go to $OUT/gpu_check.json when OUT is set, else to
# benchmarks/results/gpu_check/. Without a GPU it says "no GPU" and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
py="${1:-${PYTHON:-}}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
echo "gpu_check: python $py ($("$py" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
if ! "$py" -c "import importlib.metadata as m; print('gpu_check: torch', m.version('torch'))" 2>/dev/null; then
    echo "gpu_check: $py has no torch; give a Python with torch installed (a CUDA build for a GPU check)" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | sed 's/^/gpu_check: /'
missing="$("$py" - <<'PY'
import importlib.util
need = ["numpy", "onnx", "onnxruntime", "safetensors", "click", "pytest", "hypothesis"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)"
if [ -n "$missing" ]; then
    echo "gpu_check: installing what $py lacks: $missing (small packages; torch is never touched)"
    "$py" -m pip install -q --retries 0 --timeout 10 $missing || echo "gpu_check: could not install $missing; the parts needing them will fail" >&2
fi
if ! "$py" -c "import zor.export, zor.train" 2>/dev/null; then
    echo "gpu_check: installing this repository editable into $py (no dependencies)"
    "$py" -m pip install -q --no-deps --no-build-isolation -e . || echo "gpu_check: editable install failed" >&2
fi
exec "$py" -m benchmarks.gpu_check ${OUT:+--out "$OUT"}
