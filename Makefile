# onboards: `make run` serves the API with demo data; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck spec-check spec-lint unit clean docs walkthrough fuzz contract browser nginx dist clients

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The demo in sandbox mode (sandbox.yaml) on a database of its own; the token is printed at start.
run: install
	DATABASE_URL=$${DATABASE_URL:-sqlite:///data/sandbox.db} $(BIN)/onboards serve --demo --sandbox

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

spec-check: install
	$(BIN)/openapi-spec-validator openapi.yaml sandbox.yaml

# The browser tests need chromium (make browser) and axe-core (node_modules); the proxy tests nginx (make nginx);
# the instruction counter's test valgrind (make valgrind).
# The test modules spread over PYTEST_WORKERS processes (pytest-xdist; a module's tests stay together, with
# its fixtures); most tests wait on servers and sockets more than on the CPU. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 4
unit: install browser nginx valgrind node_modules/.package-lock.json
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck spec-check spec-lint unit

# The spec's lint, both at 0 errors and 0 warnings: Redocly's recommended rules (strict: a warning fails) and
# Spectral's spectral:oas (.spectral.yaml); package.json pins both.
spec-lint: node_modules/.package-lock.json
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true npx --no-install redocly lint --extends=recommended-strict openapi.yaml sandbox.yaml
	npx --no-install spectral lint --fail-severity=warn openapi.yaml sandbox.yaml

# The API reference, one self-contained HTML file (Redocly's renderer inlined, its CDN logo made inline by
# tools/offline_docs.py: it works offline).
docs: node_modules/.package-lock.json install
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true npx --no-install redocly build-docs openapi.yaml --output docs/index.html --inlineBundle
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true npx --no-install redocly build-docs sandbox.yaml --output docs/sandbox.html --inlineBundle
	$(BIN)/python tools/offline_docs.py docs/index.html docs/sandbox.html

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

walkthrough: install
	$(BIN)/onboards walkthrough

# Clients from a live server's /openapi.json by five generators, compiled or imported, and a workflow through
# the Python ones (tools/clients.py). openapi-generator needs Java: installed with apt-get when missing.
clients: install node_modules/.package-lock.json
	$(call apt_tool,java,default-jre-headless)
	$(BIN)/python -m tools.clients

# A wheel and an sdist in dist/: the wheel carries openapi.yaml, sandbox.yaml and docs/ (setup.py).
dist: install
	rm -rf dist build
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) data dist build node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmark (bench/README.md): up to four apps side by side, each its own server process, on SQLite then
# PostgreSQL. BENCH_APPS=service,floor,stock,fastapi picks them; BENCH_QUICK=1 for a short run; the other
# BENCH_* settings in bench/run.py. bench-hostile: the hostile row alone (bench/hostile.py), the server CPU
# per worst-shaped megabyte against its bound. bench-profile: where each app's CPU goes per request (py-spy).
.PHONY: bench bench-hostile bench-instructions bench-layers bench-profile bench-wrk valgrind

# $(call apt_tool,command[,package]): the command installed with apt-get when missing, from Debian's package of
# that name (or `package`).
define apt_tool
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "make: $(1) is missing; installing $(or $(2),$(1)) with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(or $(2),$(1)); } >/dev/null \
	  || { echo "make: could not install $(1); install it (Debian/Ubuntu: apt-get install $(or $(2),$(1))) and retry" >&2; exit 1; }; }
endef

bench-wrk:
	$(call apt_tool,wrk)

# Debian's chromium, which tests/test_browser.py drives through Playwright (never `playwright install`).
browser:
	$(call apt_tool,chromium)

# Debian's valgrind: callgrind counts the instructions of a request (make bench-instructions).
valgrind:
	$(call apt_tool,valgrind)

# Debian's nginx, which tests/test_nginx.py puts in front of a server as docs/deploying.md tells operators to.
nginx:
	$(call apt_tool,nginx)

bench: install bench-wrk
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.hostile

bench-hostile: install
	$(BIN)/python -m bench.hostile

# Instructions per request of each app, counted by callgrind (bench/instructions.py): steady where CPU seconds swing.
bench-instructions: install valgrind
	$(BIN)/python -m bench.instructions

# Each operation's database work alone, the service's models against the floor's SQL, in one process (bench/layers.py).
bench-layers: install
	$(BIN)/python -m bench.layers

# The benchmark's smoke run on another Python, in a virtualenv of its own (.venv-3.13): the service and the floor,
# SQLite, every operation at c=16 for a second. `make bench-smoke` uses Python 3.13 (SMOKE_PYTHON: any other).
SMOKE_PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3; do \
  $$p -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
SMOKE_VENV = .venv-$(shell $(SMOKE_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
.PHONY: bench-smoke

bench-smoke: bench-wrk
	@[ -n "$(SMOKE_PYTHON)" ] || { echo "bench-smoke: no Python 3.13 found; set SMOKE_PYTHON" >&2; exit 1; }
	$(MAKE) install PYTHON=$(SMOKE_PYTHON) VENV=$(SMOKE_VENV)
	BENCH_QUICK=1 BENCH_APPS=service,floor BENCH_DATABASES=sqlite BENCH_CONCURRENCY=16 BENCH_DURATION=1 \
	  BENCH_WARMUP=0.5 $(SMOKE_VENV)/bin/python -m bench.run

bench-profile: install bench-wrk
	@[ -x $(BIN)/py-spy ] || $(BIN)/pip install --quiet --disable-pip-version-check py-spy==0.4.3
	$(BIN)/python -m bench.profile

# Conformance fuzzing (README, "Fuzzing and contract tests"): the `schemathesis run` CLI with every check and
# phase, schemathesis.toml, two accounts as peers. `make fuzz`: this project on SQLite, then PostgreSQL.
# `make contract BASE_URL=… API_KEY=…`: any running deployment of openapi.yaml. Both print a one-line
# verdict and write JUnit reports to reports/fuzz/; FUZZ_SEED, FUZZ_MAX_EXAMPLES, FUZZ_MAX_TIME tune the budget.
fuzz: install
	$(BIN)/python -m fuzz.run local

# Command-line variables reach the driver through the environment, so the API keys stay out of the echoed command.
contract: install
	@[ -n "$$BASE_URL" ] && [ -n "$$API_KEY" ] || { echo "usage: make contract BASE_URL=http://host:port API_KEY=key [API_EMAIL=e-mail PEER_API_KEY=key PEER_EMAIL=e-mail]" >&2; exit 2; }
	$(BIN)/python -m fuzz.run contract
