# `make test` and `make demo` do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The UI tests drive Debian's Chromium with Playwright (pip); nothing downloads a browser.
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup bytecode test test-fast demo bench lint clean

setup: $(VENV)/.installed node_modules/.installed $(CHROMIUM) bytecode

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium ($(CHROMIUM)) for the UI tests"; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Where PYTHONDONTWRITEBYTECODE is set (as on CI's machines), no import writes the project's
# bytecode: every process (each `agentfleet run`, worker, Prefect CLI call that loads a
# flow) compiled its modules again, ~0.75 s of CPU. compileall writes it regardless, and
# only for what changed; a module edited since is compiled in memory, as before.
bytecode: $(VENV)/.installed
	$(PY) -m compileall -q agentfleet flows tasks blocks bench tests

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The suite waits mostly on processes (Prefect servers, agents, the scripted model), so a
# third worker on 2 cores shortens it; TEST_WORKERS=0 runs it in one process. worksteal:
# xdist's default hands each worker a fixed share up front, and one worker got every
# slow end-to-end test while the others sat idle.
TEST_WORKERS ?= 3
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

test-fast: setup
	$(PY) -m pytest tests/unit

demo: setup
	$(PY) -m agentfleet.demo

# agentfleet against plain baselines, measured in one run (issue 14): a table and
# bench/results.json. BENCH_ARGS=--smoke for a quick check, BENCH_ARGS="--only fanout".
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check agentfleet flows tasks blocks tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) node_modules .demo
