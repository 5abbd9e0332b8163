# otto-recommender. Two commands do everything on a fresh machine:
#   make demo   set up .venv, then generate -> convert -> split -> train -> index -> evaluate -> serve
#   make test   set up .venv, then run ruff and the whole test suite
# Every step is a file target, so a rerun skips the steps whose outputs are up to date; a step's
# parameters are part of its inputs (stamp files named after them, like the generated file's
# name), so `make demo EPOCHS=1` retrains and re-evaluates but does not regenerate or resplit.
#
# Variables (set them on the make line, e.g. `make demo SESSIONS=20000 EPOCHS=1 QUIET=--quiet`):
#   DATA=FILE      run on a real OTTO JSONL file instead of generated data
#   SESSIONS, ITEMS, SEED   size and seed of the generated data (SEED also seeds split and training)
#   DAYS           test period of the split, in days
#   EPOCHS         Word2Vec training epochs (default: the session preset's, w2v/config.py PRESETS)
#   WORK=DIR       where every output goes (default work/)
#   HOST, PORT     address the demo server binds (default 127.0.0.1:8000; 0.0.0.0 to accept others)
#   QUIET=--quiet  no progress output from the steps
#   PYTHON         the interpreter that creates .venv

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
EPOCHS   ?=
HOST     ?= 127.0.0.1
PORT     ?= 8000
QUIET    ?=

SYNTH    := $(WORK)/synth-$(SESSIONS)-$(ITEMS)-$(SEED).jsonl
INPUT    := $(if $(DATA),$(DATA),$(SYNTH))
DATASET  := $(WORK)/dataset
SPLIT    := $(WORK)/split
MODEL    := $(WORK)/model
SAMPLE   := $(WORK)/sample
REPORT   := $(WORK)/report
# stamp files: one per step, named after the step's parameters (see stamp below)
STAMPS   := $(WORK)/.stamps
S_INPUT  := $(STAMPS)/input-$(subst /,_,$(INPUT))
S_SPLIT  := $(STAMPS)/split-days$(DAYS)-seed$(SEED)
S_TRAIN  := $(STAMPS)/train-epochs$(EPOCHS)-seed$(SEED)

.PHONY: demo test lint venv serve bench bench-full conformance clean

# A step's stamp exists only under its current parameters' name: changing a parameter makes a new,
# newer stamp (so the step reruns), and the old ones are removed (so changing it back reruns too).
$(STAMPS)/%:
	mkdir -p $(STAMPS)
	rm -f $(STAMPS)/$(firstword $(subst -, ,$*))-*
	touch $@

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

# --- the demo pipeline --------------------------------------------------------
# the generated file's name holds its parameters, so changing one regenerates it
$(SYNTH): | $(STAMP)
	$(PY) -m data_prep synth $@ --sessions $(SESSIONS) --items $(ITEMS) --seed $(SEED) $(QUIET)

$(SAMPLE)/meta.json: tests/data/otto_sample_train.jsonl | $(STAMP)
	$(PY) -m data_prep convert $< $(SAMPLE) --overwrite $(QUIET)
	$(PY) -m data_prep stats $(SAMPLE)

$(DATASET)/meta.json: $(INPUT) $(S_INPUT) | $(STAMP)
	$(PY) -m data_prep convert $< $(DATASET) --overwrite $(QUIET)
	$(PY) -m data_prep stats $(DATASET)

$(SPLIT)/test_labels.jsonl: $(DATASET)/meta.json $(S_SPLIT)
	$(PY) -m eval split $(DATASET) $(SPLIT) --days $(DAYS) --seed $(SEED) --overwrite $(QUIET)

$(MODEL)/meta.json: $(SPLIT)/test_labels.jsonl $(S_TRAIN)
	$(PY) -m w2v train $(SPLIT)/train $(MODEL) --preset session $(if $(EPOCHS),--epochs $(EPOCHS)) --seed $(SEED) --overwrite $(QUIET)

$(MODEL)/index.json: $(MODEL)/meta.json
	$(PY) -m w2v index $(MODEL) --k 20 $(QUIET)

# the report (with its plots) is printed once, by `demo`, so `eval run`'s own copy on stdout is dropped
$(REPORT)/report.md: $(MODEL)/index.json
	$(PY) -m eval run $(DATASET) $(REPORT) --split $(SPLIT) --model $(MODEL) --seed $(SEED) --plot --overwrite $(QUIET) > /dev/null

demo: $(SAMPLE)/meta.json $(REPORT)/report.md
	cat $(REPORT)/report.md
	@echo "(report and plots: $(REPORT)/)"
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

# the whole chain at 1/16, 1/4 and full OTTO size (hours on 2 cores; DATA= reuses a full-size file)
bench-full: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/bench_full.py $(if $(DATA),--input $(DATA))

conformance: $(STAMP)
	$(PY) conformance/generate.py

clean:
	rm -rf $(WORK) .pytest_cache
