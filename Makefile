# GCL: every target is a thin delegate. `make run` and `make test` install what they need on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat api/pyproject.toml sdk-python/pyproject.toml requirements-dev.txt 2>/dev/null | sha1sum | cut -c1-12)
PY_DIRS := api tests $(wildcard sdk-python) examples
HAS_PROVIDER := $(wildcard terraform-provider/GNUmakefile)
# Prefect's real SDK and CLI (pinned) for the compatibility suite, in a virtualenv of their own.
PREFECT_VENV ?= .venv-prefect
PREFECT_STAMP := $(PREFECT_VENV)/.installed-$(shell sha1sum tests/prefect/requirements.txt | cut -c1-12)
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
PGBOUNCER := $(firstword $(wildcard /usr/sbin/pgbouncer))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Deploy checks (tests/ops): pinned builds from the Go module proxy, kept per version in .tools/bin.
TOOLS_BIN := .tools/bin
HELM_VERSION := v3.22.0
KUBECONFORM_VERSION := v0.8.0
HELM := $(TOOLS_BIN)/helm-$(HELM_VERSION)
KUBECONFORM := $(TOOLS_BIN)/kubeconform-$(KUBECONFORM_VERSION)
K8S_SCHEMAS := .tools/k8s-schemas/.written

.PHONY: run install postgres chromium ops-tools test lint fmt openapi openapi-check test-py test-pg test-go test-prefect test-side provider e2e bench clean

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -e api $(if $(wildcard sdk-python/pyproject.toml),-e sdk-python)
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

$(PREFECT_STAMP): tests/prefect/requirements.txt
	@test -x $(PREFECT_VENV)/bin/python || $(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q --upgrade pip
	$(PREFECT_VENV)/bin/python -m pip install -q -r tests/prefect/requirements.txt
	@rm -f $(PREFECT_VENV)/.installed-* && touch $@

## PostgreSQL server binaries (with pg_stat_statements) and PgBouncer for the tests and the bench (tests/pg.py runs
## a throwaway cluster and pooler from them; neither is started as a service); Debian/Ubuntu.
postgres:
	@test -n "$(PG_INITDB)" -a -n "$(PGBOUNCER)" || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql pgbouncer; }

## Headless Chromium and its WebDriver from Debian's packages for the browser tests (tests/ui); Debian/Ubuntu.
chromium:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

## helm + kubeconform (go install, pinned) and standalone Kubernetes schemas from the kubernetes-validate wheel.
ops-tools: $(HELM) $(KUBECONFORM) $(K8S_SCHEMAS)

$(HELM):
	mkdir -p $(TOOLS_BIN) && rm -f $(TOOLS_BIN)/helm
	GOBIN=$(abspath $(TOOLS_BIN)) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv -f $(TOOLS_BIN)/helm $@ && ln -s helm-$(HELM_VERSION) $(TOOLS_BIN)/helm

$(KUBECONFORM):
	mkdir -p $(TOOLS_BIN) && rm -f $(TOOLS_BIN)/kubeconform
	GOBIN=$(abspath $(TOOLS_BIN)) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	mv -f $(TOOLS_BIN)/kubeconform $@ && ln -s kubeconform-$(KUBECONFORM_VERSION) $(TOOLS_BIN)/kubeconform

$(K8S_SCHEMAS): $(STAMP) tests/ops/k8s_schemas.py
	$(BIN)/python -m tests.ops.k8s_schemas .tools/k8s-schemas && touch $@

## Start the control plane on 127.0.0.1:4280 (SQLite file under ./data; see README for GCL_* overrides).
run: $(STAMP)
	$(BIN)/gcl-server migrate
	exec $(BIN)/gunicorn -c api/gunicorn.conf.py

## Lint, check generated artefacts, run every test suite that exists.
test: $(STAMP) lint openapi-check $(if $(HAS_PROVIDER),provider) test-py test-pg test-side

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy --strict sdk-python/src
	$(BIN)/lint-imports --config pyproject.toml

fmt: $(STAMP)
	$(BIN)/ruff check --fix $(PY_DIRS)
	$(BIN)/ruff format $(PY_DIRS)

openapi: $(STAMP)
	$(BIN)/gcl-server openapi --output api/openapi.json

openapi-check: $(STAMP)
	$(BIN)/gcl-server openapi --check api/openapi.json

test-py: $(STAMP) postgres chromium ops-tools
	$(BIN)/pytest --ignore=tests/prefect $(PYTEST_ARGS)

## The API and engine suites (and the Prefect wire contract) again, on a throwaway PostgreSQL (started and stopped by the tests).
test-pg: $(STAMP) postgres
	GCL_TEST_DATABASE=postgresql $(BIN)/pytest tests/api tests/prefect/test_wire.py tests/prefect/test_terraform_replay.py $(PYTEST_ARGS)

test-go: $(STAMP)
	$(MAKE) -C terraform-provider test

## Prefect's own SDK and CLI (real package, pinned) against a real server; budget: 120 s a test (pytest-timeout).
test-prefect: $(STAMP) $(PREFECT_STAMP)
	GCL_PREFECT_VENV=$(PREFECT_VENV) $(BIN)/pytest tests/prefect $(PYTEST_ARGS)

## Suites that share nothing (own servers on free ports, own tools) run side by side: `make test` waits for both.
test-side: $(STAMP) $(PREFECT_STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-prefect $(if $(HAS_PROVIDER),test-go)

## Build the Terraform provider into the local filesystem mirror (and the offline terraform CLI).
provider: $(STAMP)
	$(MAKE) -C terraform-provider install

e2e: $(STAMP) provider
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

bench: $(STAMP) postgres
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(PREFECT_VENV) .tools data
