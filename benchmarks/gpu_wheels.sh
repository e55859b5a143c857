#!/usr/bin/env bash
# Download the wheels a GPU machine's Python environment lacks besides torch and Triton (for Python
# 3.12 on x86-64 by default), into .whl/ (ignored by git; copy it to the GPU machine when that one
# has no internet access). Versions are the ones this checkout's .venv runs, so the GPU machine
# grades with what the CPU suite tested.
# Usage: benchmarks/gpu_wheels.sh   (then see benchmarks/gpu_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# The harness's dependencies other than torch, triton, numpy and matplotlib (the image has those),
# with their pure-Python dependencies.
specs=$("$PY" - <<'PY'
from importlib.metadata import version, PackageNotFoundError
names = """pydantic pydantic_core annotated-types typing-inspection typing_extensions gradescope-utils
nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py jupyter_core traitlets
platformdirs attrs typer click rich shellingham markdown-it-py mdurl Pygments annotated-doc pytest
pluggy iniconfig pytest-timeout packaging safetensors PyYAML""".split()
for name in names:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)  # not installed here: the newest
PY
)
rm -rf .whl && mkdir .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do plat+=(--platform "$p"); done
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl $specs
echo "$(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1))"
