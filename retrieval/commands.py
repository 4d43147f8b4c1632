"""What the retrieval subcommands share: flags, table loading, output lines.

`embeddings neighbors`, `recommend`, `cluster` and `projector` all name an
export with --embeddings and an id -> title file with --names, load tables
from it, report a missing table as one line naming the tables that are
there, and print one line per item with its title. They do it through
these functions, so the commands word their flags, errors and lines alike.
"""

import argparse
import sys
from typing import Any, Dict, Mapping, Optional

from core import artifacts
from retrieval import catalog

# The exit status of a command whose table is not in the export.
MISSING_TABLE = 2
NAMES_HELP = "id -> title file: MovieLens u.item, items.csv, or id|title"


class CommandError(Exception):
  """A failure a command reports as one line on stderr, with an exit status.

  Attributes:
    status: the command's exit status for this failure.
  """

  def __init__(self, command: str, message: Any, status: int):
    """Words the failure.

    Args:
      command: the subcommand, e.g. "neighbors".
      message: what went wrong (an exception or a text).
      status: the exit status.
    """
    super().__init__(f"embeddings {command}: {message}")
    self.status = status


def add_embeddings_flag(parser: argparse.ArgumentParser,
                        table_directory: bool) -> None:
  """Adds the required --embeddings flag.

  Args:
    parser: the command's parser.
    table_directory: the command also accepts one table's own directory
      (it reads a single table).
  """
  help_text = "export directory (embeddings export --output)"
  if table_directory:
    help_text += " or one table's directory"
  parser.add_argument("--embeddings", required=True, help=help_text)


def add_names_flag(parser: argparse.ArgumentParser) -> None:
  """Adds the optional --names flag (see `read_names`)."""
  parser.add_argument("--names", default=None, help=NAMES_HELP)


def load_table(command: str, embeddings: str,
               table: Optional[str]) -> artifacts.EmbeddingTable:
  """Loads the table a command was asked for.

  Args:
    command: the subcommand, for the error line.
    embeddings: the --embeddings directory.
    table: the table name (None when `embeddings` is the table directory).

  Returns:
    The table.

  Raises:
    CommandError: no such table (status MISSING_TABLE); the message names
      the tables that are there.
  """
  try:
    return artifacts.load(embeddings, table)
  except FileNotFoundError as error:
    raise CommandError(command, error, MISSING_TABLE) from None


def report(error: CommandError) -> int:
  """Prints a command's failure to stderr.

  Args:
    error: the failure.

  Returns:
    Its exit status.
  """
  print(error, file=sys.stderr)
  return error.status


def read_names(path: Optional[str]) -> Dict[str, str]:
  """Token -> title from a --names file.

  Args:
    path: the file (catalog.read_attributes' formats), or None.

  Returns:
    The titles; empty without a file or when the file has none.
  """
  return catalog.titles(catalog.read_attributes(path) if path else None)


def item_line(lead: str, token: str, names: Mapping[str, str]) -> str:
  """One printed result: a lead (rank, score), the token, its title.

  Args:
    lead: what comes first, already formatted (e.g. "   1  +0.9876").
    token: the item's row name.
    names: token -> title; an item without one ends at its token.

  Returns:
    The line, without trailing spaces.
  """
  return f"{lead}  {token:<12}  {names.get(token, '')}".rstrip()
