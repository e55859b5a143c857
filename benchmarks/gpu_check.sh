#!/usr/bin/env bash
# The GPU checks of the Triton part as one run on any Linux machine with an NVIDIA GPU, torch and
# Triton, in priority order, each step under its own time limit and none started past a deadline:
#   env       nvidia-smi, torch/triton versions
#   targets   benchmarks/flash_targets.py: reference vs SDPA flash (bf16), fwd+bwd target shape,
#             backward block-size sweep                                 -> $OUT/targets.json
#   reference grade the reference on the flash parts, GPU tests included -> $OUT/reference.json
#   alt       grade tests/fixtures/submissions/flash_alt likewise      -> $OUT/flash_alt.json
#   bench     autograder bench flash at GPU sizes                       -> $OUT/flash.png
#   suite     the project's flash grading tests (every flash fixture on the GPU)
# Everything printed also goes to $OUT/log.txt (OUT defaults to ./gpu-out).
#
# Usage, in a checkout on the GPU machine:
#   benchmarks/gpu_wheels.sh          # the harness's other wheels into .whl/ (on a machine with internet
#                                     # access; copy .whl/ along if the GPU machine has none)
#   bash benchmarks/gpu_check.sh      # or: OUT=/some/folder bash benchmarks/gpu_check.sh targets reference
# Optional arguments: the steps to run (default: all, in the order above); DEADLINE_S (default
# 500) is when no further step starts; PY=.venv/bin/python skips the setup (to try the script here).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DEADLINE_S=${DEADLINE_S:-500}
STEPS=${*:-env targets reference alt bench suite}
START=$SECONDS

VENV=/tmp/ag-venv
if [ -n "${PY:-}" ]; then  # an interpreter that already has the harness (a check of this script)
    :
elif PY=$VENV/bin/python && [ ! -x "$PY" ]; then
    echo "== setup: venv over the image's packages, the harness's wheels from .whl/"
    python3 -m venv --system-site-packages "$VENV" || exit 1
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
    else
        echo "no .whl/ here: run benchmarks/gpu_wheels.sh first (and copy .whl/ to this machine)" && exit 1
    fi
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$PWD" > "$site/autograder-checkout.pth"  # the harness from this checkout (works under -I)
fi
"$PY" -c 'import autograder, pydantic, gradescope_utils, nbformat, typer, torch, triton' || exit 1

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    local used=$((SECONDS - START))
    if [ "$used" -ge "$DEADLINE_S" ]; then
        echo "== $name: not started (${used} s used, deadline ${DEADLINE_S} s)"
        echo "$name not-started" >> "$OUT/steps.txt"
        return 0
    fi
    echo "== $name (limit ${limit} s, ${used} s used so far)"
    local t0=$SECONDS
    timeout -k 15 "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    echo "$name rc=$rc $((SECONDS - t0))s" >> "$OUT/steps.txt"
}

step env 30 bash -c 'nvidia-smi; "$0" -c "import torch, triton; print(torch.__version__, triton.__version__, \
torch.cuda.get_device_name(), torch.version.cuda)"' "$PY"
step targets 200 "$PY" benchmarks/flash_targets.py --json "$OUT/targets.json"
step reference 240 "$PY" -m autograder grade reference -p flash -p flash_backward -o "$OUT/reference.json"
step alt 180 "$PY" -m autograder grade tests/fixtures/submissions/flash_alt -p flash -p flash_backward \
    -o "$OUT/flash_alt.json"
step bench 120 "$PY" -m autograder bench flash --sizes 1024,4096,16384 --head-dim 64 --heads 16 \
    --out "$OUT/flash.png"
step suite 240 "$PY" -m pytest -q -x tests/test_flash_grading.py
echo "== steps"
cat "$OUT/steps.txt"
echo "== total $((SECONDS - START)) s"
