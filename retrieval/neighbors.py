"""`embeddings neighbors`: the nearest rows of a table by cosine similarity.

  embeddings neighbors --embeddings out/run/embeddings --table movie \\
      --item "Toy Story (1995)" -k 10 --names $ML100K_DIR/u.item

looks the item up by token or title, searches the table's real rows (OOV
buckets are never returned) and prints rank, similarity, token and title.
Small tables are searched exactly; tables above `--approximate_above` rows
use the calibrated faiss IVF index of retrieval/approximate.py (or force either
with --exact / --approximate).

`neighbor_precision` measures how well a table recovers known groups (the
generator's planted clusters): the mean fraction of each item's k nearest
neighbours that share its group.
"""

import argparse
import json
import sys
from typing import List, Mapping, Optional, Sequence

import numpy as np

from core import artifacts
from retrieval import approximate as approximate_lib
from retrieval import catalog
from retrieval import commands
from retrieval import index as index_lib

COMMAND = "neighbors"


def neighbors(table: artifacts.EmbeddingTable, rows: Sequence[int], k: int,
              approximate: Optional[bool] = None,
              approximate_above: int = 200_000) -> List[List[tuple]]:
  """The k nearest real rows of each given row, itself excluded.

  Args:
    table: the table.
    rows: query rows.
    k: neighbours per row.
    approximate: force approximate (True) or exact (False) search; None
      chooses by size.
    approximate_above: real rows above which search is approximate.

  Returns:
    Per query row, a list of (row, cosine similarity), most similar first.
  """
  candidates = table.real_rows
  search_index = approximate_lib.build_index(table.vectors[candidates],
                                       approximate=approximate,
                                       threshold=approximate_above)
  queries = table.vectors[np.asarray(rows, dtype=np.int64)]
  # One extra result covers the query itself, dropped below.
  scores, ids = search_index.search(queries, k + 1)
  ids = index_lib.rows_subset(candidates, ids)
  results = []
  for row, row_ids, row_scores in zip(rows, ids, scores):
    found = [(int(i), float(s)) for i, s in zip(row_ids, row_scores)
             if i >= 0 and i != row]
    results.append(found[:k])
  return results


def neighbor_precision(vectors: np.ndarray, tokens: Sequence[str],
                       truth: Mapping[str, str], k: int = 10,
                       approximate: bool = False) -> float:
  """Mean fraction of an item's k nearest neighbours in its own true group.

  Only rows whose token has a truth label take part, as queries and as
  neighbours; each item's own row is excluded from its neighbours.

  Args:
    vectors: [n, d] table.
    tokens: row names.
    truth: token -> group (e.g. truth/item_clusters.csv).
    k: neighbours per item.
    approximate: use the approximate index (for big tables).

  Returns:
    Precision in [0, 1].

  Raises:
    ValueError: fewer than k + 1 rows have a truth label.
  """
  rows = np.array([row for row, token in enumerate(tokens) if token in truth],
                  dtype=np.int64)
  if len(rows) < k + 1:
    raise ValueError(f"{len(rows)} rows have a truth label; need at least "
                     f"k + 1 = {k + 1}")
  labels = np.array([truth[tokens[row]] for row in rows])
  sub = np.asarray(vectors, dtype=np.float32)[rows]
  own = np.arange(len(rows))
  if approximate:
    search_index = approximate_lib.ApproximateIndex(sub)
    search_index.calibrate()
    _, found = search_index.search(sub, k + 1)
    # Drop each item's own row; a slot the index left empty (-1) or the
    # surplus k+1-th result is padded with the item itself, which never
    # counts as a hit below.
    ids = np.empty((len(rows), k), dtype=np.int64)
    for me, row_ids in enumerate(found):
      kept = [int(i) for i in row_ids if i != me and i >= 0][:k]
      ids[me] = kept + [me] * (k - len(kept))
  else:
    _, ids = index_lib.ExactIndex(sub).search(
        sub, k, exclude=[[i] for i in own])
    ids = np.where(ids >= 0, ids, own[:, None])
  hits = (labels[ids] == labels[:, None]) & (ids != own[:, None])
  return float(hits.mean())


def format_results(table: artifacts.EmbeddingTable, query_row: int,
                   results: Sequence[tuple],
                   names: Mapping[str, str]) -> str:
  """A printable table of one query's neighbours.

  Args:
    table: the table searched.
    query_row: the query's row.
    results: (row, similarity) pairs from neighbors().
    names: token -> title.

  Returns:
    A heading line and one line per neighbour.
  """
  token = table.tokens[query_row]
  title = names.get(token)
  heading = f"nearest neighbours of {token}" + (f" ({title})" if title else "")
  lines = [f"{heading} in table {table.name!r}, by cosine similarity:"]
  for rank, (row, score) in enumerate(results, 1):
    lines.append(commands.item_line(f"{rank:>4}  {score:+.4f}",
                                    table.tokens[row], names))
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings neighbors",
      description="Nearest neighbours of items by cosine similarity.")
  commands.add_embeddings_flag(parser, table_directory=True)
  parser.add_argument("--table", default="movie", help="feature name")
  parser.add_argument("--item", action="append", required=True,
                      help="token or title to look up (repeatable)")
  parser.add_argument("-k", "--top_k", type=int, default=10)
  commands.add_names_flag(parser)
  search = parser.add_mutually_exclusive_group()
  search.add_argument("--exact", dest="approximate", action="store_false",
                      default=None, help="always search exactly")
  search.add_argument("--approximate", dest="approximate",
                      action="store_true", help="always use the ANN index")
  parser.add_argument("--approximate_above", type=int, default=200_000,
                      help="rows above which search is approximate")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object per query instead")
  return parser


def _query_rows(queries: Sequence[str], table: artifacts.EmbeddingTable,
                names: Mapping[str, str]) -> List[int]:
  """The real row each query (a token or a title) names.

  Raises:
    CommandError: a query names no row or several (status 1).
  """
  try:
    return [catalog.find_row(query, table.tokens, names, table.real_rows)
            for query in queries]
  except catalog.UnknownItemError as error:
    raise commands.CommandError(COMMAND, error, 1) from None


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings neighbors`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    0 on success, 1 when an item is not found, 2 when the table is.
  """
  args = _parser().parse_args(argv)
  try:
    table = commands.load_table(COMMAND, args.embeddings, args.table)
    names = commands.read_names(args.names)
    rows = _query_rows(args.item, table, names)
  except commands.CommandError as error:
    return commands.report(error)
  results = neighbors(table, rows, args.top_k, approximate=args.approximate,
                      approximate_above=args.approximate_above)
  for row, found in zip(rows, results):
    if args.json:
      print(json.dumps({
          "item": table.tokens[row], "title": names.get(table.tokens[row]),
          "neighbors": [{"item": table.tokens[i], "title": names.get(
              table.tokens[i]), "similarity": round(s, 6)} for i, s in found]}))
    else:
      print(format_results(table, row, found, names))
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
