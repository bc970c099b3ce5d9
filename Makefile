# The two commands of the README:  make demo  |  make test
# Both create (or reuse) the virtual environment .venv/ and install ToothSeg into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toothseg-installed
DEPS   := ToothSegTraining/pyproject.toml ToothSegTraining/constraints.txt

.PHONY: demo test install bench clean

demo: $(STAMP)
	$(BIN)/toothseg demo --out-dir demo-output

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): $(DEPS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ToothSeg needs Python 3.11 or newer (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c ToothSegTraining/constraints.txt -e "ToothSegTraining[train,dev]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
