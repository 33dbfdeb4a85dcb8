# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: run dev test install install-dev sandbox browser migrate static lint format bench clean

run: install sandbox migrate static ## install, migrate and serve on HOST:PORT (default 0.0.0.0:3000)
	$(PY) manage.py serve

dev: install sandbox migrate ## the autoreloading development server
	DEBUG=$${DEBUG:-true} $(PY) manage.py runserver $${HOST:-0.0.0.0}:$${PORT:-3000}

test: install-dev sandbox browser ## install what tests need and run them all, with coverage
	$(BIN)/pytest

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The execution sandbox needs bubblewrap; install it where we can, else say what to do.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing bubblewrap for the execution sandbox"; \
	    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) || \
	    echo "WARNING: could not install bubblewrap; code execution will answer 'unavailable'."; \
	  else \
	    echo "WARNING: bubblewrap (bwrap) is missing: install it (Debian/Ubuntu: sudo apt-get install bubblewrap)"; \
	    echo "         until then code execution answers 'unavailable'."; \
	  fi; }

# The replay page's browser test drives Debian's Chromium (Playwright never downloads a
# browser here); install it where we can, else say what to do.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium for the replay page's browser test"; \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
	    echo "WARNING: could not install chromium; the replay page's browser test will be skipped."; \
	  else \
	    echo "WARNING: chromium is missing: install it (Debian/Ubuntu: sudo apt-get install chromium)"; \
	    echo "         until then the replay page's browser test is skipped."; \
	  fi; }

migrate: install
	$(PY) manage.py migrate --noinput

static: install
	$(PY) manage.py collectstatic --noinput --verbosity 0

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev sandbox
	$(PY) bench/bench_execution.py
	$(PY) bench/bench_collaboration.py
	$(PY) bench/bench_rest.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .coverage htmlcov
