"""`embeddings neighbors`: the nearest rows of a table by cosine similarity.

  embeddings neighbors --embeddings out/run/embeddings --table movie \\
      --item "Toy Story (1995)" -k 10

looks the item up by token or title (the export's names, or --names),
searches the table's real rows (OOV buckets are never returned) and prints
rank, similarity, training count, token and title. Neighbours seen in fewer
than --min_count training rows (default 5) are left out: their vectors have
barely moved from their random start, so their similarity says little.
Exports without counts search every real row. Small tables are searched
exactly; tables above `--approximate_above` rows use the calibrated faiss
IVF index of retrieval/approximate.py (or force either with --exact /
--approximate).

`neighbor_precision` measures how well a table recovers known groups (the
generator's planted clusters): the mean fraction of each item's k nearest
neighbours that share its group.

From Python, `neighbors_frame` gives the same neighbours as a DataFrame.
"""

import argparse
import json
import sys
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from core import artifacts
from core import flags
from retrieval import approximate as approximate_lib
from retrieval import catalog
from retrieval import commands
from retrieval import index as index_lib

COMMAND = "neighbors"
DEFAULT_MIN_COUNT = 5
DEFAULT_APPROXIMATE_ABOVE = 200_000


def eligible_rows(table: artifacts.EmbeddingTable,
                  min_count: int = 0) -> np.ndarray:
  """The rows a neighbour search may return.

  Args:
    table: the table.
    min_count: leave out rows seen in fewer training rows than this (the
      table's counts); 0, or a table without counts, keeps every real row.

  Returns:
    int64 rows, ascending: real rows (no OOV buckets, no default row) with
    enough training rows.
  """
  rows = table.real_rows
  if min_count > 0 and table.counts is not None:
    rows = rows[table.counts[rows] >= min_count]
  return rows


def neighbors(table: artifacts.EmbeddingTable, rows: Sequence[int], k: int,
              approximate: Optional[bool] = None,
              approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
              min_count: int = 0) -> List[List[tuple]]:
  """The k nearest real rows of each given row, itself excluded.

  Args:
    table: the table.
    rows: query rows.
    k: neighbours per row.
    approximate: force approximate (True) or exact (False) search; None
      chooses by size.
    approximate_above: real rows above which search is approximate.
    min_count: neighbours need at least this many training rows (see
      eligible_rows); the queries themselves need not.

  Returns:
    Per query row, a list of (row, cosine similarity), most similar first.
  """
  candidates = eligible_rows(table, min_count)
  if len(candidates) == 0:
    return [[] for _ in rows]
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


def neighbors_frame(table: artifacts.EmbeddingTable,
                    items: Union[str, Sequence[str]], k: int = 10,
                    min_count: int = DEFAULT_MIN_COUNT,
                    approximate: Optional[bool] = None,
                    approximate_above: int = DEFAULT_APPROXIMATE_ABOVE):
  """The nearest neighbours of some items, as a pandas DataFrame.

  Args:
    table: the table (its names, when it has them, find items by title and
      fill the name column; see commands.with_names).
    items: one item or several, each a token or a title (exact, then
      case-insensitive, then a unique fragment: catalog.find_row).
    k: neighbours per item.
    min_count: leave out neighbours with fewer training rows than this
      (table counts); ignored when the table has no counts.
    approximate: force approximate (True) or exact (False) search; None
      chooses by size.
    approximate_above: real rows above which search is approximate.

  Returns:
    A DataFrame with the columns query (the item's token), rank (1 =
    nearest), token, name (None without one), similarity (cosine) and
    count (training rows, <NA> without counts), items in the given order.

  Raises:
    catalog.UnknownItemError: an item names no row, or several.
  """
  # pylint: disable-next=g-import-not-at-top
  import pandas as pd  # for notebooks; the command starts without it
  items = [items] if isinstance(items, str) else list(items)
  names = commands.display_names(table)
  rows = [catalog.find_row(item, table.tokens, names, table.real_rows)
          for item in items]
  results = neighbors(table, rows, k, approximate=approximate,
                      approximate_above=approximate_above,
                      min_count=min_count)
  lines = []
  for row, found in zip(rows, results):
    for rank, (neighbor, similarity) in enumerate(found, 1):
      token = table.tokens[neighbor]
      count = None if table.counts is None else int(table.counts[neighbor])
      lines.append((table.tokens[row], rank, token, names.get(token),
                    similarity, count))
  frame = pd.DataFrame(lines, columns=["query", "rank", "token", "name",
                                       "similarity", "count"])
  frame["count"] = frame["count"].astype("Int64")
  return frame


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


def format_results(table: artifacts.EmbeddingTable, query: str,
                   frame) -> str:
  """A printable table of one query's neighbours.

  Args:
    table: the table searched.
    query: the query's token.
    frame: the query's lines of neighbors_frame.

  Returns:
    A heading line and one line per neighbour: rank, similarity, the
    training count (when the table has counts), token, name.
  """
  names = commands.display_names(table)
  title = names.get(query)
  heading = f"nearest neighbours of {query}" + (f" ({title})" if title else "")
  with_counts = table.counts is not None
  lines = [f"{heading} in table {table.name!r}, by cosine similarity"
           f"{' (count: training rows)' if with_counts else ''}:"]
  for rank, token, similarity, count in zip(
      frame["rank"], frame["token"], frame["similarity"], frame["count"]):
    lead = f"{rank:>4}  {similarity:+.4f}"
    if with_counts:
      lead += f"  {int(count):>7}"
    lines.append(commands.item_line(lead, token, names))
  return "\n".join(lines)


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings neighbors` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings neighbors",
      description="Nearest neighbours of items by cosine similarity.",
      formatter_class=flags.DefaultsHelpFormatter)
  commands.add_embeddings_flag(parser, table_directory=True)
  parser.add_argument("--table", default="movie", help="feature name")
  parser.add_argument("--item", action="append", required=True,
                      help="token or title to look up (repeatable) "
                           "(required)")
  parser.add_argument("-k", "--top_k", type=int, default=10,
                      help="neighbours per item")
  parser.add_argument("--min_count", type=int, default=DEFAULT_MIN_COUNT,
                      help="leave out neighbours seen in fewer training "
                           "rows (0: keep all; off for exports without "
                           "counts)")
  commands.add_names_flag(parser)
  search = parser.add_mutually_exclusive_group()
  search.add_argument("--exact", dest="approximate", action="store_false",
                      default=None,
                      help="always search exactly (default: exact up to "
                           "--approximate_above rows)")
  search.add_argument("--approximate", dest="approximate",
                      action="store_true",
                      help="always use the ANN index (default: above "
                           "--approximate_above rows)")
  parser.add_argument("--approximate_above", type=int,
                      default=DEFAULT_APPROXIMATE_ABOVE,
                      help="rows above which search is approximate")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object per query instead")
  return parser


def _query_tokens(queries: Sequence[str],
                  table: artifacts.EmbeddingTable) -> List[str]:
  """The token of the real row each query (a token or a title) names.

  Raises:
    CommandError: a query names no row or several (status 1).
  """
  names = commands.display_names(table)
  try:
    return [table.tokens[catalog.find_row(query, table.tokens, names,
                                          table.real_rows)]
            for query in queries]
  except catalog.UnknownItemError as error:
    raise commands.CommandError(COMMAND, error, 1) from None


def _json_line(table: artifacts.EmbeddingTable, query: str, frame) -> str:
  names = commands.display_names(table)
  return json.dumps({
      "item": query, "title": names.get(query),
      "neighbors": [{"item": token, "title": name, "similarity":
                     round(float(similarity), 6),
                     "count": None if table.counts is None else int(count)}
                    for token, name, similarity, count in zip(
                        frame["token"], frame["name"], frame["similarity"],
                        frame["count"])]})


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings neighbors`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    0 on success, 1 when an item is not found, 2 when the table is.
  """
  args = flag_parser().parse_args(argv)
  try:
    table = commands.with_names(
        COMMAND, commands.load_table(COMMAND, args.embeddings, args.table),
        args.names)
    if args.min_count > 0 and table.counts is None:
      print(f"embeddings {COMMAND}: note: table {table.name!r} has no "
            f"training counts, so --min_count {args.min_count} is off",
            file=sys.stderr)
    queries = _query_tokens(args.item, table)
  except commands.CommandError as error:
    return commands.report(error)
  frame = neighbors_frame(table, queries, args.top_k,
                          min_count=args.min_count,
                          approximate=args.approximate,
                          approximate_above=args.approximate_above)
  for query in queries:
    lines = frame[frame["query"] == query]
    print(_json_line(table, query, lines) if args.json else
          format_results(table, query, lines))
  commands.summary(COMMAND, f"{args.top_k} nearest neighbours of "
                   f"{len(args.item)} item(s) in table {table.name!r} of "
                   f"{args.embeddings}, printed above")
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
