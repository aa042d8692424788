#!/usr/bin/env bash
# The prepared GPU check (issue 14): mdeploy-server on CUDA, checked and measured in one run.
#
#   loadtests/gpu_check.sh [--cpu-dry-run] [--quick] [--ort-wheel WHEEL] [--wheels DIR] OUT_DIR
#
#   --cpu-dry-run    every step with the CPU provider (what CI runs; no GPU needed)
#   --quick          short measurement windows
#   --ort-wheel F    install this onnxruntime-gpu wheel first (on a host without one)
#   --wheels DIR     install these wheels too (mdeploy's dependencies the host lacks)
#
# The wheels go into a folder of their own (--target) put first on PYTHONPATH, so they win over
# what the host's python3 has (its CPU onnxruntime, say) and nothing of the host's is changed.
# loadtests/README.md ("gpu_check") says how to bring the wheels to a host with no registry.
# Writes OUT_DIR/gpu_check.json and gpu_check.txt; exits 1 when a check failed.
set -euo pipefail

usage() { sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

device=cuda:0
quick=()
ort_wheel=""
wheels=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-dry-run) device=cpu ;;
        --quick) quick=(--quick) ;;
        --ort-wheel) ort_wheel="${2:?--ort-wheel needs a path}"; shift ;;
        --wheels) wheels="${2:?--wheels needs a folder}"; shift ;;
        -h|--help) usage ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$out" ] || usage; out="$1" ;;
    esac
    shift
done
[ -n "$out" ] || usage
mkdir -p "$out"
out="$(cd "$out" && pwd)"

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3)}"
export PYTHONUNBUFFERED=1

if [ -n "$ort_wheel$wheels" ]; then
    site="${GPU_CHECK_SITE:-/tmp/mdeploy-gpu-site}"
    to_install=()
    [ -z "$ort_wheel" ] || to_install+=("$ort_wheel")
    [ -z "$wheels" ] || to_install+=("$wheels"/*.whl)
    echo "installing ${#to_install[@]} wheels into $site"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${to_install[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$device" != cpu ]; then
    # CUDA and cuDNN of the host's nvidia-* wheels: onnxruntime-gpu looks for them beside itself,
    # then where the dynamic loader looks, and this puts them there.
    nvidia_libs="$("$PYTHON" - <<'EOF'
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations or []) if spec else []
print(":".join(sorted({str(lib) for root in roots for lib in Path(root).glob("*/lib") if lib.is_dir()})))
EOF
)"
    [ -z "$nvidia_libs" ] || export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
fi

exec "$PYTHON" -m loadtests.server.gpu_check --device "$device" "${quick[@]}" "$out"
