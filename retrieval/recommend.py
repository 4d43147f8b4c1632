"""`embeddings recommend`: top-k items a user has not rated, for a few users.

  embeddings recommend --embeddings out/run/embeddings --users u1,u7 -k 10 \\
      --seen data/ratings.csv --names data/items.csv

A matrix-factorisation model predicts mu + b_user + b_item + user . item, so
for one user the items rank by `user . item + b_item` (mu and b_user do not
change the order). The item bias is used when the export holds one (a
one-column table `bias_<item>`, see core.artifacts.find_bias); the printed
score is that ranking score. Items in the user's ratings (`--seen`) and OOV
rows are never recommended. Every user is scored against every item exactly
(retrieval/index.py); for all users at once use the Beam job
`embeddings recommend-batch` (workflows/recommend_batch.py).
"""

import argparse
import csv
import json
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set

import numpy as np
import tensorflow as tf

from core import artifacts
from retrieval import commands
from retrieval import index as index_lib

COMMAND = "recommend"
USER_COLUMN = "user_id"
ITEM_COLUMN = "item_id"


def _delimiter(line: str) -> str:
  if "\t" in line:
    return "\t"
  if "," in line:
    return ","
  if "|" in line:
    return "|"
  raise ValueError(f"cannot tell the delimiter of ratings line {line!r}")


def read_seen(path: str, users: Optional[Iterable[str]] = None,
              user_column: str = USER_COLUMN,
              item_column: str = ITEM_COLUMN) -> Dict[str, Set[str]]:
  """Reads which items each user has rated.

  Accepts a CSV with a header naming `user_column` and `item_column` (the
  generated ratings.csv) or a headerless file whose first two fields are user
  and item (MovieLens u.data, tab-separated). The delimiter (tab, comma,
  pipe) is detected from the first line.

  Args:
    path: the ratings file (any tf.io.gfile path).
    users: keep only these users (None: all).
    user_column: header name of the user column.
    item_column: header name of the item column.

  Returns:
    user -> set of item tokens.

  Raises:
    ValueError: a header without the named columns, or a short line.
  """
  wanted = None if users is None else set(users)
  seen: Dict[str, Set[str]] = {}
  with tf.io.gfile.GFile(path, "r") as text:
    first = text.readline()
    if not first:
      return seen
    delimiter = _delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter))
    header = [cell.strip() for cell in header]
    if user_column in header or item_column in header:
      missing = [c for c in (user_column, item_column) if c not in header]
      if missing:
        raise ValueError(f"{path}: header {header} lacks {missing}")
      user_at, item_at = header.index(user_column), header.index(item_column)
      lines = text
    else:
      user_at, item_at = 0, 1
      lines = _chain([first], text)
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), 1):
      if not row:
        continue
      if len(row) <= max(user_at, item_at):
        raise ValueError(f"{path}: line {number} has {len(row)} fields, "
                         f"expected user and item at {user_at}, {item_at}")
      user = row[user_at].strip()
      if wanted is None or user in wanted:
        seen.setdefault(user, set()).add(row[item_at].strip())
  return seen


def _chain(head: List[str], rest: Iterable[str]) -> Iterable[str]:
  yield from head
  yield from rest


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


def recommend_for(users: Sequence[str], user_table: artifacts.EmbeddingTable,
                  item_table: artifacts.EmbeddingTable, k: int,
                  seen: Optional[Mapping[str, Set[str]]] = None,
                  item_bias: Optional[np.ndarray] = None) -> List[Dict]:
  """Recommendations for named users from two tables.

  Args:
    users: user tokens.
    user_table: the user embedding table.
    item_table: the item embedding table (same dimension).
    k: items per user.
    seen: user -> rated item tokens, excluded.
    item_bias: optional [item rows] bias.

  Returns:
    One dict per user: {"user", "items": [token...], "scores": [...]}.

  Raises:
    KeyError: a user is not in the user table.
    ValueError: the tables' dimensions differ.
  """
  if user_table.vectors.shape[1] != item_table.vectors.shape[1]:
    raise ValueError(
        f"user table {user_table.name!r} has dimension "
        f"{user_table.vectors.shape[1]} and item table {item_table.name!r} "
        f"{item_table.vectors.shape[1]}: scoring needs the user and item "
        f"tables of one matrix-factorisation model")
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
  results = []
  for user, row_scores, row_ids in zip(users, scores, ids):
    keep = row_ids >= 0
    results.append({"user": user,
                    "items": [item_table.tokens[i] for i in row_ids[keep]],
                    "scores": [float(s) for s in row_scores[keep]]})
  return results


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings recommend",
      description="Top-k unrated items for a few users.")
  commands.add_embeddings_flag(parser, table_directory=False)
  parser.add_argument("--users", required=True,
                      help="comma-separated user tokens")
  parser.add_argument("-k", "--top_k", type=int, default=10)
  parser.add_argument("--seen", default=None,
                      help="ratings file whose items are excluded per user "
                           "(ratings.csv with header, or MovieLens u.data)")
  parser.add_argument("--user_table", default="user")
  parser.add_argument("--item_table", default="movie")
  parser.add_argument("--no_bias", action="store_true",
                      help="ignore an exported item bias table")
  commands.add_names_flag(parser)
  parser.add_argument("--json", action="store_true",
                      help="one JSON object per user")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings recommend`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    0 on success, 1 when a user is unknown, 2 when a table is.
  """
  args = _parser().parse_args(argv)
  users = [u.strip() for u in args.users.split(",") if u.strip()]
  try:
    user_table = commands.load_table(COMMAND, args.embeddings,
                                     args.user_table)
    item_table = commands.load_table(COMMAND, args.embeddings,
                                     args.item_table)
  except commands.CommandError as error:
    return commands.report(error)
  bias = None if args.no_bias else artifacts.find_bias(args.embeddings,
                                                       item_table)
  seen = read_seen(args.seen, users) if args.seen else None
  names = commands.read_names(args.names)
  try:
    results = recommend_for(users, user_table, item_table, args.top_k,
                            seen=seen, item_bias=bias)
  except KeyError as error:
    # recommend_for's one KeyError: users missing from the user table.
    return commands.report(commands.CommandError(COMMAND, error.args[0], 1))
  for result in results:
    if args.json:
      print(json.dumps({**result, "titles": [names.get(t) for t in
                                             result["items"]]}))
      continue
    rated = len(seen.get(result["user"], ())) if seen else 0
    print(f"top {len(result['items'])} for user {result['user']} "
          f"({rated} rated items excluded; score = user.item"
          f"{' + item bias' if bias is not None else ''}):")
    for rank, (item, score) in enumerate(zip(result["items"],
                                             result["scores"]), 1):
      print(commands.item_line(f"{rank:>4}  {score:+.4f}", item, names))
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
