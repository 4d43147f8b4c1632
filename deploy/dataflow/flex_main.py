"""Flex Template entry point: the launcher runs this with the parameters.

The template's `job` parameter picks the Beam job (`preprocess` or
`recommend-batch`); every other parameter goes to that job as a flag, so a
template launch runs exactly what `embeddings JOB --runner DataflowRunner ...`
runs from a workstation.
"""

import argparse
import sys
from typing import List, Optional

import embeddings_cli

BEAM_JOBS = ("preprocess", "recommend-batch")


def main(argv: Optional[List[str]] = None) -> int:
  """Dispatches a Flex Template launch to a Beam job subcommand.

  Args:
    argv: the launcher's arguments (default: sys.argv[1:]).

  Returns:
    The subcommand's exit status.
  """
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--job", choices=BEAM_JOBS, default="preprocess")
  known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  return embeddings_cli.main([known.job] + rest)


if __name__ == "__main__":
  sys.exit(main())
