# Tessera: `make run` starts the service on a fresh machine, `make test` runs every test.
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
HOST    ?= 127.0.0.1
PORT    ?= 8000
# The issuer (and the base URL printed in the first-run examples) follows the port.
export TESSERA_ISSUER ?= http://localhost:$(PORT)

.PHONY: run test lint bench install clean lock

$(BIN)/tessera: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements.lock -e .
	@touch $@

# The tests' and the benchmark's own (Playwright, Schemathesis, ...), only when asked for.
$(VENV)/.test-deps: $(BIN)/tessera
	$(BIN)/pip install --quiet --constraint requirements.lock -e '.[test]'
	@touch $@

install: $(BIN)/tessera

# A person at a terminal reads lines, not JSON.
run: export TESSERA_LOG_FORMAT ?= text
run: $(BIN)/tessera
	$(BIN)/tessera migrate
	$(BIN)/tessera bootstrap --plan "First plan" --admin-email admin@example.com --if-empty --howto
	$(BIN)/tessera serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check app tests migrations bench

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The versions the image installs (requirements.lock), from a fresh environment with only what
# serving needs.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet .
	{ sed -n '1,2p' requirements.lock; .lock-venv/bin/pip freeze --exclude tessera; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

clean:
	rm -rf $(VENV) tessera.db tessera.db-* test-artifacts .pytest_cache
