# The README's two commands: `make demo` and `make test`. Each creates .venv on
# a fresh machine (Python 3.11 + pip only) and installs everything first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.magic-installed

.PHONY: install demo test bench clean

install: $(STAMP)

# torch first and pinned: anything unpinned resolves to a multi-GB CUDA build.
# fairseq with --no-deps: its metadata pins torchaudio, which drags torch along.
# NVIDIA apex is never installed (the PyPI "apex" is an unrelated package).
$(STAMP): setup.py requirements.txt Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "need Python 3.11 or 3.12 (ve-fairseq wheels), got " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps ve-fairseq==0.12.3
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c 'import torch, fairseq, fairseq_magic; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) data checkpoints outputs
