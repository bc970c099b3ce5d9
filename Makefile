# The two commands of the README:  make demo  |  make test
# Both create (or reuse) the virtual environment .venv/ and install ToothSeg into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toothseg-installed
DEPS   := ToothSegTraining/pyproject.toml ToothSegTraining/constraints.txt

.PHONY: demo test install bench clean nnunet-fixtures rail-fixtures rtk-env

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

# Developers only (never CI): remake Testing/data/nnunet_reference with nnU-Net itself, in its own
# environment, torch held at ToothSeg's version (unpinned, pip would fetch the newest CUDA build, some
# GB). torchvision's PyPI build does not load on a CPU-only torch, and nnU-Net's inference and
# the trainers used here do not need it, so a broken one is removed.
NNUNET_VENV := .venv-nnunet
nnunet-fixtures:
	@test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c ToothSegTraining/constraints.txt "nnunetv2==2.8.1"
	@$(NNUNET_VENV)/bin/python -c "import torchvision" 2>/dev/null || $(NNUNET_VENV)/bin/python -m pip uninstall -y -q torchvision
	$(NNUNET_VENV)/bin/python Testing/benchmarks/make_nnunet_fixtures.py --out Testing/data/nnunet_reference --overwrite

# RAIL's fixtures need a checkout of its code (never committed): make rail-fixtures RAIL=/path/to/RAIL
rail-fixtures:
	@test -n "$(RAIL)" || (echo "usage: make rail-fixtures RAIL=/path/to/a/RAIL/checkout" && exit 2)
	@test -x $(NNUNET_VENV)/bin/python || $(MAKE) nnunet-fixtures
	$(NNUNET_VENV)/bin/python Testing/benchmarks/make_rail_fixtures.py --rail "$(RAIL)" --out Testing/data/rail_reference --overwrite

# Developers only (never CI: about 1.9 GB): RTK, the Reconstruction Toolkit, for the physically simulated
# cone-beam family of the 3D benchmarks (Testing/benchmarks/rtk_cbct.py); its tests run when it exists.
RTK_VENV := .venv-rtk
rtk-env:
	@test -x $(RTK_VENV)/bin/python || $(PYTHON) -m venv $(RTK_VENV)
	$(RTK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "itk-rtk==2.7.0.post1" "itk==5.4.7" numpy scipy

clean:
	rm -rf $(VENV) demo-output .pytest_cache
