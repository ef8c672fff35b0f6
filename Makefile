# vlm — the README's commands. Everything here installs what it needs (as root on Debian 12)
# and is quick when it is already there.
#   make demo      build release and run the main job on the default model
#   make test      install test dependencies, generate fixtures, build, run every test
#   make bench     benchmarks (release build), see BENCHMARKS.md
#   make fixtures  regenerate the PyTorch reference fixtures (scripts/export_fixtures.py)

SHELL := /bin/bash
SWIFT ?= swift
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libopenblas-dev liblapacke-dev pkg-config
GENERATED := Tests/Fixtures/generated
VLM := .build/release/vlm

.PHONY: all setup build test demo bench fixtures fixtures-small venv clean

all: build

# MARK: - System packages (Debian's -dev packages for the C shims)
setup:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or: sudo apt-get install$$missing)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: setup
	$(SWIFT) build -c release

# MARK: - Python reference side (a local venv; never the system's site-packages)
$(VENV)/.stamp: scripts/requirements.txt
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; \
	  else echo "python3-venv is missing"; exit 1; fi; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r scripts/requirements.txt
	touch $@

venv: $(VENV)/.stamp

$(GENERATED)/resnet50/model.safetensors: scripts/export_fixtures.py $(VENV)/.stamp
	$(PY) scripts/export_fixtures.py full

fixtures: $(GENERATED)/resnet50/model.safetensors

# The committed small fixtures; rerun after changing the export script.
fixtures-small: $(VENV)/.stamp
	$(PY) scripts/export_fixtures.py small

# MARK: - Tests (release build: the naive backend runs full-size models)
test: setup fixtures
	$(SWIFT) build -c release --build-tests
	$(SWIFT) test -c release --skip-build --disable-swift-testing

# MARK: - Demo and benchmarks
demo: build
	@echo "== ResNet-50, blas vs naive (seeded synthetic weights; no real weights are needed)"
	$(VLM) bench resnet50 --batch 1 --backend both --min-time 2
	@echo "== embed-image on a small preprocessed batch, synthetic ResNet-50 (first values of each row)"
	$(VLM) embed-image --model synthetic:resnet50 --input-npy Tests/Fixtures/resnet/bottleneck_f32/input.npy --format tsv \
	  | cut -c1-110

bench: build
	$(VLM) bench resnet50 --batch 1 --backend both
	$(VLM) bench resnet50 --batch 8 --backend both

clean:
	rm -rf .build $(GENERATED)
