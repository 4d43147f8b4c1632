"""`embeddings`: the one console command; each subcommand is a job module.

Every job module exposes `run(argv=None)` (the Beam wordcount convention), and
may add `main(argv=None)` that reports known errors as one line; a subcommand is
`embeddings NAME [flags]` and also `python -m MODULE [flags]`.
Modules import lazily: `embeddings generate` does not pay for TensorFlow.
"""

import importlib
import sys
from typing import List, Optional

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "generate": ("pipelines.generate",
                 "write a synthetic movie-ratings dataset with planted structure"),
    "preprocess": ("pipelines.preprocess",
                   "Beam + tf.Transform: raw tables -> TFRecords + transform graph"),
    "train": ("trainer.task", "train a Keras embedding model on preprocessed data"),
    "evaluate": ("workflows.folds",
                 "RMSE/MAE/AUC of a model; the MovieLens 5-fold protocol"),
    "tune": ("workflows.tune", "search embedding sizes, L2 and learning rate"),
    "export": ("trainer.export", "export a model's tables as embedding artifacts"),
    "neighbors": ("retrieval.neighbors", "nearest neighbours by cosine"),
    "recommend": ("retrieval.recommend", "top-k unseen items for users"),
    "recommend-batch": ("workflows.recommend_batch",
                        "Beam job: top-k recommendations for every user"),
    "cluster": ("retrieval.clustering", "k-means over an embedding table"),
    "projector": ("retrieval.projector",
                  "TensorBoard Embedding Projector files and a 2-D map PNG"),
    "digits": ("retrieval.digits",
               "the MNIST-style projector demo on scikit-learn's digits"),
    "retrain": ("workflows.retrain", "scheduled retraining with a promotion gate"),
    "rollback": ("workflows.retrain", "point `current` back to the previous model"),
}


def _usage() -> str:
  width = max(len(name) for name in SUBCOMMANDS)
  lines = ["usage: embeddings SUBCOMMAND [flags]   (embeddings SUBCOMMAND --help)",
           "", "subcommands:"]
  for name, (_, summary) in SUBCOMMANDS.items():
    lines.append(f"  {name.ljust(width)}  {summary}")
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  """Dispatches `embeddings SUBCOMMAND ...` to the subcommand's module.

  Args:
    argv: the arguments after the program name (default: sys.argv[1:]).

  Returns:
    The process exit status.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in SUBCOMMANDS:
    print(f"embeddings: unknown subcommand {name!r}\n\n{_usage()}",
          file=sys.stderr)
    return 2
  module = importlib.import_module(SUBCOMMANDS[name][0])
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
