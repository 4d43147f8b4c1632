"""What the rows of a table mean to people: names, labels, truth.

Embedding artifacts (core/artifacts.py) name rows by token (an item id
like "50" or "m42"); people ask for "Star Wars (1977)". This module reads
the files that map ids to names and labels:

  * MovieLens u.item: `item_id|title|release|video release|url|19 genre
    flags`, latin-1, no header; genres come from the flags.
  * a CSV with a header whose first column is the id, e.g. the synthetic
    items.csv (`item_id,title,genres`) or truth/item_clusters.csv
    (`item_id,cluster`).
  * a pipe- or tab-separated `id|title` file without a header.

and finds rows by token or by title.
"""

import csv
import io
from typing import Dict, Mapping, Optional, Sequence

from core import files

# u.item's genre flag columns, in file order (the same list as u.genre).
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
_MOVIELENS_ITEM_FIELDS = 5 + len(MOVIELENS_GENRES)

TITLE = "title"


class UnknownItemError(KeyError):
  """A token or title that names no row (or several)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


def _read_text(path: str) -> str:
  """A text file's content: UTF-8, else latin-1 (MovieLens' encoding)."""
  raw = files.read_bytes(path)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return raw.decode("latin-1")


def read_attributes(path: str) -> Dict[str, Dict[str, str]]:
  """Reads an id -> attributes file (see the module doc for the formats).

  Args:
    path: u.item, a CSV with a header (first column = id), or `id|title`.

  Returns:
    id -> {column: value}; "title" is set when the file has titles, and
    "genres" ("Action|Comedy") for u.item.

  Raises:
    ValueError: the file is empty or its format is not recognised.
  """
  text = _read_text(path)
  lines = [line for line in text.splitlines() if line.strip()]
  if not lines:
    raise ValueError(f"{path}: empty attribute file")
  first = lines[0]
  fields = first.split("|")
  if len(fields) == _MOVIELENS_ITEM_FIELDS:
    attributes = {}
    for number, line in enumerate(lines, 1):
      fields = line.split("|")
      if len(fields) != _MOVIELENS_ITEM_FIELDS:
        raise ValueError(f"{path}:{number}: expected {_MOVIELENS_ITEM_FIELDS} "
                         f"|-separated fields (MovieLens u.item), got "
                         f"{len(fields)}")
      genres = [genre for genre, flag in zip(MOVIELENS_GENRES, fields[5:])
                if flag.strip() == "1"]
      attributes[fields[0]] = {TITLE: fields[1], "genres": "|".join(genres),
                               "release_date": fields[2]}
    return attributes
  delimiter = "\t" if "\t" in first else ("|" if "|" in first else ",")
  rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
  header = [cell.strip() for cell in rows[0]]
  has_header = header[0].lower().endswith("id") or TITLE in header
  if has_header:
    columns, body = header, rows[1:]
  else:
    columns = ["id", TITLE] + [f"column_{i}" for i in range(2, len(header))]
    body = rows
  if len(columns) < 2:
    raise ValueError(f"{path}: expected an id column and at least one more "
                     f"column, got {columns}")
  attributes = {}
  for row in body:
    if not row:
      continue
    attributes[row[0].strip()] = {column: value for column, value in
                                  zip(columns[1:], row[1:])}
  return attributes


def titles(attributes: Optional[Mapping[str, Mapping[str, str]]]
          ) -> Dict[str, str]:
  """id -> title from read_attributes' output.

  Args:
    attributes: read_attributes' result, or None.

  Returns:
    The titles; empty when there are none.
  """
  if not attributes:
    return {}
  return {key: values[TITLE] for key, values in attributes.items()
          if values.get(TITLE)}


def find_row(query: str, tokens: Sequence[str],
             names: Optional[Mapping[str, str]] = None,
             rows: Optional[Sequence[int]] = None) -> int:
  """The row a user means by an id or a title.

  Tried in order: the exact token; the exact title (then case-insensitive);
  a unique title containing the query (case-insensitive).

  Args:
    query: a token ("50", "m42") or a title ("Star Wars (1977)").
    tokens: the table's row names.
    names: token -> title.
    rows: the rows allowed (default: all).

  Returns:
    The row.

  Raises:
    UnknownItemError: nothing or several titles match; the message lists
      candidates.
  """
  allowed = set(range(len(tokens)) if rows is None else (int(r) for r in rows))
  row_of = {token: row for row, token in enumerate(tokens) if row in allowed}
  if query in row_of:
    return row_of[query]
  names = names or {}
  exact = [token for token, title in names.items()
           if title == query and token in row_of]
  if not exact:
    lowered = query.strip().lower()
    exact = [token for token, title in names.items()
             if title.strip().lower() == lowered and token in row_of]
  if len(exact) == 1:
    return row_of[exact[0]]
  if len(exact) > 1:
    raise UnknownItemError(f"{query!r} names several rows: " + ", ".join(
        f"{token} ({names[token]})" for token in sorted(exact)[:10]))
  lowered = query.strip().lower()
  partial = sorted(token for token, title in names.items()
                   if lowered in title.lower() and token in row_of)
  if len(partial) == 1:
    return row_of[partial[0]]
  if partial:
    candidates = "; ".join(f"{names[token]} (id {token})"
                           for token in partial[:10])
    raise UnknownItemError(f"{query!r} matches several titles; be more "
                           f"precise: {candidates}")
  hint = "" if names else " (pass --names to look items up by title)"
  raise UnknownItemError(f"{query!r} is neither a token of the table nor a "
                         f"title{hint}")


def read_truth_clusters(path: str) -> Dict[str, str]:
  """Reads a planted-cluster truth file (`item_id,cluster` with a header).

  Args:
    path: e.g. `<data>/truth/item_clusters.csv` from `embeddings generate`.

  Returns:
    id -> cluster label.
  """
  attributes = read_attributes(path)
  mapping = {}
  for key, values in attributes.items():
    if not values:
      raise ValueError(f"{path}: row {key!r} has no cluster column")
    mapping[key] = next(iter(values.values()))
  return mapping
