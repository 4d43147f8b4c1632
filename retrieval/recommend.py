"""`embeddings recommend`: top-k items a user has not rated, for a few users.

  embeddings recommend --embeddings out/run/embeddings --users u1,u7 -k 10 \\
      --seen data/ratings.csv

A matrix-factorisation model predicts mu + b_user + b_item + user . item, so
for one user the items rank by `user . item + b_item` (mu and b_user do not
change the order). The item bias is used when the export holds one (a
one-column table `bias_<item>`, see core.artifacts.find_bias); the printed
score is that ranking score. Tables of a model whose prediction is not that
dot product (metadata "score": "model", a dnn) are refused: ranking by their
vectors would not be the model's ranking. Items in the user's ratings
(`--seen`) and OOV rows are never recommended. Titles come from the
export's names (or --names). Every user is scored against every item
exactly (retrieval/index.py); for all users at once use the Beam job
`embeddings recommend-batch` (workflows/recommend_batch.py), which reads
--seen files the same way (`ratings_format`).

From Python, `recommendations_frame` gives the same ranking as a DataFrame.
"""

import argparse
import csv
import dataclasses
import itertools
import json
import sys
from typing import (Any, Dict, Iterable, Mapping, Optional, Sequence, Set,
                    Tuple)

import numpy as np

from core import artifacts
from core import flags
from core import files
from retrieval import commands
from retrieval import index as index_lib

COMMAND = "recommend"
USER_COLUMN = "user_id"
ITEM_COLUMN = "item_id"
DELIMITERS = ("\t", ",", "|")
UNKNOWN_USER = 1


@dataclasses.dataclass(frozen=True)
class RatingsFormat:
  """How a ratings file spells its rows, read off its first line.

  Attributes:
    delimiter: tab, comma or pipe.
    has_header: the first line names the columns.
    columns: the column names in file order: the header's, or (without
      one) the user and item column names for the first two fields and
      `field_<i>` for the rest.
    user_at: the user column's position.
    item_at: the item column's position.
  """
  delimiter: str
  has_header: bool
  columns: Tuple[str, ...]
  user_at: int
  item_at: int


def ratings_format(first_line: str, user_column: str = USER_COLUMN,
                   item_column: str = ITEM_COLUMN,
                   delimiter: Optional[str] = None) -> RatingsFormat:
  """Detects the delimiter and header of a ratings file from its first line.

  The delimiter is the first of tab, comma, pipe that the line holds. The
  line is a header when it names `user_column` or `item_column` (the
  generated ratings.csv); otherwise the file has none and its first two
  fields are user and item (MovieLens u.data). `embeddings recommend` and
  `embeddings recommend-batch` both read --seen this way.

  Args:
    first_line: the file's first line.
    user_column: the header name of the user column.
    item_column: the header name of the item column.
    delimiter: the delimiter, when known (default: detected).

  Returns:
    The RatingsFormat.

  Raises:
    ValueError: no delimiter, a header without both columns, or a line of
      fewer than two fields.
  """
  line = first_line.rstrip("\r\n")
  delimiter = delimiter or next((d for d in DELIMITERS if d in line), None)
  if delimiter is None:
    raise ValueError(f"cannot tell the delimiter (tab, comma or pipe) of the "
                     f"first ratings line {line[:80]!r}")
  cells = [cell.strip() for cell in next(csv.reader([line],
                                                    delimiter=delimiter))]
  if user_column in cells or item_column in cells:
    missing = [c for c in (user_column, item_column) if c not in cells]
    if missing:
      raise ValueError(f"the ratings header {cells} lacks the column(s) "
                       f"{missing}")
    return RatingsFormat(delimiter, True, tuple(cells),
                         cells.index(user_column), cells.index(item_column))
  columns = (user_column, item_column) + tuple(
      f"field_{i}" for i in range(2, len(cells)))
  return RatingsFormat(delimiter, False, columns, 0, 1)


def read_seen(path: str, users: Optional[Iterable[str]] = None,
              user_column: str = USER_COLUMN,
              item_column: str = ITEM_COLUMN) -> Dict[str, Set[str]]:
  """Reads which items each user has rated.

  Accepts a file with a header naming `user_column` and `item_column` (the
  generated ratings.csv) or a headerless one whose first two fields are
  user and item (MovieLens u.data, tab-separated); see `ratings_format`.

  Args:
    path: the ratings file (local, or any path tf.io.gfile knows).
    users: keep only these users (None: all).
    user_column: header name of the user column.
    item_column: header name of the item column.

  Returns:
    user -> set of item tokens.

  Raises:
    ValueError: an undetectable format, or a line without the user or item
      field.
  """
  wanted = None if users is None else set(users)
  seen: Dict[str, Set[str]] = {}
  with files.open_text(path) as text:
    first = text.readline()
    if not first:
      return seen
    found = ratings_format(first, user_column, item_column)
    lines = text if found.has_header else itertools.chain([first], text)
    start = 2 if found.has_header else 1
    need = max(found.user_at, found.item_at)
    for number, row in enumerate(csv.reader(lines,
                                            delimiter=found.delimiter), start):
      if not row:
        continue
      if len(row) <= need:
        raise ValueError(f"{path}: line {number} has {len(row)} field(s), "
                         f"expected user and item at positions "
                         f"{found.user_at} and {found.item_at}")
      user = row[found.user_at].strip()
      if wanted is None or user in wanted:
        seen.setdefault(user, set()).add(row[found.item_at].strip())
  return seen


def score_refusal(source: str, *metadata: Mapping[str, Any]) -> Optional[str]:
  """Why ranking by some tables' dot products would be wrong, or None.

  Args:
    source: what the tables were read from, for the message (the export).
    *metadata: the user and item tables' metadata.

  Returns:
    The reason, when a table's metadata "score" is "model" (its model's
    prediction is not user . item + biases); None when all are "dot".
  """
  for described in metadata:
    if artifacts.model_score(described) != artifacts.DOT_SCORE:
      model_type = described.get("model_type") or "non-dot-product"
      return (f"{source} comes from a {model_type} model, whose prediction "
              f"is not a dot product of user and item vectors, so ranking by "
              f"them would not be the model's ranking; train and export an "
              f"mf model for retrieval")
  return None


def recommend(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int,
              item_bias: Optional[np.ndarray] = None,
              seen_rows: Optional[Sequence[Iterable[int]]] = None,
              candidate_rows: Optional[np.ndarray] = None):
  """Top-k unseen items per user by user . item (+ item bias), exactly.

  Args:
    user_vectors: [u, d].
    item_vectors: [n, d].
    k: items per user.
    item_bias: optional [n] item bias.
    seen_rows: per user, item rows to exclude.
    candidate_rows: item rows that may be recommended (default: all), e.g.
      the table's real rows without OOV buckets.

  Returns:
    (scores [u, k], item rows [u, k]) best first; -1 where a user has
    fewer than k unseen candidates.
  """
  item_vectors = np.asarray(item_vectors, dtype=np.float32)
  num_items = item_vectors.shape[0]
  if candidate_rows is None:
    candidate_rows = np.arange(num_items, dtype=np.int64)
  candidate_rows = np.asarray(candidate_rows, dtype=np.int64)
  position = np.full(num_items, -1, dtype=np.int64)
  position[candidate_rows] = np.arange(len(candidate_rows))
  exclude = None
  if seen_rows is not None:
    exclude = []
    for rows in seen_rows:
      rows = np.fromiter((int(r) for r in rows), dtype=np.int64)
      rows = position[rows[(rows >= 0) & (rows < num_items)]]
      exclude.append(rows[rows >= 0])
  bias = None if item_bias is None else np.asarray(item_bias)[candidate_rows]
  scores, ids = index_lib.top_k(np.asarray(user_vectors, dtype=np.float32),
                                item_vectors[candidate_rows], k,
                                item_bias=bias, exclude=exclude)
  return scores, index_lib.rows_subset(candidate_rows, ids)


def recommendations_frame(user_table: artifacts.EmbeddingTable,
                          item_table: artifacts.EmbeddingTable,
                          users: Sequence[str], k: int = 10,
                          seen: Optional[Mapping[str, Set[str]]] = None,
                          item_bias: Optional[np.ndarray] = None):
  """Top-k unseen items for named users, as a pandas DataFrame.

  Args:
    user_table: the user embedding table.
    item_table: the item embedding table (same dimension, same model).
    users: user tokens.
    k: items per user.
    seen: user -> rated item tokens, never recommended to that user.
    item_bias: optional [item rows] bias added to every score
      (core.artifacts.find_bias).

  Returns:
    A DataFrame with the columns user, rank (1 = best), item (the token),
    name (the item's display name, None without one) and score
    (user . item + item bias), users in the given order; a user with fewer
    than k unseen items has fewer lines.

  Raises:
    KeyError: a user is not a real row of the user table.
    ValueError: the tables' dimensions differ, or they come from a model
      whose prediction is not their dot product (see score_refusal).
  """
  # pylint: disable-next=g-import-not-at-top
  import pandas as pd  # for notebooks; the command starts without it
  refusal = score_refusal(f"table {item_table.name!r}", user_table.metadata,
                          item_table.metadata)
  if refusal:
    raise ValueError(refusal)
  if user_table.dimension != item_table.dimension:
    raise ValueError(
        f"user table {user_table.name!r} has dimension "
        f"{user_table.dimension} and item table {item_table.name!r} "
        f"{item_table.dimension}: scoring needs the user and item tables of "
        f"one matrix-factorisation model")
  user_rows = user_table.row_of()
  real_users = set(int(r) for r in user_table.real_rows)
  missing = [u for u in users if user_rows.get(u) not in real_users]
  if missing:
    raise KeyError(f"users not in table {user_table.name!r}: "
                   f"{', '.join(missing[:10])}")
  item_rows = item_table.row_of()
  seen = seen or {}
  seen_rows = [[item_rows[t] for t in seen.get(u, ()) if t in item_rows]
               for u in users]
  scores, ids = recommend(user_table.vectors[[user_rows[u] for u in users]],
                          item_table.vectors, k, item_bias=item_bias,
                          seen_rows=seen_rows,
                          candidate_rows=item_table.real_rows)
  names = commands.display_names(item_table)
  lines = []
  for user, row_scores, row_ids in zip(users, scores, ids):
    for rank, (row, score) in enumerate(zip(row_ids, row_scores), 1):
      if row >= 0:
        token = item_table.tokens[row]
        lines.append((user, rank, token, names.get(token), float(score)))
  return pd.DataFrame(lines, columns=["user", "rank", "item", "name",
                                      "score"])


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings recommend` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings recommend",
      description="Top-k unrated items for a few users, by user . item + "
                  "item bias (matrix-factorisation exports only).",
      formatter_class=flags.DefaultsHelpFormatter)
  commands.add_embeddings_flag(parser, table_directory=False)
  parser.add_argument("--users", required=True,
                      help="comma-separated user tokens (required)")
  parser.add_argument("-k", "--top_k", type=int, default=10,
                      help="items per user")
  parser.add_argument("--seen", default=None,
                      help="ratings file whose items are excluded per user "
                           "(ratings.csv with header, or MovieLens u.data; "
                           "delimiter and header are detected) (default: "
                           "nothing excluded)")
  parser.add_argument("--user_table", default="user",
                      help="the user feature's table")
  parser.add_argument("--item_table", default="movie",
                      help="the item feature's table")
  parser.add_argument("--no_bias", action="store_true",
                      help="ignore an exported item bias table")
  commands.add_names_flag(parser)
  parser.add_argument("--json", action="store_true",
                      help="one JSON object per user")
  return parser


def _print_user(user: str, frame, rated: int, with_bias: bool,
                as_json: bool) -> None:
  """Prints one user's recommendations (lines of recommendations_frame)."""
  names = [name for name in frame["name"]]
  if as_json:
    print(json.dumps({"user": user, "items": list(frame["item"]),
                      "scores": [float(s) for s in frame["score"]],
                      "titles": names}))
    return
  print(f"top {len(frame)} for user {user} ({rated} rated items excluded; "
        f"score = user.item{' + item bias' if with_bias else ''}):")
  for rank, item, name, score in zip(frame["rank"], frame["item"], names,
                                     frame["score"]):
    print(commands.item_line(f"{rank:>4}  {score:+.4f}", item,
                             {item: name} if name else {}))


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings recommend`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    0 on success, 1 when a user is unknown, 2 when a table is missing or
    comes from a model whose prediction is not a dot product.
  """
  args = flag_parser().parse_args(argv)
  users = [u.strip() for u in args.users.split(",") if u.strip()]
  try:
    user_table = commands.load_table(COMMAND, args.embeddings,
                                     args.user_table)
    item_table = commands.load_table(COMMAND, args.embeddings,
                                     args.item_table)
    item_table = commands.with_names(COMMAND, item_table, args.names)
    refusal = score_refusal(args.embeddings, user_table.metadata,
                            item_table.metadata)
    if refusal:
      raise commands.CommandError(COMMAND, refusal, commands.MISSING_TABLE)
    bias = None if args.no_bias else artifacts.find_bias(args.embeddings,
                                                         item_table)
    seen = commands.read_file(COMMAND, read_seen, args.seen, users)
    frame = recommendations_frame(user_table, item_table, users, args.top_k,
                                  seen=seen, item_bias=bias)
  except commands.CommandError as error:
    return commands.report(error)
  except KeyError as error:
    # recommendations_frame's one KeyError: users missing from the table.
    return commands.report(commands.CommandError(COMMAND, error.args[0],
                                                 UNKNOWN_USER))
  for user in users:
    _print_user(user, frame[frame["user"] == user],
                len((seen or {}).get(user, ())), bias is not None, args.json)
  commands.summary(COMMAND, f"top {args.top_k} unseen items for "
                   f"{len(users)} user(s) from {args.embeddings} (tables "
                   f"{user_table.name!r}, {item_table.name!r}), printed above")
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
