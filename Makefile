# Quick start: `make quickstart` (set up + a short LSTM run on the real IMDB data), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: setup data quickstart test bench
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
