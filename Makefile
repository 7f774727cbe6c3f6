# Two commands on a fresh machine:  make demo  |  make test
#
# The environment is pinned in requirements.lock (runtime deps + the test and bench extras,
# resolved for CPython 3.11 on linux x86_64) and installed from it with --no-deps: pip does no
# resolution, so a fresh .venv takes a couple of minutes instead of pip's ~14-minute backtracking.
# pyproject.toml keeps the ranges for people who install framesift as a library; tests/test_lock.py
# fails when they and the lock drift apart.
#
#   make lock   re-resolve requirements.lock from pyproject.toml (with uv, through the same indexes
#               and constraints as pip's config) after changing a dependency; then commit both.
#               `make lock UPGRADE=1` also upgrades every pin.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The CPU/CUDA torch builds this project is tested with (they lie on local disk here).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# uv only resolves the lock (it is not part of the environment).
UV_VERSION := 0.13.9
LOCKTOOL := .venv-lock
PIP := $(BIN)/python -m pip --disable-pip-version-check
# pip warns once per package that the local file:// indexes lack; drop that noise, keep errors.
T = [$$(( $$(date +%s) - $$(cat $(VENV)/.install-started) )) s]
HUSH := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
# The pins other than torch's are fetched by JOBS parallel `pip download`s into WHEELS (pip
# fetches one file at a time and reads each package's index pages) while torch installs, then
# installed in one go. --no-compile: Python compiles the modules it imports on first use instead
# of pip compiling all ~19,000 files up front (~50 CPU-s, most never imported).
JOBS := 2
WHEELS := $(VENV)/.wheels
# `name==version` lines of a lock or of pip list, names normalised (PyYAML_x -> pyyaml-x).
PINS := awk -F'==' 'NF == 2 && !/^ *\#/ { n = tolower($$1); gsub(/[._]+/, "-", n); sub(/ .*/, "", $$2); print n "==" $$2 }'
TORCH_RE := ^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==

.PHONY: demo test lint lock bench-quality bench-speed bench-serve serve clean

$(STAMP): pyproject.toml $(LOCK)
	@if test -d $(VENV); then echo "[1/5] updating $(VENV) from $(LOCK)"; else echo "[1/5] creating $(VENV) ($$($(PY) --version))"; $(PY) -m venv $(VENV); fi
	@date +%s > $(VENV)/.install-started
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || echo "      warning: $(LOCK) is pinned for Python 3.11; with another Python use: $(BIN)/pip install -e '.[test,bench]'"
	@$(PIP) list --format=freeze | $(PINS) | sort > $(VENV)/.have; grep -E '^[a-z0-9]' $(LOCK) | $(PINS) | sort > $(VENV)/.want
	@echo "[2/5] $(T) $(TORCH_PINS) and their CUDA libraries (large, ~1 min, from local disk), while $$(comm -23 $(VENV)/.want $(VENV)/.have | grep -cvE '$(TORCH_RE)') other pins download ($(JOBS) at a time)"
	@rm -rf $(WHEELS); \
	( $(PIP) install --quiet --no-deps --no-compile $$(grep -E '$(TORCH_RE)' $(VENV)/.want) $(HUSH) ) & torch=$$!; \
	comm -23 $(VENV)/.want $(VENV)/.have | { grep -vE '$(TORCH_RE)' || true; } \
	  | xargs -r -P $(JOBS) -n 8 $(PIP) download --quiet --no-deps --dest $(WHEELS) $(HUSH); fetched=$$?; \
	wait $$torch && test $$fetched = 0
	@echo "[3/5] $(T) installing them (ray, pyarrow, open_clip, moto, ...)"
	@$(PIP) install --quiet --no-deps --no-compile --no-index --find-links $(WHEELS) -r $(LOCK) $(HUSH)
	@rm -rf $(WHEELS) $(VENV)/.have $(VENV)/.want
	@echo "[4/5] $(T) framesift itself (editable)"
	@$(PIP) install --quiet --no-deps --no-build-isolation -e . $(HUSH)
	@echo "[5/5] $(T) pip check"
	@$(PIP) check
	@echo "$(VENV) ready $(T)"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.curate samples/videos out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# Re-resolve the lock. uv reads pip's configured indexes, find-links and constraints (so it sees
# the same torch builds pip installs) and pins everything for CPython 3.11 on linux x86_64 with
# glibc 2.36 (Debian 12, as on these machines). Existing pins are kept where they still fit;
# `make lock UPGRADE=1` moves every pin to the newest release that fits.
lock:
	@test -x $(LOCKTOOL)/bin/uv || { $(PY) -m venv $(LOCKTOOL) && $(LOCKTOOL)/bin/pip install --quiet uv==$(UV_VERSION) $(HUSH); }
	@printf '%s\n' $(TORCH_PINS) 'setuptools>=77' > $(LOCKTOOL)/pins.txt
	@rm -f $(LOCKTOOL)/lock.new; test ! -f $(LOCK) || cp $(LOCK) $(LOCKTOOL)/lock.new  # its pins are uv's preferences
	@args=""; \
	while read -r key values; do \
	  for v in $$values; do \
	    case $$key in \
	      index-url) args="$$args --index-url $$v";; \
	      extra-index-url) args="$$args --extra-index-url $$v";; \
	      find-links) args="$$args --find-links $$v";; \
	      constraint) args="$$args --constraint $$v";; \
	    esac; \
	  done; \
	done <<< "$$($(PY) -m pip config list | sed -n "s/^[^.]*\.\(index-url\|extra-index-url\|find-links\|constraint\)='\(.*\)'$$/\1 \2/p" | sort -u)"; \
	echo "uv pip compile$$args"; \
	$(LOCKTOOL)/bin/uv pip compile pyproject.toml $(LOCKTOOL)/pins.txt --extra test --extra bench \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 --index-strategy unsafe-best-match \
	  --custom-compile-command 'make lock' --quiet $(if $(UPGRADE),--upgrade) $$args -o $(LOCKTOOL)/lock.new
	@if cmp -s $(LOCKTOOL)/lock.new $(LOCK); then echo "$(LOCK) unchanged"; else mv $(LOCKTOOL)/lock.new $(LOCK); echo "$(LOCK) written"; fi
	@echo "$(LOCK): $$(grep -cE '^[a-z0-9]' $(LOCK)) pins"

serve: $(STAMP)
	$(BIN)/python -m jobs.serve

bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.quality

bench-speed: $(STAMP)
	$(BIN)/python -m benchmarks.speed

bench-serve: $(STAMP)
	$(BIN)/python -m benchmarks.serve_load

clean:
	rm -rf out .pytest_cache
