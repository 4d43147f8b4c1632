"""The `embeddings export` flags, importable without TensorFlow.

The `embeddings` command builds this parser to answer `--help` and usage
errors fast; trainer/export.py parses with the same parser.
"""

import argparse


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings export` parser.

  Returns:
    An ArgumentParser (prog "embeddings export") with every flag's default
    shown in its help.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings export",
      description="Export every embedding table of a trained model as a "
                  "self-describing artifact directory.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--model_dir", required=True,
                      help="the --model_dir of `embeddings train`")
  parser.add_argument("--preprocessed", default=None,
                      help="the preprocessing output it trained on; unset: "
                           "the one its report names")
  parser.add_argument("--output", required=True,
                      help="export directory; one subdirectory per table")
  parser.add_argument("--spec", default=None,
                      help="the feature spec; unset: the one its report "
                           "names")
  parser.add_argument("--env", action="append", default=[],
                      metavar="NAME=VALUE",
                      help="override a ${VAR} of the spec (repeatable)")
  parser.add_argument("--tables", default=None,
                      help="comma-separated tables to export; unset: all")
  return parser
