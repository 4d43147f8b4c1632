"""`embeddings`: the one console command; each subcommand is a job module.

Every job module exposes `run(argv=None)` (the Beam wordcount convention), and
may add `main(argv=None)` that reports known errors as one line; a subcommand is
`embeddings NAME [flags]` and also `python -m MODULE [flags]`.

A subcommand's flags come from its *flags module*, which imports neither
TensorFlow nor Beam: the command parses argv with it first, so `--help` and
usage errors answer at once, and only then imports the job module.

Output is quiet by default (core/console.py drops TensorFlow's and Beam's
chatter, in child processes too); `--verbose`, anywhere on the command line,
shows everything.
"""

import argparse
import importlib
import sys
from typing import List, NamedTuple, Optional

from core import console


class Subcommand(NamedTuple):
  module: str   # the job module: its main(argv) or run(argv) runs the job
  flags: str    # "module:function" returning the argparse parser
  summary: str  # one line for `embeddings --help`
  beam: bool = False  # a Beam job: flags its parser does not know are Beam's


SUBCOMMANDS = {
    "generate": Subcommand(
        "pipelines.generate", "pipelines.options:generate_parser",
        "write a synthetic movie-ratings dataset with planted structure"),
    "preprocess": Subcommand(
        "pipelines.preprocess", "pipelines.options:preprocess_parser",
        "Beam + tf.Transform: raw tables -> TFRecords + transform graph",
        beam=True),
    "train": Subcommand(
        "trainer.task", "trainer.config:flag_parser",
        "train a Keras embedding model on preprocessed data"),
    "evaluate": Subcommand(
        "workflows.folds", "workflows.folds_options:flag_parser",
        "RMSE/MAE/AUC of a model; the MovieLens 5-fold protocol"),
    "tune": Subcommand(
        "workflows.tune", "workflows.tune_options:flag_parser",
        "search embedding sizes, L2 and learning rate"),
    "export": Subcommand(
        "trainer.export", "trainer.export_options:flag_parser",
        "export a model's tables as embedding artifacts"),
    "neighbors": Subcommand(
        "retrieval.neighbors", "retrieval.neighbors:flag_parser",
        "nearest neighbours by cosine"),
    "recommend": Subcommand(
        "retrieval.recommend", "retrieval.recommend:flag_parser",
        "top-k unseen items for users"),
    "recommend-batch": Subcommand(
        "workflows.recommend_batch",
        "workflows.recommend_batch_options:flag_parser",
        "Beam job: top-k recommendations for every user", beam=True),
    "cluster": Subcommand(
        "retrieval.clustering", "retrieval.clustering:flag_parser",
        "k-means over an embedding table"),
    "projector": Subcommand(
        "retrieval.projector", "retrieval.projector:flag_parser",
        "TensorBoard Embedding Projector files and a 2-D map PNG"),
    "digits": Subcommand(
        "retrieval.digits", "retrieval.digits:flag_parser",
        "the MNIST-style projector demo on scikit-learn's digits"),
    "retrain": Subcommand(
        "workflows.retrain", "workflows.retrain_options:flag_parser",
        "scheduled retraining with a promotion gate"),
    "rollback": Subcommand(
        "workflows.retrain", "workflows.retrain_options:rollback_parser",
        "point `current` back to the previous model"),
}


def _usage() -> str:
  width = max(len(name) for name in SUBCOMMANDS)
  lines = ["usage: embeddings [--verbose] SUBCOMMAND [flags]   "
           "(embeddings SUBCOMMAND --help)", "", "subcommands:"]
  for name, command in SUBCOMMANDS.items():
    lines.append(f"  {name.ljust(width)}  {command.summary}")
  lines += ["", "--verbose: also show TensorFlow's and Beam's own log lines"]
  return "\n".join(lines)


def flag_parser(name: str) -> argparse.ArgumentParser:
  """The parser of subcommand `name`, built by its flags module.

  Args:
    name: a key of SUBCOMMANDS.

  Returns:
    The argparse.ArgumentParser.
  """
  module_name, function = SUBCOMMANDS[name].flags.split(":")
  return getattr(importlib.import_module(module_name), function)()


def main(argv: Optional[List[str]] = None) -> int:
  """Dispatches `embeddings SUBCOMMAND ...` to the subcommand's module.

  Args:
    argv: the arguments after the program name. None (the console command)
      reads sys.argv[1:] and makes the output quiet unless --verbose is
      given; a caller passing argv keeps its own stderr as it is.

  Returns:
    The process exit status.
  """
  as_command = argv is None
  verbose, argv = console.strip_verbose(sys.argv[1:] if as_command else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in SUBCOMMANDS:
    print(f"embeddings: unknown subcommand {name!r}\n\n{_usage()}",
          file=sys.stderr)
    return 2
  if as_command and not verbose:
    console.quiet()
  parser = flag_parser(name)
  # --help and usage errors exit here, before TensorFlow is imported.
  if SUBCOMMANDS[name].beam:
    parser.parse_known_args(rest)
  else:
    parser.parse_args(rest)
  module = importlib.import_module(SUBCOMMANDS[name].module)
  # A module's `main` wraps `run` and turns its known errors into one clear
  # line and an exit status; jobs without one report through `run` itself.
  if name == "rollback":
    entry = module.rollback
  else:
    entry = getattr(module, "main", None) or module.run
  result = entry(rest)
  return result if isinstance(result, int) else 0


if __name__ == "__main__":
  sys.exit(main())
