#!/usr/bin/env bash
# The GPU checks of the math issue in one command, for a machine with CUDA and PyTorch where rlopt is not installed
# (such as a lent H100 or H200): the transformer's `gpu` tests, then bench_math on CUDA, rlopt against TRL.
#
#   scripts/gpu_check.sh [OUTDIR]        run the checks; logs and bench_math's JSON go to OUTDIR (default gpu-check):
#                                        the gpu tests, rlopt vs TRL (fp32, bf16, rlopt bf16 vs TRL fp32), rlopt's
#                                        phases and a torch.profiler record, and rlopt with CUDA graphs of its
#                                        decoding steps (opt-in)
#   scripts/gpu_check.sh --fetch-wheels  on a machine with PyPI: download what such a machine lacks into .whl/
#
# rlopt runs from this checkout, without an install. Packages the GPU machine lacks (gymnasium, and TRL with what it
# needs beyond transformers) are installed from .whl/ into a temporary folder when .whl/ exists. --fetch-wheels
# takes them for CPython $WHEEL_PYTHON (default 3.12, the GPU image's Python here); .whl/ is git-ignored.
#
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (the gpu tests then skip): a way to try this script anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# pinned to what rlopt's benchmark was measured with on the CPU
WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p .whl
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${WHEELS[@]}"
  ls -l .whl
  exit 0
fi

out=${1:-gpu-check}
device=${GPU_CHECK_DEVICE:-cuda}
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PYTHON" - "$device" <<'EOF' 2>&1 | tee "$out/device.txt"
import sys

import torch

device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if device == "cuda":
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with GPU_CHECK_DEVICE=cpu to try the script without one")
    print(f"device: {torch.cuda.get_device_name(0)}")
EOF

# Each check below runs even when one before it failed (a lent machine's minutes are few); the exit status says
# whether any failed.
failed=()
check() { # check NAME COMMAND...: run COMMAND, its output shown and kept in OUTDIR/NAME.txt
  local name=$1
  shift
  "$@" 2>&1 | tee "$out/$name.txt" || failed+=("$name")
}
check pytest-gpu "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/agents/test_transformer.py \
  tests/agents/test_transformer_precision.py
check bench_math "$PYTHON" scripts/bench_math.py --device "$device" --steps 20 --repeats 3 --json "$out/bench_math.json"
# bf16 mixed precision on both sides (TRL's default), then rlopt bf16 against TRL fp32
check bench_math-bf16 "$PYTHON" scripts/bench_math.py --device "$device" --steps 20 --repeats 3 --precision bf16 \
  --json "$out/bench_math-bf16.json"
check bench_math-bf16-fp32 "$PYTHON" scripts/bench_math.py --device "$device" --steps 20 --repeats 3 \
  --precision bf16 --trl-precision fp32 --json "$out/bench_math-bf16-fp32.json"
# where rlopt's step goes on this device: its phases apart, and a torch.profiler record of its measured steps
check rlopt-detail "$PYTHON" scripts/bench_math.py --device "$device" --side rlopt --steps 20 --repeats 1 \
  --phases 15 --torch-profile --json "$out/rlopt-detail.json"
# what CUDA graphs of rlopt's decoding steps (opt-in) bring: the same rlopt side with them
check rlopt-cuda-graphs "$PYTHON" scripts/bench_math.py --device "$device" --side rlopt --steps 20 --repeats 3 \
  --cuda-graphs
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]} (logs in $out)" >&2
  exit 1
fi
echo "gpu_check: all checks passed (logs in $out)"
