# The two commands a newcomer needs (see README.md):
#   make run   - sim evidence + real vectors, verified, verdict table
#   make test  - lint, type-check, the whole test-suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bootstrap lint typecheck pytest bench clean

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	$(BIN)/sealroom demo

lint: bootstrap
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: bootstrap
	$(BIN)/mypy

pytest: bootstrap
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: bootstrap
	$(BIN)/python bench/attest_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
