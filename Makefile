# livechat: `make dev` runs the whole system embedded, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := libs/contracts libs/runtime libs/devstack services/memory services/usage services/inference services/gateway
PYPROJECTS := pyproject.toml requirements-dev.txt $(addsuffix /pyproject.toml,$(PACKAGES))
# The npm `ai` package, for the AI SDK tests (tests/gateway/test_gateway_aisdk.py).
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-stamp

.PHONY: dev test test-fast bench chaos lint asyncapi token clean install chromium

install: $(STAMP)

# Reinstall only when a pyproject or the dev requirements change.
$(STAMP): $(PYPROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "livechat needs Python 3.11 or newer: make PYTHON=python3.11 ..." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) \
		|| { echo "'$(PYTHON) -m venv' failed: install your system's venv package (python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(addprefix -e ,$(PACKAGES)) -r requirements-dev.txt
	touch $@

dev: $(STAMP)
	$(BIN)/python -m devstack

# The suite in two processes (whole files to each: a module's running system is started
# once), then, for the whole suite only, two minutes of `make chaos` on their own.
PYTEST_WORKERS ?= -n 2 --dist loadfile
CHAOS_TEST := tests/bench/test_chaos.py
test: $(STAMP) $(NODE_STAMP) chromium
	$(BIN)/python -m pytest $(PYTEST_WORKERS) --ignore=$(CHAOS_TEST) $(PYTEST_ARGS)
	@if [ -z "$(PYTEST_ARGS)" ]; then $(BIN)/python -m pytest $(CHAOS_TEST); fi

# The fast lane: every test that needs no nats-server (handler logic, models, stores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not nats" $(PYTEST_ARGS)

# Reinstall only when the lockfile changes (npm ci: exactly the locked versions).
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 \
		|| { echo "the tests need Node.js 18+ and npm (for $(NODE_DIR)): install nodejs and npm" >&2; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's chromium for the browser tests (tests/browser, Playwright drives it):
# installed with apt when missing and we are root, so those tests never skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "the browser tests need Debian's chromium: apt-get install -y chromium (as root)" >&2; exit 1; \
		fi; }

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench
	$(BIN)/mypy libs/contracts/src libs/runtime/src libs/devstack/src services/*/src

asyncapi: $(STAMP)
	$(BIN)/python -m devstack.asyncapi docs/asyncapi.yaml

# A development token for USER (default: your login name), signed with LIVECHAT_JWT_SECRET.
token: $(STAMP)
	@$(BIN)/python -m gateway.access.issue_jwt "$(USER)"

clean:
	rm -rf $(VENV) .livechat

# The system under fire: a 3-node NATS cluster, 2 workers, 60 conversations, kill -9 of
# every kind of process and provider faults for CHAOS_SECONDS (default 600), then the audit.
CHAOS_SECONDS ?= 600
chaos: $(STAMP)
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/python -m bench.chaos $(CHAOS_ARGS)
