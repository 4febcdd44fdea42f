# EdgeLoop: `make demo` and `make test` do all set-up on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Four workers on two cores (the suite waits on services and processes a good part of the time); each test module
# on one of them, the modules using Label Studio and Prefect together (the scheduler is in tests/conftest.py).
# `make test XDIST=` runs the suite in one process.
XDIST ?= -n 4 --dist loadscope --no-loadscope-reorder
CODE := edgeloop edge_runtime hub models flows apps tests bench
# These machines set PYTHONDONTWRITEBYTECODE=1: every process would compile EdgeLoop (and pytest re-rewrite every test
# module) from source. The suite starts hundreds of processes (nodes, hubs, CLIs, xdist workers); cached bytecode
# saves about 0.35 s of each and 6 s of each worker's collection.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install deps label-studio real-data static check test demo bench chaos lint types imports clean repro

# The virtual environment is rebuilt only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: on these machines 2.13.0 is the CPU build on local disk (no download)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[cloud,video,dev]'
	touch $(STAMP)

install: $(STAMP)

# Label Studio, the labelling interface of the agile loop, lives in its own venv (its pins conflict with
# Prefect's); built once per version. flows/labelstudio.py runs $(LS_VENV)/bin/label-studio.
LS_PYTHON ?= python3.11
LS_VENV ?= .venv-ls
LABEL_STUDIO_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.installed-$(LABEL_STUDIO_VERSION)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(LS_PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	touch $(LS_STAMP)

label-studio: $(LS_STAMP)

# System services the tests start themselves (mosquitto; a GStreamer RTSP server run by the system python3,
# tests/kit/rtsp_server.py) and Chromium for the dashboard's browser test; installed from Debian when missing and root.
RTSP_PKGS := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly gstreamer1.0-rtsp
deps:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "mosquitto is not installed: install it (apt-get install mosquitto) for the broker tests"; fi; }
	@/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(RTSP_PKGS) >/dev/null; \
	  else echo "the GStreamer RTSP server is not installed: apt-get install $(RTSP_PKGS) for the video tests"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: apt-get install chromium for the dashboard's browser test"; fi; }

# Real data (fetched by package, never committed; edgeloop/devkit/realdata.py names each source): river's wheel
# from PyPI for its real sensor sets, into ~/.cache/edgeloop/real
real-data: install
	$(BIN)/python -m edgeloop.devkit.realdata

# Static checks: lint, the layers' import contracts ([tool.importlinter]), types ([tool.mypy]).
lint: install
	$(BIN)/ruff check $(CODE)

imports: install
	$(BIN)/lint-imports

types: install
	$(BIN)/mypy

static: lint imports types

# The inner loop (target: 2 minutes on 2 cores): static checks and the fast tests (not marked slow: hub tests on
# SQLite only), property tests with a quarter of their examples.
check: static deps
	EDGELOOP_EXAMPLES_SCALE=0.25 $(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

# The CI gate: the static checks of `make check` and the whole suite (its fast tests included); mypy runs beside
# the tests (it takes a minute cold, on one core, while the suite leaves part of the other idle).
test: lint imports deps label-studio real-data
	@$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & mypy=$$!; \
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS); tests=$$?; \
	wait $$mypy; types=$$?; cat $(VENV)/mypy.out; \
	test $$tests -eq 0 && test $$types -eq 0

demo: install deps label-studio
	$(BIN)/edgeloop demo

bench: install deps
	$(BIN)/python -m bench.run_all

# The reliability suite at full length: 40 random kills (broker, hub, node) with the exactly-once check,
# 2,000 fuzzed inputs per property, 30 s outages (10 s in make test), then a 10-minute soak at 5,000 records/s.
chaos: install deps
	EDGELOOP_CHAOS_FAULTS=40 EDGELOOP_CHAOS_RESULTS=1 EDGELOOP_FUZZ_EXAMPLES=2000 EDGELOOP_OUTAGE_S=30 \
	  $(BIN)/python -m pytest -s tests/e2e/test_chaos.py tests/edge/test_fuzz_inputs.py tests/e2e/test_uplink_outage.py \
	  tests/edge/test_outbox.py $(PYTEST_ARGS)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache var

# The training pipeline (dvc.yaml) with this venv's python on PATH.
repro: install
	mkdir -p data/labelled/pump_anomaly data/labelled/intrusion data/labelled/activity  # the loop's labels (may be empty)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
