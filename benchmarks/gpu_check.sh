#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): every number the study needs from an NVIDIA GPU, as JSON under $OUT.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh [--skip-fold] [--set train.epochs=10]
#   OUT=/tmp/check  bash benchmarks/gpu_check.sh --cpu       # tiny sizes on a CPU (the tests run this)
#
# On a GPU machine that has only torch with CUDA, the project's other dependencies come as wheels in
# $WHEELS (default: .whl beside this checkout; `make gpu-wheels` on a machine with the registries
# downloads them for Python 3.12 on x86-64). They are installed into a folder of their own, never over
# the machine's torch; the project itself runs from src/ with no install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
OUT=${OUT:-gpu-check}
NEEDED="numpy scipy pandas yaml nibabel SimpleITK monai nilearn sklearn joblib tqdm"
missing=$("$PYTHON" - "$NEEDED" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
    if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        site=${TMPDIR:-/tmp}/cmbstudy-gpu-check-site
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$WHEELS"/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: missing Python modules: $missing; put their wheels in $WHEELS (make gpu-wheels)" >&2
        exit 2
    fi
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OUT
mkdir -p "$OUT"
exec "$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
