# otto-recommender. Two commands do everything on a fresh machine:
#   make demo   set up .venv, then generate -> convert -> split -> train -> index -> evaluate -> serve
#   make test   set up .venv, then run the whole test suite
# `make demo DATA=path/to/train.jsonl` runs the same pipeline on a real OTTO file.
# Every step is a file target, so a rerun skips the steps whose outputs are up to date.

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
WORK     ?= work
DATA     ?=
SESSIONS ?= 60000
ITEMS    ?= 9000
SEED     ?= 42
DAYS     ?= 7
EPOCHS   ?= 5
HOST     ?= 127.0.0.1
PORT     ?= 8000
QUIET    ?=

SYNTH    := $(WORK)/synth-$(SESSIONS)-$(ITEMS)-$(SEED).jsonl
INPUT    := $(if $(DATA),$(DATA),$(SYNTH))
DATASET  := $(WORK)/dataset
SPLIT    := $(WORK)/split
MODEL    := $(WORK)/model
SAMPLE   := $(WORK)/sample

.PHONY: demo test venv serve bench conformance clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# --- the demo pipeline --------------------------------------------------------
# the generated file's name holds its parameters, so changing one regenerates it
$(SYNTH): | $(STAMP)
	$(PY) -m data_prep synth $@ --sessions $(SESSIONS) --items $(ITEMS) --seed $(SEED) $(QUIET)

$(SAMPLE)/meta.json: tests/data/otto_sample_train.jsonl | $(STAMP)
	$(PY) -m data_prep convert $< $(SAMPLE) --overwrite $(QUIET)
	$(PY) -m data_prep stats $(SAMPLE)

$(DATASET)/meta.json: $(INPUT) | $(STAMP)
	$(PY) -m data_prep convert $< $(DATASET) --overwrite $(QUIET)
	$(PY) -m data_prep stats $(DATASET)

$(SPLIT)/test_labels.jsonl: $(DATASET)/meta.json
	$(PY) -m eval split $(DATASET) $(SPLIT) --days $(DAYS) --seed $(SEED) --overwrite $(QUIET)

$(MODEL)/meta.json: $(SPLIT)/test_labels.jsonl
	$(PY) -m w2v train $(SPLIT)/train $(MODEL) --epochs $(EPOCHS) --seed $(SEED) --overwrite $(QUIET)

$(MODEL)/index.json: $(MODEL)/meta.json
	$(PY) -m w2v index $(MODEL) --k 20 $(QUIET)

$(WORK)/report/report.md: $(MODEL)/index.json
	$(PY) -m eval run $(DATASET) $(WORK)/report --split $(SPLIT) --model $(MODEL) --seed $(SEED) --overwrite $(QUIET)

demo: $(SAMPLE)/meta.json $(WORK)/report/report.md
	cat $(WORK)/report/report.md
	$(PY) -m serve $(MODEL) --host $(HOST) --port $(PORT) --print-examples

serve: $(MODEL)/index.json
	$(PY) -m serve $(MODEL) --host $(HOST) --port $(PORT) --print-examples

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench,plot]'
	$(PY) bench/bench_prep.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_topk.py
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_eval.py

conformance: $(STAMP)
	$(PY) conformance/generate.py

clean:
	rm -rf $(WORK) .pytest_cache
