# `make run`: set-up + the main job end to end on generated data (DirectRunner).
# `make test`: set-up + the test suite. `make bench`: set-up + benchmarks.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The MovieLens 100K folder tests and benchmarks read (never copied here).
ML100K_DIR ?= $(abspath ../shared/data/ml-100k)
export ML100K_DIR
RUN_DIR ?= out/run
ROWS ?= 200000

.PHONY: setup run test bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/embeddings generate --output $(RUN_DIR)/data --rows $(ROWS) --seed 1
	$(BIN)/embeddings preprocess --spec configs/synthetic.yaml \
	  --env DATA_DIR=$(RUN_DIR)/data --output $(RUN_DIR)/preprocessed
	$(BIN)/embeddings train --spec configs/synthetic.yaml \
	  --env DATA_DIR=$(RUN_DIR)/data --preprocessed $(RUN_DIR)/preprocessed \
	  --model_dir $(RUN_DIR)/model
	$(BIN)/embeddings export --model_dir $(RUN_DIR)/model \
	  --preprocessed $(RUN_DIR)/preprocessed --output $(RUN_DIR)/embeddings
	$(BIN)/embeddings neighbors --embeddings $(RUN_DIR)/embeddings \
	  --table movie --item m1 -k 10 --names $(RUN_DIR)/data/items.csv
	$(BIN)/embeddings recommend --embeddings $(RUN_DIR)/embeddings \
	  --users u1,u2 -k 5 --seen $(RUN_DIR)/data/ratings.csv \
	  --names $(RUN_DIR)/data/items.csv
	$(BIN)/embeddings recommend-batch --embeddings $(RUN_DIR)/embeddings \
	  --seen $(RUN_DIR)/data/ratings.csv --output $(RUN_DIR)/recommendations -k 10

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) out
