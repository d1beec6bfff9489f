#!/usr/bin/env bash
# Everything this project checks on a CUDA machine, in one command: the GPU-marked tests (merged-LoRA
# sampling, batched and bf16 updates on CUDA, tiny models), then bench/gpu_step.py (SDPO steps at
# Qwen3-1.7B and Qwen3-8B shapes, random weights, no download) under a time limit. Prints the figures
# and, where $OUT is set, writes gpu_step.json and the log there.
#
#   bash scripts/gpu_check.sh            # tests + full bench (both shapes, G=16 x 1024 tokens, 3 steps): < 9 min on one H200
#   bash scripts/gpu_check.sh --quick    # tests + Qwen3-8B shapes, 256 tokens, 2 steps: < 4 min
#   bash scripts/gpu_check.sh ARGS...    # other arguments go to bench/gpu_step.py
#
# Missing Python packages (the GPU image has no pydantic) are installed from .whl/ into a temp folder
# (prepare .whl/ beforehand, where PyPI is reachable: bash scripts/gpu_wheels.sh); where everything is
# installed already, nothing is installed. No network is needed.
#
# From a session with the device tool (15 minutes of device time in all, a fresh machine takes a
# minute or more to start), from the repository root:
#   bash scripts/gpu_wheels.sh
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
#   run(command="bash scripts/gpu_check.sh --quick", carry=[".whl"], timeout_s=300)
# NOT RUN YET: no GPU was lent to the sessions that wrote it (README, Measurements).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
LOG="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$LOG") 2>&1

"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print(torch.cuda.get_device_name(0), "torch", torch.__version__)' || exit 1
missing=$("$PY" - <<'PYCODE'
import importlib.util
need = ["pydantic", "yaml", "typer", "rich", "peft", "transformers", "tokenizers", "pytest", "hypothesis"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYCODE
)
if [ -n "$missing" ]; then
    echo "missing: $missing; installing from .whl/"
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ here: run scripts/gpu_wheels.sh where PyPI is reachable and carry .whl"; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sdpo-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/sdpo-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_COLOR=1

quick=0
for arg in "$@"; do [ "$arg" = "--quick" ] && quick=1; done
limit=$([ $quick = 1 ] && echo 200 || echo 470)

echo "== GPU tests"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_update.py tests/test_hf_sampler.py
tests=$?
echo "== bench/gpu_step.py $* (limit ${limit} s)"
timeout "$limit" "$PY" bench/gpu_step.py --json "${OUT:-/tmp}/gpu_step.json" "$@"
bench=$?
[ $bench = 124 ] && echo "bench/gpu_step.py stopped at its ${limit} s limit"
echo "== tests exit $tests, bench exit $bench"
exit $(( tests != 0 || bench != 0 ))
