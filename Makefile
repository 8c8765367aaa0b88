# Tessera: `make run` starts the service on a fresh machine, `make test` runs every test.
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
HOST    ?= 127.0.0.1
PORT    ?= 8000
# The issuer (and the base URL printed in the first-run examples) follows the port.
export TESSERA_ISSUER ?= http://localhost:$(PORT)

.PHONY: run test lint bench install clean

$(BIN)/tessera: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/tessera

# A person at a terminal reads lines, not JSON.
run: export TESSERA_LOG_FORMAT ?= text
run: $(BIN)/tessera
	$(BIN)/tessera migrate
	$(BIN)/tessera bootstrap --plan "First plan" --admin-email admin@example.com --if-empty --howto
	$(BIN)/tessera serve --host $(HOST) --port $(PORT)

test: $(BIN)/tessera
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/tessera
	$(BIN)/ruff check app tests migrations bench

bench: $(BIN)/tessera
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tessera.db tessera.db-* test-artifacts .pytest_cache
