"""`embeddings SUBCOMMAND --help` is fast: it imports no TensorFlow or Beam.

The CLI builds each subcommand's parser from its flags module (the table
in embeddings_cli.SUBCOMMANDS); every flag has a help line that states its
default (or that it is required).
"""

import argparse
import os
import subprocess
import sys

import pytest

import embeddings_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tf_keras", "tensorflow_transform", "apache_beam")


def _imported_modules(importtime_output):
  """Module names from `python -X importtime` lines."""
  names = set()
  for line in importtime_output.splitlines():
    if line.startswith("import time:") and "|" in line:
      names.add(line.rsplit("|", 1)[1].strip())
  return names


def _flag_helps(parser):
  """Option string -> its help text as --help shows it (before % filling)."""
  # pylint: disable=protected-access
  formatter = parser._get_formatter()
  helps = {}
  for action in parser._actions:
    if not action.option_strings or isinstance(action, argparse._HelpAction):
      continue
    helps[action.option_strings[-1]] = (
        formatter._get_help_string(action) if action.help else "")
  return helps


@pytest.mark.parametrize("name", sorted(embeddings_cli.SUBCOMMANDS))
def test_help_imports_no_tensorflow_nor_beam(name):
  done = subprocess.run(
      [sys.executable, "-X", "importtime", "-m", "embeddings_cli", name,
       "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.startswith(f"usage: embeddings {name}")
  heavy = sorted(m for m in _imported_modules(done.stderr)
                 if m.split(".")[0] in HEAVY)
  assert not heavy, (f"`embeddings {name} --help` imports {heavy[:5]}: its "
                     f"flags module {embeddings_cli.SUBCOMMANDS[name].flags} "
                     f"must not import them")


@pytest.mark.parametrize("name", sorted(embeddings_cli.SUBCOMMANDS))
def test_every_flag_has_a_help_line_with_its_default(name):
  parser = embeddings_cli.flag_parser(name)
  assert parser is not None, (
      f"{embeddings_cli.SUBCOMMANDS[name].flags} does not exist yet")
  assert parser.prog == f"embeddings {name}"
  helps = _flag_helps(parser)
  assert helps, "no flags"
  missing = sorted(flag for flag, text in helps.items() if not text)
  assert not missing, f"flags without help: {missing}"
  silent = sorted(flag for flag, text in helps.items()
                  if "default" not in text and "required" not in text)
  assert not silent, f"help that does not state the default: {silent}"
  assert "--verbose" not in helps, "--verbose is the CLI's own flag"


def test_a_usage_error_is_reported_before_the_job_imports_tensorflow():
  done = subprocess.run(
      [sys.executable, "-X", "importtime", "-m", "embeddings_cli",
       "evaluate", "--no_such_flag"], cwd=REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert done.returncode == 2
  errors = [line for line in done.stderr.splitlines()
            if not line.startswith("import time:")]
  assert errors[-1] == ("embeddings evaluate: error: unrecognized arguments: "
                        "--no_such_flag")
  assert "tensorflow" not in _imported_modules(done.stderr)
