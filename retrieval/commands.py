"""What the retrieval subcommands share: flags, table loading, output lines.

`embeddings neighbors`, `recommend`, `cluster` and `projector` all name an
export with --embeddings and, optionally, an id -> title file with --names
(the export's own names are used without one), load tables from it, report
a missing table as one line naming the tables that are there, print one
line per item with its title, and end with a one-line summary. They do it
through these functions, so the commands word their flags, errors and lines
alike.
"""

import argparse
import dataclasses
import sys
from typing import Any, Callable, Dict, Mapping, Optional

from core import artifacts
from retrieval import catalog

# The exit status of a command whose table is not in the export.
MISSING_TABLE = 2
NAMES_HELP = ("id -> title file: MovieLens u.item, items.csv, or id|title "
              "(default: the export's own names, if it has them)")


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
  help_text += " (required)"
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


def read_file(command: str, reader: Callable[..., Any],
              path: Optional[str], *args: Any) -> Any:
  """Reads an input file a user named, reporting a bad one as one line.

  Args:
    command: the subcommand, for the error line.
    reader: reads the file: `reader(path, *args)`.
    path: the file, or None (nothing to read).
    *args: further arguments of `reader`.

  Returns:
    What `reader` returned, or None without a path.

  Raises:
    CommandError: the file is missing, unreadable or malformed (status
      MISSING_TABLE, the usage-error status).
  """
  if path is None:
    return None
  try:
    return reader(path, *args)
  except (OSError, ValueError, UnicodeDecodeError) as error:
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


def with_names(command: str, table: artifacts.EmbeddingTable,
               names_path: Optional[str]) -> artifacts.EmbeddingTable:
  """The table with the display names a command shows.

  Args:
    command: the subcommand, for the error line.
    table: a loaded table; its own names (from the export) are kept when
      no file is given.
    names_path: a --names file, which overrides the table's names (rows it
      does not name show their token).

  Returns:
    `table`, or a copy with the file's names.

  Raises:
    CommandError: the file cannot be read (see read_file).
  """
  if not names_path:
    return table
  titles = read_file(command, read_names, names_path)
  return dataclasses.replace(table, names=[titles.get(token, token)
                                           for token in table.tokens])


def display_names(table: artifacts.EmbeddingTable) -> Dict[str, str]:
  """Token -> display name, for the rows whose name says more than the token.

  Args:
    table: the table (see with_names).

  Returns:
    The names; empty when the table has none.
  """
  if table.names is None:
    return {}
  return {token: name for token, name in zip(table.tokens, table.names)
          if name and name != token}


def summary(command: str, text: str) -> None:
  """Prints a command's closing line (what it did, where the results are).

  It goes to stderr, so that stdout holds only results (--json lines).

  Args:
    command: the subcommand.
    text: the summary.
  """
  print(f"embeddings {command}: {text}", file=sys.stderr)


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
