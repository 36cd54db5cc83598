# Two commands set everything up on a fresh Debian machine:
#   make demo   the agent scaling a real local php-fpm pool under load
#   make test   the whole test suite, with type and lint checks
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: deps venv demo test lint bench clean

deps:
	bash .ci/install-deps

$(BIN)/phpfpm-autoscaler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -r tests/deploy/requirements.txt
	touch $@

venv: $(BIN)/phpfpm-autoscaler

demo: deps venv
	$(BIN)/python -m bench.demo

lint: venv
	$(BIN)/python -m mypy
	$(BIN)/ruff check autoscaler tests bench

test: deps venv lint
	$(BIN)/python -m pytest -q -ra

bench: deps venv
	$(BIN)/python -m bench.agent_bench
	$(BIN)/python bench/parse_bench.py
	$(BIN)/python -m bench.simulate_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
