# One entry point for people, the git hook and CI: `make check` is what must pass.
PY ?= .venv/bin/python
SRC = bot devtools flows agent llm mcp_clients approvals registry_cache fixtures interop

.PHONY: setup check lint imports format typecheck test lock bench demo interop interop-setup

# A virtual environment from the lock file (what CI does too).
setup:
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .

check: lint imports typecheck test

lint:
	$(PY) -m ruff format --check $(SRC) tests bench
	$(PY) -m ruff check $(SRC) tests bench

format:
	$(PY) -m ruff format $(SRC) tests bench
	$(PY) -m ruff check --fix $(SRC) tests bench

# The layering contracts in pyproject.toml ([tool.importlinter]).
imports:
	$(dir $(PY))lint-imports --no-cache

typecheck:
	$(PY) -m mypy

test:
	$(PY) -m pytest -q

# The real MCP peers (reference servers, the stdio bridge, the conformance suite, Node 22) pinned in
# interop/package-lock.json. tests/interop needs them; they are reinstalled only when the lock changes.
interop-setup: interop/node_modules/.package-lock.json

interop/node_modules/.package-lock.json: interop/package.json interop/package-lock.json
	cd interop && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# The MCP conformance suite's client scenarios against our client; fails only when a required one fails.
interop: interop-setup
	$(PY) -m interop.conformance

lock:
	$(PY) -m uv pip compile pyproject.toml --extra dev --extra demo --python-version 3.11 --universal -o requirements.lock

bench:
	$(PY) -m bench

demo:
	.venv/bin/chatops demo
