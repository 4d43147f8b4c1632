"""The flags of `embeddings tune`, without TensorFlow (a fast --help).

`embeddings train`'s flags set the base config of every trial; TuneOptions
adds the study's own. Trials are scored on rows held out of the training
split (--validation_fraction, 0.1 unless given; 0 is refused), never on the
eval split, which only the chosen setting is evaluated on, once.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional, Tuple

from core import flags
from trainer import config as config_lib

DEFAULT_L2_RANGE = (1e-5, 1e-1)
DEFAULT_LEARNING_RATE_RANGE = (3e-4, 3e-2)
# The share of the training split trials are scored on, unless given.
DEFAULT_VALIDATION_FRACTION = 0.1


def _range(text: str) -> Tuple[float, float]:
  values = flags.comma_list(text, float)
  if len(values) != 2:
    raise ValueError(f"expected LOW,HIGH, got {text!r}")
  return values[0], values[1]


@dataclasses.dataclass(frozen=True)
class TuneOptions:
  """The study's own options (every `embeddings train` flag sets the base)."""
  output: str = flags.option(help="the tuned spec YAML to write",
                             metavar="YAML")
  trials: int = flags.option(20, help="trials to train")
  study_seed: int = flags.option(0, help="seeds the TPE sampler")
  metric: Optional[str] = flags.option(
      None, choices=tuple(sorted(config_lib.METRICS)),
      help="the validation metric trials are ranked by; unset: rmse, or "
           "auc for binary")
  l2_range: Tuple[float, float] = flags.option(
      DEFAULT_L2_RANGE, parse=_range, metavar="LOW,HIGH",
      help="range of the L2 strengths, searched log-uniformly")
  learning_rate_range: Tuple[float, float] = flags.option(
      DEFAULT_LEARNING_RATE_RANGE, parse=_range, metavar="LOW,HIGH",
      help="range of the learning rate, searched log-uniformly")
  timeout_s: Optional[float] = flags.option(
      None, help="start no trial after this many seconds")
  storage: Optional[str] = flags.option(
      None, help="Optuna storage URL to keep/resume the study (e.g. "
                 "sqlite:///study.db)")
  study_name: Optional[str] = flags.option(
      None, help="the study's name in --storage")


_OWN_HELP = {
    "model_dir": "study work directory: trial_NNN/, best/ (the chosen "
                 "setting, trained again and tested) and tune_report.json "
                 "(required)",
    "validation_fraction": f"the share of the training split held out to "
                           f"score the trials on (default: "
                           f"{DEFAULT_VALIDATION_FRACTION}; 0 is refused: "
                           f"trials are never scored on the eval split)",
}


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings tune` flags.

  Returns:
    `embeddings train`'s parser (the base config of every trial; --model_dir
    becomes the study's work directory) plus TuneOptions' flags.
  """
  parser = config_lib.flag_parser()
  parser.prog = "embeddings tune"
  parser.description = ("Search embedding sizes, L2 and learning rate with "
                        "Optuna, scoring trials on rows held out of the "
                        "training split; test the chosen setting once on "
                        "the eval split and write it as a spec.")
  for action in parser._actions:  # pylint: disable=protected-access
    if action.dest in _OWN_HELP:
      action.help = _OWN_HELP[action.dest]
  flags.add_flags(parser, TuneOptions)
  return parser
