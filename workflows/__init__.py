"""Orchestration: the only modules that call several layers.

* `folds`: the MovieLens 100K 5-fold protocol (preprocess, train, evaluate
  per fold) behind `embeddings evaluate`.
* `tune`: `embeddings tune`, one training run per trial.
* `retrain`: scheduled retraining with a promotion gate and a model
  registry (`embeddings retrain` / `rollback`).
* `recommend_batch`: the Beam job scoring every user against the item table;
  its Beam steps (users from word2vec.txt, the seen-items join, blocked
  scoring) are in `recommend_steps`.
"""
