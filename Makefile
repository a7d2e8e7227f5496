# The two commands the README opens with: `make demo` and `make test`. Each sets up what is missing.
VENV    ?= .venv
PYTHON  ?= python3
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.genaug-installed

.PHONY: setup fashion-mnist demo test bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

fashion-mnist:
	@bash scripts/install_fashion_mnist.sh

# The stages as Ray tasks of one CPU each on a local cluster of every core: on 2 cores two one-thread
# classifier runs at once finish sooner than one run on two threads (small models scale poorly over threads).
demo: setup fashion-mnist
	$(BIN)/genaug augment-and-train --config demo-fashion --out demo-out --ray

# Two pytest workers of one thread each (a file's tests stay on one worker, so module fixtures are built once):
# on 2 cores that beats one process with two threads, since small models scale poorly over threads.
test: setup fashion-mnist
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or a missing page fails.
docs: setup
	$(BIN)/mkdocs build --strict

bench: setup fashion-mnist
	$(BIN)/python scripts/bench_data.py
	$(BIN)/python scripts/bench_fid.py
	$(BIN)/python scripts/bench_generators.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_executor.py
	$(BIN)/python scripts/bench_sample.py
	$(BIN)/python scripts/bench_classifier.py

clean:
	rm -rf demo-out bench-out runs site
