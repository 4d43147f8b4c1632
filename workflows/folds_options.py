"""`embeddings evaluate` flags, TensorFlow-free (the CLI's fast --help).

Two modes share the parser: --model_dir with --preprocessed scores one
trained model; --ml100k_folds runs the MovieLens 100K protocol, and every
`embeddings train` flag (but the paths each fold sets) goes to the trainer.
"""

import argparse

from core import flags
from core import layout
from trainer import config as config_lib
from transforms import spec as spec_lib

DEFAULT_FOLDS = ("u1", "u2", "u3", "u4", "u5")

# Trainer fields each fold sets itself, or that evaluate's own flags give:
# --task is evaluate's, and passed to the trainer too.
FOLD_SET_FIELDS = ("preprocessed_dir", "model_dir", "spec_path", "spec_env",
                   "task")


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings evaluate` parser.

  Returns:
    The parser; train flags default to unset (the spec's `model:` section
    or the trainer's default applies).
  """
  parser = argparse.ArgumentParser(
      prog="embeddings evaluate",
      description="Metrics of a trained model, or the MovieLens 100K "
                  "5-fold protocol (preprocess, train, score each fold).",
      formatter_class=flags.DefaultsHelpFormatter)
  parser.add_argument("--model_dir", help="a model directory from `train` "
                      "(scores that model)")
  parser.add_argument("--preprocessed",
                      help="the preprocessing output --model_dir is scored on")
  parser.add_argument("--split", default=layout.EVAL,
                      help="the split of --preprocessed to score")
  parser.add_argument("--task", choices=spec_lib.TASKS,
                      help="regression or binary (unset: the model's "
                           "training report's, or the spec's)")
  parser.add_argument("--ml100k_folds", metavar="DIR",
                      help="MovieLens 100K folder: run the fold protocol")
  parser.add_argument("--folds", default=",".join(DEFAULT_FOLDS),
                      help="the folds --ml100k_folds runs")
  parser.add_argument("--spec",
                      help="the spec --ml100k_folds preprocesses and trains "
                           "with (e.g. configs/movielens100k.yaml)")
  parser.add_argument("--work_dir", default="out/ml100k_folds",
                      help="per-fold data and models, and the fold table "
                           "(folds.md) and report (folds_report.json)")
  parser.add_argument("--output", help="also write the result JSON here")
  train = parser.add_argument_group(
      "train flags", "with --ml100k_folds: passed to each fold's training")
  flags.add_flags(train, config_lib.TrainerConfig, unset_defaults=True,
                  skip=FOLD_SET_FIELDS)
  return parser
