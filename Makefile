# Two commands from a fresh machine (Python 3.11): `make demo` and `make test`.
# Both create or update the environment at .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-fast lint pack clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dnw demo $(DEMO_ARGS)

# pytest-xdist: TEST_WORKERS processes of one compute thread each (TEST_WORKERS=0 runs in-process)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# the same without the end-to-end checks marked slow (they still run in make test and CI)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# Rebuild the shipped pretrained pack from nothing (small preset; 1-2 hours on 2 cores):
# base (~9 min), weight dataset of every single-edit training concept (191: 25 min on the machine
# that built the shipped pack, about 75 min on another of the same kind, 2026-12-02),
# generator (~27 min), then the pack with its provenance, copied over the shipped one in the
# source tree (PACK_DEST; dnw pack itself never writes inside the package).
PACK_WORK ?= runs/pack
PACK_DEST ?= src/denoised_weights/pretrained/small
FIT_STEPS ?= 7500
pack: $(STAMP)
	DNW_PLUGINS= $(BIN)/dnw base --preset small --out $(PACK_WORK)/base
	DNW_PLUGINS= $(BIN)/dnw collect --base $(PACK_WORK)/base --out $(PACK_WORK)/dataset --preset small \
		--max-parts 1 --checkpoints 3 --max-steps 80 --eval-every 20 --interval 10 --workers 2
	DNW_PLUGINS= $(BIN)/dnw fit --data $(PACK_WORK)/dataset --out $(PACK_WORK)/generator --max-steps $(FIT_STEPS) \
		--prediction sample
	DNW_PLUGINS= $(BIN)/dnw pack --base $(PACK_WORK)/base --generator $(PACK_WORK)/generator \
		--data $(PACK_WORK)/dataset --out $(PACK_WORK)/pack
	rm -rf $(PACK_DEST).new && mkdir -p $(PACK_DEST).new
	cp -R $(PACK_WORK)/pack/base $(PACK_WORK)/pack/generator $(PACK_WORK)/pack/provenance.json $(PACK_DEST).new/
	rm -rf $(PACK_DEST) && mv $(PACK_DEST).new $(PACK_DEST)

lint: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/lint-imports

clean-env:
	rm -rf $(VENV)
