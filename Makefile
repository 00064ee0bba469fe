# Two commands on a fresh machine: `make demo` sets everything up and runs the demo,
# `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-fast lint docs bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev,hf,tensorboard]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/stepcli demo --out demo-output

lint: setup
	$(VENV)/bin/ruff check stepcli tests bench
	$(VENV)/bin/ruff format --check stepcli tests bench

test: lint
	$(VENV)/bin/pytest -q

# the inner loop: everything but the tests marked slow (several processes, kills, whole pipelines)
test-fast: lint
	$(VENV)/bin/pytest -q -m "not slow"

# the docs/ pages as a site: strict, so a broken link or anchor, or a page missing from the nav, fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: setup
	$(PY) bench/extract.py
	$(PY) bench/shuffle.py
	$(PY) bench/train.py --cache demo-output/cache
	$(PY) bench/read.py --cache demo-output/cache
	$(PY) bench/sweep.py --cache demo-output/cache

clean:
	rm -rf demo-output site .pytest_cache
