# livechat: `make dev` runs the whole system embedded, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := libs/contracts libs/devstack services/memory services/usage services/inference services/gateway
PYPROJECTS := pyproject.toml requirements-dev.txt $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: dev test bench lint asyncapi token clean install

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

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench
	$(BIN)/mypy libs/contracts/src libs/devstack/src services/*/src

asyncapi: $(STAMP)
	$(BIN)/python -m devstack.asyncapi docs/asyncapi.yaml

clean:
	rm -rf $(VENV) .livechat
