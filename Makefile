# Two commands do everything on a fresh machine: `make demo` (the embedded offline end-to-end run) and
# `make test` (the whole suite). Both create .venv and install the project into it on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-seeds gap-study d3s-demo d3s-disentangle-demo test lint bench gpu-check gpu-check-smoke clean browser

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# The distribution was called ffr before it became ffr-synth: one distribution owns the packages and the script.
	$(BIN)/python -m pip uninstall -q -y ffr 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[test]'
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Debian's chromium for the review app's browser test (Playwright drives it; no browser download). Installed
# when missing and apt-get is usable (root); never fails the build — without it that one test is skipped.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; \
	  then echo "chromium: installed with apt-get"; \
	  else echo "chromium: apt-get install failed; tests/test_review_browser.py will be skipped"; fi; \
	else echo "chromium: missing and apt-get not usable (not root); tests/test_review_browser.py will be skipped"; fi

demo: $(STAMP)
	$(BIN)/ffr demo --out demo_out

# The paper-style table of the embedded benchmark: the full grid over five seeds (mean ± std, paired comparisons).
demo-seeds: $(STAMP)
	$(BIN)/ffr demo --out demo_out --seeds 0,1,2,3,4

# FFR's (B, G) argument as an experiment: every variant × ERM/GroupDRO × 3 seeds at 3 generator-signature
# strengths of the synthetic renderer (0 = today's), test WGA against strength with the (B, G) diagnostic beside
# it (gap_out/report/gap.md, gap.png). About 17 min on an idle 2-core machine (estimated from the demo's rate).
gap-study: $(STAMP)
	$(BIN)/ffr demo --out gap_out --seeds 0,1,2 --gap-study 0,8,24

d3s-demo: $(STAMP)
	$(BIN)/ffr d3s demo --out d3s_demo_out

# D3S's disentanglement and spurious-correlation experiments on the embedded D3S, 3 seeds, CPU (README's table).
d3s-disentangle-demo: $(STAMP)
	$(BIN)/ffr d3s disentangle-demo --out d3s_disentangle_out --seeds 0,1,2

# The whole suite, after the linters: CI (.ci/run) runs `make test`, so a broken layer fails CI.
test: lint browser
	$(BIN)/python -m pytest -q --durations=15 tests

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]: the layers of ARCHITECTURE.md).
lint: $(STAMP)
	$(BIN)/ruff check ffr pipelines tune tests benchmarks
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Every GPU number in one run (<= 8 min on one H100): writes benchmarks/results/gpu_check.{json,md} and the
# table in docs/cluster.md. The smoke mode runs the same sections on tiny models on a CPU (CI: test_gpu_check.py).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out benchmarks/results --docs docs/cluster.md

gpu-check-smoke: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --smoke --out /tmp/ffr-gpu-check-smoke

clean:
	rm -rf $(VENV) demo_out gap_out d3s_demo_out d3s_disentangle_out .pytest_cache
