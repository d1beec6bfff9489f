#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels scripts/gpu_check.sh installs on a GPU machine
# that has torch, transformers, peft, accelerate, typer, rich, pyyaml and numpy but no network and no
# pydantic: pydantic and what it needs, for CPython 3.12 on x86-64 Linux, into .whl/ (gitignored;
# carried to the device machine with carry=[".whl"]). Versions are those of this checkout's venv, so
# both sides validate problems alike. About 3 MB.
#
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12 (the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
VER="${1:-3.12}"
pins=$("$PY" - <<'PYCODE'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in
               ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))
PYCODE
)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$VER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
ls -l .whl
