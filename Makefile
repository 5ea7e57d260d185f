# The two commands: `make run` (the whole system on one machine) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck bench clean lock test-system-packages bench-system-packages

# requirements-dev.lock: everything, tests and tools included (this venv, CI);
# requirements.lock: what the services run on (the Docker image), the same versions.
# Regenerate both after changing pyproject.toml: `make lock`.
$(BIN)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(BIN)/.installed
	$(BIN)/lookout run

lint: $(BIN)/.installed
	$(BIN)/ruff check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Debian packages first, so a missing one stops the run at once (installed when apt-get can).
test-system-packages:
	sh tools/system-packages.sh /usr/bin/chromium:chromium docker-compose:docker-compose

bench-system-packages:
	sh tools/system-packages.sh wrk:wrk

test: test-system-packages lint typecheck
	$(BIN)/pytest

bench: bench-system-packages $(BIN)/.installed
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

lock: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11 -q
	$(BIN)/uv pip compile pyproject.toml -c requirements-dev.lock -o requirements.lock --python-version 3.11 -q
