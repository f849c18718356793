# Quick start: `make quickstart` (set up + a short LSTM run on the real IMDB data), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: setup data quickstart test bench grid-logs
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	touch $@

data: $(DATA)/imdb.pkl $(DATA)/Nottingham/.ready

$(DATA)/imdb.pkl: | $(VENV)/.installed
	$(PY) data/prepare_imdb.py --data-dir $(DATA)

$(DATA)/Nottingham/.ready: | $(VENV)/.installed
	$(PY) data/prepare_nottingham.py --data-dir $(DATA)
	touch $@

quickstart: setup $(DATA)/imdb.pkl
	$(PY) lstm/train.py --max-epochs 1 --data-dir $(DATA)

test: setup data
	$(PY) -m pytest -q tests

# Stage a replication grid's small files for a commit: the manifest, each run's spec, per-epoch log and
# `done`, each FIM's record and P, and the finished shards of a FIM still being mined (its per-sample
# results); never checkpoints or data. A clone then resumes the grid at run granularity (finished runs
# skipped, FIM not mined again) and an unfinished FIM at shard granularity; the shards a finished FIM
# deleted are staged as deleted. `make grid-logs GRID=runs/paper_scale/fig6`
grid-logs:
	@test -f "$(GRID)/grid.json" || { echo "error: GRID=$(GRID) is not a grid folder (no grid.json) — e.g. make grid-logs GRID=runs/paper_scale/fig6"; exit 1; }
	git add -f $(GRID)/grid.json $$(find $(GRID) \( -name spec.json -o -name log.jsonl -o -name done -o -name fim.json -o -name p.npz \) -print) \
		$$(find $(GRID) -path '*.parts/*' \( -name run_key -o -name 'shard-*.pkl' \) -print)
	git add -u $(GRID)
