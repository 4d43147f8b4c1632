"""The `embeddings retrain` and `embeddings rollback` flags, TensorFlow-free.

The `embeddings` command builds these parsers to answer `--help` and usage
errors fast; workflows/retrain.py parses with the same parsers.
"""

import argparse
import dataclasses
import shlex
from typing import Optional, Tuple

from core import flags
from transforms import spec as spec_lib

# trainer/warmstart.py's NEW_ROW_MODES and trainer/metrics.py's METRICS,
# repeated here because those modules import TensorFlow;
# tests/test_retrain_gate.py checks that they agree.
NEW_ROW_MODES = ("mean", "initializer")
GATE_METRICS = ("rmse", "mae", "mse", "auc", "log_loss")


def _shell_words(text: str) -> Tuple[str, ...]:
  return tuple(shlex.split(text))


@dataclasses.dataclass(frozen=True)
class RetrainOptions:
  """Everything one `embeddings retrain` run needs; each field is a flag."""
  spec_path: str = flags.option(help="the YAML feature spec", flag="spec")
  data_pattern: str = flags.option(
      help="data path with {date}, e.g. gs://b/ratings/{date}")
  root: str = flags.option(
      help="the model registry (current, versions/, runs/)")
  window: Optional[str] = flags.option(
      None, help="the date to train; unset: the newest window found")
  data_env: str = flags.option(
      "DATA_DIR", help="the spec variable set to the window's path")
  env: Tuple[Tuple[str, str], ...] = flags.option(
      (), help="other spec variables (repeatable)", metavar="NAME=VALUE",
      repeat=True, parse=spec_lib.parse_env_flags)
  tolerance: float = flags.option(
      0.01, help="how much worse than current the candidate may be (metric "
                 "units; negative demands a gain)")
  metric: Optional[str] = flags.option(
      None, help="gate metric; unset: rmse, or auc for a binary label",
      choices=GATE_METRICS)
  keep: int = flags.option(5, help="promoted versions to keep")
  drift_items: int = flags.option(
      100, help="frequent items the drift report compares")
  drift_k: int = flags.option(10, help="neighbours per item in the drift "
                                       "report")
  holdout_max_rows: int = flags.option(
      100_000, help="held-out rows both models are scored on, at most")
  new_rows: str = flags.option(
      NEW_ROW_MODES[0], choices=NEW_ROW_MODES,
      help="how rows of new tokens start (warm start)")
  freeze_carried_rows: bool = flags.option(
      False, help="keep the rows carried over from the current model "
                  "frozen; only rows new to the vocabulary train")
  preprocess_args: Tuple[str, ...] = flags.option(
      (), parse=_shell_words, metavar="ARGS",
      help="extra `embeddings preprocess` flags (Beam options), one "
           "shell-quoted string")
  train_args: Tuple[str, ...] = flags.option(
      (), parse=_shell_words, metavar="ARGS",
      help="extra `embeddings train` flags, one shell-quoted string")


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings retrain` parser, one flag per RetrainOptions field.

  Returns:
    An ArgumentParser (prog "embeddings retrain").
  """
  parser = argparse.ArgumentParser(
      prog="embeddings retrain",
      description="Preprocess the newest data window, warm-start, train, "
                  "and promote the candidate if it passes the gate.")
  flags.add_flags(parser, RetrainOptions)
  return parser


def rollback_parser() -> argparse.ArgumentParser:
  """The `embeddings rollback` parser.

  Returns:
    An ArgumentParser (prog "embeddings rollback").
  """
  parser = argparse.ArgumentParser(
      prog="embeddings rollback",
      description="Point `current` back to the previously promoted version.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--root", required=True, help="the model registry")
  return parser
