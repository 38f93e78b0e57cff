# Two commands on a fresh machine: `make test` and `make bench`.
# Both create .venv and install what they need; versions are pinned here,
# ranges live in pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision are pinned to the releases this machine has on disk
# (a CUDA build that also runs on the CPU); JAX to the release its backend is tested with.
PINS   := torch==2.14.1 torchvision==0.29.1 jax==0.10.2 jaxlib==0.10.2
STAMP  := $(VENV)/.installed

.PHONY: test test-fast test-long bench benchmark gpu-check gpu-wheels lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PINS) -e '.[torch,vision,cupy,jax,test,anchors,fast,sklearn,export,tensorboard]'
	touch $@

# The suite runs on WORKERS processes (pytest-xdist; WORKERS=0 runs it in this process), each with one BLAS
# and torch thread (tests/conftest.py). xdist's default --dist load: tests go out a few at a time, so a long
# test does not hold a queue behind it (--dist loadgroup is ignored on pytest 9.2, pytest-xdist issue 1386;
# loadfile would run the largest files on one worker). The Hypothesis profile is "ci" (tests/conftest.py's
# default) unless HYPOTHESIS_PROFILE names another.
WORKERS ?= 2
PYTEST  := $(PY) -m pytest -n $(WORKERS)

# The complete suite, which CI runs (.ci/run): every backend, every test.
test: $(STAMP)
	$(PYTEST)

# The edit loop: the CPU backends but JAX and the emulated CuPy, without the slow tier (tests/conftest.py's SLOW).
FAST_BACKENDS := numpy,numpy-immutable,torch,array-api-strict
test-fast: $(STAMP)
	SOFTGRAD_TEST_BACKENDS=$${SOFTGRAD_TEST_BACKENDS:-$(FAST_BACKENDS)} $(PYTEST) -m "not slow"

# The complete suite with the long Hypothesis profile: many more examples, random seeds.
test-long: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PYTEST)

# This machine pins OpenBLAS to AVX2 (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE); a user's machine does not:
# the benchmarks drop both, in their own command only (the header records the kernel threadpoolctl sees).
UNPIN  := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

bench: $(STAMP)
	$(UNPIN) $(PY) -m bench

# pytest-benchmark: ops and training steps per backend, timed, saved as JSON.
benchmark: $(STAMP)
	$(UNPIN) $(PY) -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-only \
		--benchmark-json=bench/results/pytest-benchmark-$$(date +%F-%H%M%S).json  # beside earlier runs, never over them

# On a CUDA machine: the suite with the GPU cases and compute-sanitizer, then the bench and its
# GPU targets (see .ci/gpu-check). `make gpu-check PART=tests` or `PART=bench` runs one half.
PART ?= all
gpu-check:
	bash .ci/gpu-check $(PART)

# Wheels (for CPython 3.12, no NumPy) that .ci/gpu-check installs on a device with no network.
# Only those the device's python lacks are installed there.
GPU_WHEELS := array-api-compat rich markdown-it-py mdurl pygments matplotlib contourpy cycler \
	fonttools kiwisolver pillow pyparsing python-dateutil six packaging threadpoolctl \
	pytest pluggy iniconfig hypothesis attrs sortedcontainers pytest-benchmark py-cpuinfo \
	array-api-strict
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux_2_28_x86_64 -d .gpu-wheels $(GPU_WHEELS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks .gpu-wheels .gpu-site
