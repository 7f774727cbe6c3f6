# Two commands on a fresh machine:  make demo  |  make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-quality bench-speed bench-serve serve clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU/CUDA torch pinned to the builds this project is tested with (see README)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.curate samples/videos out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

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
