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
# Test processes (pytest-xdist); a file's tests stay in one process, in order.
TEST_WORKERS ?= 2

.PHONY: setup run test bench ml100k-folds clean

$(STAMP): setup.py
	@echo "== set-up: a virtual environment in $(VENV) with the project and its dependencies (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/embeddings generate --output $(RUN_DIR)/data --rows $(ROWS) --seed 1
	$(BIN)/embeddings preprocess --spec configs/synthetic.yaml \
	  --env DATA_DIR=$(RUN_DIR)/data --output $(RUN_DIR)/preprocessed
	$(BIN)/embeddings train --spec configs/synthetic.yaml \
	  --env DATA_DIR=$(RUN_DIR)/data --preprocessed $(RUN_DIR)/preprocessed \
	  --model_dir $(RUN_DIR)/model --validation_fraction 0.1 --early_stopping_patience 2
	$(BIN)/embeddings export --model_dir $(RUN_DIR)/model \
	  --preprocessed $(RUN_DIR)/preprocessed --output $(RUN_DIR)/embeddings
	$(BIN)/embeddings neighbors --embeddings $(RUN_DIR)/embeddings \
	  --table movie --item m1 -k 10
	$(BIN)/embeddings recommend --embeddings $(RUN_DIR)/embeddings \
	  --users u1,u2 -k 5 --seen $(RUN_DIR)/data/ratings.csv
	$(BIN)/embeddings recommend-batch --embeddings $(RUN_DIR)/embeddings \
	  --seen $(RUN_DIR)/data/ratings.csv --output $(RUN_DIR)/recommendations -k 10
	$(BIN)/embeddings projector --embeddings $(RUN_DIR)/embeddings \
	  --table movie --output $(RUN_DIR)/projector
	@echo "== done: everything is under $(RUN_DIR)/ (model card: $(RUN_DIR)/model/model_card.md)."
	@echo "   The commands are in $(BIN)/ (or: source $(BIN)/activate)."
	@echo "   Training curves: $(BIN)/tensorboard --logdir $(RUN_DIR)/model/logs"
	@echo "   Projector:       $(BIN)/tensorboard --logdir $(RUN_DIR)/projector  (the PROJECTOR tab)"

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: setup
	$(BIN)/python -m benchmarks.run

# The MovieLens 100K 5-fold protocol with the best setting measured (README).
ml100k-folds: setup
	$(BIN)/embeddings evaluate --ml100k_folds $(ML100K_DIR) \
	  --spec configs/movielens100k.yaml --work_dir out/ml100k_folds \
	  --model_type dnn --hybrid --mf_dim 32 --l2_user 0.1 --l2_item 0.1 \
	  --l2_embedding 0.05 --hidden_units 64 --dropout 0.5 --epochs 20 \
	  --learning_rate_decay 0.9 \
	  --user_side_features gender,occupation,age_bucket,age_x_gender \
	  --item_side_features genres \
	  --features gender,occupation,age_bucket,genres,age_x_gender,occupation_x_genre,day_of_week,hour_of_day,day_x_hour

clean:
	rm -rf $(VENV) out
