# pvcapid: the two commands are `make run` and `make test`; both install what they need.
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(CURDIR)/.pvc-data
PYTEST_ARGS ?=

.PHONY: install run test lint bench provision-debootstrap clean

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/pvcapid-embedded --data-dir $(DATA_DIR)

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check pvc_core plugins tests bench

bench: install
	$(PY) bench/bench_root.py

# The shipped debootstrap example end to end (needs a Debian mirror; minutes): bench/bench_provisioner.py
provision-debootstrap: install
	$(PY) bench/bench_provisioner.py --script debootstrap --size 4

clean:
	rm -rf $(VENV) .pytest_cache
