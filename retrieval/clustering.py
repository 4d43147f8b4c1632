"""`embeddings cluster`: k-means over an embedding table, members per cluster.

  embeddings cluster --embeddings out/run/embeddings --table movie -k 20 \\
      [--output clusters.csv]

Vectors are L2-normalised first, so clusters group rows by the same cosine
similarity `embeddings neighbors` uses (spherical k-means). faiss.Kmeans
does the work rather than scikit-learn's KMeans: each Lloyd iteration is
one float32 matrix product of rows against centroids on every core, so
tables of hundreds of thousands of rows cluster while the user waits. Each
cluster is listed by size with the members closest to its centroid first,
titled by the export's names (or --names).
"""

import argparse
import csv
import dataclasses
import io
import sys
from typing import Dict, List, Mapping, Optional, Sequence

import faiss
import numpy as np

from core import files
from core import flags
from retrieval import commands
from retrieval import index as index_lib

COMMAND = "cluster"


@dataclasses.dataclass
class Clustering:
  """A k-means result.

  Attributes:
    assignments: int64 [n] cluster of every input row.
    centroids: float32 [k, d] unit-length centroids.
    similarity: float32 [n] cosine similarity of each row to its centroid.
  """
  assignments: np.ndarray
  centroids: np.ndarray
  similarity: np.ndarray

  def members(self, cluster: int) -> np.ndarray:
    """Rows of a cluster, most central first."""
    rows = np.flatnonzero(self.assignments == cluster)
    return rows[np.argsort(-self.similarity[rows], kind="stable")]

  def sizes(self) -> np.ndarray:
    """Rows per cluster."""
    return np.bincount(self.assignments, minlength=len(self.centroids))


def kmeans(vectors: np.ndarray, k: int, iterations: int = 25,
           restarts: int = 3, seed: int = 0) -> Clustering:
  """Spherical k-means (cosine) over the rows of a table.

  Args:
    vectors: [n, d] rows.
    k: clusters (at most n).
    iterations: Lloyd iterations per run.
    restarts: independent runs; the one with the best objective is kept.
    seed: random seed, for reproducible clusters.

  Returns:
    The Clustering.

  Raises:
    ValueError: k < 1 or k > n.
  """
  data = index_lib.normalize(vectors)
  n, d = data.shape
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}] for {n} rows, got {k}")
  # faiss trains on at most max_points_per_centroid rows per cluster; the
  # bound is raised so that every row takes part. Its lower bound only
  # prints a warning for small tables, which use every row anyway.
  model = faiss.Kmeans(d, k, niter=iterations, nredo=restarts, seed=seed,
                       spherical=True, verbose=False,
                       min_points_per_centroid=1,
                       max_points_per_centroid=max(256, n // k + 1))
  model.train(data)
  centroids = index_lib.normalize(model.centroids)
  similarity, assignments = model.index.search(data, 1)
  return Clustering(assignments=assignments[:, 0].astype(np.int64),
                    centroids=centroids,
                    similarity=similarity[:, 0].astype(np.float32))


def describe(clustering: Clustering, tokens: Sequence[str],
             names: Mapping[str, str], show: int = 10) -> str:
  """A printable list of clusters, largest first, with central members.

  Args:
    clustering: from kmeans().
    tokens: the clustered rows' tokens.
    names: token -> title, shown next to tokens when known.
    show: members listed per cluster.

  Returns:
    The text.
  """
  lines = []
  order = np.argsort(-clustering.sizes(), kind="stable")
  for cluster in order:
    members = clustering.members(int(cluster))
    if len(members) == 0:
      continue
    lines.append(f"cluster {int(cluster)}: {len(members)} members")
    for row in members[:show]:
      lines.append(commands.item_line(
          f"    {clustering.similarity[row]:+.3f}", tokens[row], names))
    if len(members) > show:
      lines.append(f"    ... {len(members) - show} more")
  return "\n".join(lines)


def write_assignments(path: str, clustering: Clustering,
                      tokens: Sequence[str],
                      names: Optional[Mapping[str, str]] = None) -> None:
  """Writes `token,cluster,similarity[,title]` CSV, one line per row.

  Args:
    path: the CSV to write (local, gs://, ...).
    clustering: from kmeans().
    tokens: the clustered rows' tokens.
    names: token -> title; adds the title column when given.
  """
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  header = ["token", "cluster", "similarity"] + (["title"] if names else [])
  writer.writerow(header)
  for row, token in enumerate(tokens):
    line = [token, int(clustering.assignments[row]),
            f"{clustering.similarity[row]:.6f}"]
    if names:
      line.append(names.get(token, ""))
    writer.writerow(line)
  files.write_text(path, buffer.getvalue())


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings cluster` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings cluster",
      description="k-means (cosine) over an embedding table.",
      formatter_class=flags.DefaultsHelpFormatter)
  commands.add_embeddings_flag(parser, table_directory=True)
  parser.add_argument("--table", default="movie", help="feature name")
  parser.add_argument("-k", "--clusters", type=int, default=20,
                      help="number of clusters")
  parser.add_argument("--iterations", type=int, default=25,
                      help="Lloyd iterations per run")
  parser.add_argument("--restarts", type=int, default=3,
                      help="independent runs; the best is kept")
  parser.add_argument("--seed", type=int, default=0, help="random seed")
  commands.add_names_flag(parser)
  parser.add_argument("--show", type=int, default=10,
                      help="members listed per cluster")
  parser.add_argument("--output", default=None,
                      help="also write every row's cluster to this CSV "
                           "(default: none)")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
  """Entry point of `embeddings cluster`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    Cluster id (as a string) -> member tokens, most central first.
  """
  args = flag_parser().parse_args(argv)
  try:
    table = commands.with_names(
        COMMAND, commands.load_table(COMMAND, args.embeddings, args.table),
        args.names)
  except commands.CommandError as error:
    raise SystemExit(str(error)) from None
  names = commands.display_names(table)
  rows = table.real_rows
  tokens = [table.tokens[r] for r in rows]
  try:
    clustering = kmeans(table.vectors[rows], args.clusters,
                        iterations=args.iterations, restarts=args.restarts,
                        seed=args.seed)
  except ValueError as error:
    raise SystemExit(f"embeddings {COMMAND}: {error}") from None
  print(f"{args.clusters} clusters of {len(rows)} rows of table "
        f"{table.name!r} (k-means, cosine):")
  print(describe(clustering, tokens, names, show=args.show))
  where = "printed above"
  if args.output:
    write_assignments(args.output, clustering, tokens, names)
    where += f"; every row's cluster in {args.output}"
  commands.summary(COMMAND, f"{args.clusters} clusters of {len(rows)} rows "
                   f"of table {table.name!r} of {args.embeddings}, {where}")
  return {str(c): [tokens[r] for r in clustering.members(c)]
          for c in range(args.clusters)}


if __name__ == "__main__":
  run(sys.argv[1:])
