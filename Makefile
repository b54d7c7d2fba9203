# pvcapid: the two commands are `make run` and `make test`; both install what they need.
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(CURDIR)/.pvc-data
PYTEST_ARGS ?=

.PHONY: install run test fuzz lint bench provision-debootstrap wheels install-service clean

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/pvcapid-embedded --data-dir $(DATA_DIR)

# Two pytest-xdist workers, each given whole test files (--dist loadfile: a file's module fixtures are
# made once): most of the suite waits on daemons, ZooKeeper and Ceph, so two files at a time halve its
# time on two cores. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: install
	$(PY) -m pytest tests -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Schemathesis over every operation of the OpenAPI document (tests/test_fuzz.py, which `make test` runs with a
# small budget): FUZZ_EXAMPLES fuzzing examples per operation plus the full coverage phase, a new seed each run
# (PVC_FUZZ_SEED=<n> replays one); the daemon's log and fuzz-report.txt are kept under FUZZ_DIR/daemon*/.
FUZZ_EXAMPLES ?= 75
FUZZ_DIR ?= /tmp/pvc-fuzz
fuzz: install
	PVC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PVC_FUZZ_COVERAGE=full PVC_FUZZ_SEED=$${PVC_FUZZ_SEED:-random} \
		$(PY) -m pytest tests/test_fuzz.py --basetemp=$(FUZZ_DIR) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check pvc_core plugins tests bench

bench: install
	$(PY) bench/bench_root.py

# The shipped debootstrap example end to end (needs a Debian mirror; minutes): bench/bench_provisioner.py
provision-debootstrap: install
	$(PY) bench/bench_provisioner.py --script debootstrap --size 4

# The wheels of pvc-core and every plugin, in dist/ (README "Installing as a service").
wheels: install
	bash scripts/build-wheels.sh dist

# pvcapid as a systemd service in /opt/pvcapid (as root; SERVICE_ARGS="--plugins node,vm ..." passes options).
install-service:
	bash scripts/install-service.sh $(SERVICE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache dist
