# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One thread per process: two processes each using 2 threads on 2 cores slow down ~100x.
export OMP_NUM_THREADS ?= 1
export MUJOCO_GL ?= egl

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,vision,franka-sim,ur]'
	touch $(STAMP)

# The main job: train pick_cube (robot server, actor, learner over ZeroMQ; 6,000 env steps,
# ~3-7 min on 2 cores) in runs/demo, ending with the measured success rate.
demo: $(STAMP)
	$(VENV)/bin/robostack demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=40

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
