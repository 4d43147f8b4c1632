"""The flags of `embeddings generate` and `embeddings preprocess`.

Kept apart from the jobs so that `embeddings generate --help` and
`embeddings preprocess --help` (and usage errors) answer without loading
TensorFlow or Beam: nothing here, nor anything it imports, imports them.
The jobs parse their command lines with these same parsers.
"""

import argparse
import dataclasses
from typing import List, Optional, Sequence, Tuple

from core import flags
from core import layout
from pipelines import world_params
from transforms import spec as spec_lib

class OptionsError(ValueError):
  """Option values that parse but cannot be used (a usage error)."""


# Rows `embeddings generate` formats and writes at a time.
DEFAULT_CHUNK_ROWS = 1 << 19


def generate_parser() -> argparse.ArgumentParser:
  """The flags of `embeddings generate`.

  Returns:
    The parser, every default shown in the help.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings generate",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      description="Write a synthetic movie-ratings dataset with planted "
                  "taste clusters (the model: pipelines/world.py).")
  parser.add_argument("--output", required=True, help="destination folder")
  parser.add_argument("--rows", type=int, required=True,
                      help="number of ratings")
  parser.add_argument("--seed", type=int, default=0,
                      help="random seed; the same seed gives the same files")
  parser.add_argument("--users", type=int, default=None,
                      help="number of users (unset: max(rows/100, "
                           "2*sqrt(rows)))")
  parser.add_argument("--items", type=int, default=None,
                      help="number of items (unset: max(rows/200, "
                           "2*sqrt(rows)))")
  parser.add_argument("--clusters", type=int, default=None,
                      help="taste clusters (unset: min(8, users, items))")
  parser.add_argument("--dim", type=int, default=16,
                      help="latent factor dimension")
  parser.add_argument("--noise", type=float, default=0.5,
                      help="rating noise standard deviation")
  parser.add_argument("--affinity", type=float, default=1.5,
                      help="own-cluster rating lift")
  parser.add_argument("--spread", type=float, default=0.3,
                      help="within-cluster spread of factors")
  parser.add_argument("--in_cluster", type=float, default=0.5,
                      help="share of a user's picks from their own cluster")
  parser.add_argument("--item_zipf", type=float, default=1.0,
                      help="Zipf exponent of item popularity")
  parser.add_argument("--rating_step", type=float, default=1.0,
                      help="rating granularity (0.5 for half stars)")
  parser.add_argument("--block_rows", type=int,
                      default=world_params.DEFAULT_BLOCK_ROWS,
                      help="ratings per random-stream block (part of the "
                           "dataset's identity, like the seed)")
  parser.add_argument("--chunk_rows", type=int, default=DEFAULT_CHUNK_ROWS,
                      help="rows written at a time (memory only; does not "
                           "change the output)")
  return parser


AUTO_PASSES = "auto"


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
  """One preprocessing run: what it reads, where it writes, what it accepts.

  Each field is also the command-line flag of the same name.
  """
  spec: str = flags.option(help="feature spec YAML")
  output: str = flags.option(help="output directory (local, gs://, ...)")
  env: Tuple[Tuple[str, str], ...] = flags.option(
      (), help="set ${KEY} in the spec's paths (repeatable; KEY must be a "
               "variable the spec references)",
      metavar="KEY=VALUE", repeat=True, parse=spec_lib.parse_env_flags)
  max_rejected_fraction: Optional[float] = flags.option(
      None, help="fail when a table rejects more than this share of its "
                 "rows (unset: the spec's max_rejected_fraction, 0.01 by "
                 "default)")
  num_shards: int = flags.option(
      0, help="TFRecord files per split; 0 lets the runner decide")
  raw_eval: bool = flags.option(
      False, help="also write the eval split's raw rows as tf.Examples "
                  f"({layout.RAW_EVAL}/), the rows a model's raw serving "
                  f"signature is scored on")
  input_passes: str = flags.option(
      AUTO_PASSES, choices=(AUTO_PASSES, "one", "two"),
      help="read the main table twice (an analysis pass, then a transform "
           "pass: memory flat in the rows on local runners) or once (the "
           "runner holds the rows between analysis and transform: Dataflow "
           "spills them to disk); auto: once on Dataflow or when an input "
           "is BigQuery, else twice")


def preprocess_parser(prog: str = "embeddings preprocess"
                     ) -> argparse.ArgumentParser:
  """The job's own flags, one per PreprocessOptions field.

  Args:
    prog: the command the usage line names.

  Returns:
    The parser; what it does not know goes to Beam.
  """
  parser = argparse.ArgumentParser(
      prog=prog,
      description=("Beam + tf.Transform: raw tables -> gzipped TFRecords, "
                   "transform_fn/, feature_info.json, run_report.json. "
                   "Other flags go to Beam (--runner, --preset, "
                   "--direct_num_workers, --temp_location, ...)."))
  flags.add_flags(parser, PreprocessOptions)
  return parser


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
  """The options that flags parsed by `preprocess_parser` give.

  Args:
    args: the parsed flags.

  Returns:
    The PreprocessOptions.

  Raises:
    spec_lib.SpecError: an --env entry is not NAME=VALUE.
  """
  return PreprocessOptions(**flags.values_from_args(PreprocessOptions, args))


def parse_args(argv: Optional[Sequence[str]] = None,
               parser: Optional[argparse.ArgumentParser] = None
              ) -> Tuple[PreprocessOptions, List[str]]:
  """Splits a command line into the job's options and Beam's arguments.

  Args:
    argv: command-line flags (default: sys.argv[1:]).
    parser: the parser to use (default: preprocess_parser()).

  Returns:
    (the options, the arguments the job does not know: Beam options, maybe
    with a --preset).

  Raises:
    spec_lib.SpecError: an --env entry is not NAME=VALUE.
  """
  parser = parser or preprocess_parser()
  known, beam_args = parser.parse_known_args(
      None if argv is None else list(argv))
  return options_from_args(known), beam_args
