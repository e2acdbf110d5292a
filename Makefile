# Conveniences; the README's commands are scripts/dev.sh run|test (no make needed).
.PHONY: run test bench clean
run:
	scripts/dev.sh run
test:
	scripts/dev.sh test
bench:
	scripts/dev.sh bench
clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
