"""Orchestration: the only modules that call several layers.

* `folds`: the MovieLens 100K 5-fold protocol (preprocess, train, evaluate
  per fold) behind `embeddings evaluate`.
* `tune`: `embeddings tune`, one training run per trial.
* `retrain`: scheduled retraining with a promotion gate and a model
  registry (`embeddings retrain` / `rollback`).
* `recommend_batch`: the Beam job scoring every user against the item table;
  its steps: `recommend_seen` (the --seen reader), `recommend_chunks` (the
  packed shards, the user side), `recommend_tables` (per-worker tables),
  `recommend_index` (exact or approximate search), `recommend_steps`
  (scoring).
"""
