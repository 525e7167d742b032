# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# A local Prefect server for `make server` / `serve` / `deploy` / `worker`.
PREFECT_PORT ?= 4200
LOCAL_API    := http://127.0.0.1:$(PREFECT_PORT)/api
POOL         ?= s3-pipelines

.PHONY: install demo test test-slow lint typecheck bench clean browser-deps server serve deploy worker

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The flows report to the local Prefect server `prefect-s3` uses (started on first use, ~15 s
# the first time; `prefect-s3 server stop` stops it). DEMO_ARGS: e.g. --files 20 --objects 8.
DEMO_ARGS ?=
demo: install
	$(BIN)/python flows/demo.py $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .

# mypy cannot follow setuptools' editable import hook, so it checks a tree of symlinks that
# lays the folders out as the installed package (flows/ -> prefect_s3_concurrency/flows).
TYPECHECK := $(VENV)/typecheck/prefect_s3_concurrency
typecheck: install
	@rm -rf $(VENV)/typecheck && mkdir -p $(TYPECHECK)
	@for f in src/prefect_s3_concurrency/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/; done
	@for d in flows tasks deployments; do ln -s "$(CURDIR)/$$d" $(TYPECHECK)/$$d; done
	$(BIN)/mypy -p prefect_s3_concurrency

# Two pytest workers: most tests wait on servers and subprocesses, so two share the 2 cores
# well; --dist loadfile keeps a module's tests (and its module-scoped servers) on one worker.
PYTEST_WORKERS ?= 2
test: install browser-deps lint typecheck
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# Scale runs that take minutes (100k objects): outside CI. (Throttling, back-off and the
# request budget's SIGKILL lease test run in `make test`.)
test-slow: install
	$(BIN)/python -m pytest -m slow -s tests/integration/test_scale.py

bench: install
	$(BIN)/python -m benchmarks

# The browser test needs Debian's chromium (never `playwright install`). Install it when it is
# missing and we are root; if that fails, the test skips and says why.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian chromium for the browser test (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "warning: could not install chromium: the browser test will be skipped"; \
	else echo "note: /usr/bin/chromium is missing and we are not root: the browser test will be skipped"; fi

# Prefect server on 127.0.0.1:$(PREFECT_PORT), SQLite in $(PREFECT_HOME). The UI reads its API
# address from PREFECT_UI_API_URL / PREFECT_API_URL, not from --port, so set both.
server: install
	PREFECT_API_URL=$(LOCAL_API) PREFECT_UI_API_URL=$(LOCAL_API) \
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PREFECT_PORT) \
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Serve every deployment of prefect.yaml from this process (no work pool needed).
serve: install
	PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect-s3 serve

# Register prefect.yaml's deployments on the $(POOL) process work pool, then run `make worker`.
# The pool's base job template lets no run set `env` or `command` (PREFECT_S3_DASK_ADDRESSES and
# the command stay the worker's); an existing pool gets it too.
POOL_TEMPLATE := deployments/process-pool-template.json
deploy: install
	if PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1; \
	then PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect work-pool update $(POOL) \
	  --base-job-template $(POOL_TEMPLATE); \
	else PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect work-pool create $(POOL) --type process \
	  --base-job-template $(POOL_TEMPLATE); fi
	cd $(CURDIR) && PWD=$(CURDIR) PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect deploy --all --no-prompt

worker: install
	PREFECT_API_URL=$(LOCAL_API) $(BIN)/prefect worker start --pool $(POOL) --type process

clean:
	rm -rf $(VENV) .prefect .pytest_cache .ruff_cache benchmarks/results tests/artifacts
