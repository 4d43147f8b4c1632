"""Exact search over an embedding table: blocked top-k by inner product.

Exact search (`top_k`, `ExactIndex`) is a batched matrix product followed by a
two-stage top-k selection, in blocks of queries x items so memory stays at
`query_block * item_block` floats whatever the table size. The product runs
in BLAS on every core; the selection is what decides the speed, because a
plain `np.argpartition` over every row of scores touches each score several
times in a single thread. So for every block we first take the maximum over
`groups` strided slabs of the score matrix (one vectorised pass), pick the k
best slab columns, and only partition the k * groups scores in those
columns. The k best scores of a row always lie in its k best columns (each
of them is at most its column's maximum), so the result is exact.

The approximate index for large tables, calibrated against this exact
search, is in retrieval/approximate.py. `python -m benchmarks.retrieval_bench`
measures both against faiss' flat index; the README lists the results.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

COSINE = "cosine"
DOT = "dot"
METRICS = (COSINE, DOT)

# 256 x 65536 float32 scores = 64 MiB per block: large enough for BLAS to run
# at full speed, small enough to stay in memory next to big tables.
DEFAULT_QUERY_BLOCK = 256
DEFAULT_ITEM_BLOCK = 65536
# Strided slabs per block for the two-stage selection. More slabs make the
# first partition (over item_block / groups slab maxima) cheaper and the
# second (over k * groups candidates) dearer; 32 keeps both small for the
# default item block and k around 10.
DEFAULT_GROUPS = 32

Exclusions = Optional[Sequence[Optional[Sequence[int]]]]
# Excluded (query row, item row) pairs as two equal-length int arrays: what
# callers holding many queries' exclusions as arrays pass instead of lists.
ExcludedPairs = Optional[Tuple[np.ndarray, np.ndarray]]


def normalize(vectors: np.ndarray) -> np.ndarray:
  """Scales rows to unit L2 norm (rows of zeros stay zero).

  Args:
    vectors: [n, d] array.

  Returns:
    float32 [n, d], C-contiguous.
  """
  vectors = np.asarray(vectors, dtype=np.float32)
  if vectors.ndim != 2:
    raise ValueError(f"expected a 2-D array of vectors, got shape "
                     f"{vectors.shape}")
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0),
                              dtype=np.float32)


def _block_candidates(scores: np.ndarray, k: int,
                      groups: int) -> Tuple[np.ndarray, np.ndarray]:
  """The k best (score, column) of every row of one score block, unsorted."""
  rows, width = scores.shape
  if width <= k:
    columns = np.broadcast_to(np.arange(width), (rows, width))
    return scores, np.array(columns)
  slab = width // groups
  if groups <= 1 or slab < 4 * k:
    columns = np.argpartition(scores, -k, axis=1)[:, -k:]
    return np.take_along_axis(scores, columns, axis=1), columns
  head = slab * groups
  # Column j of `maxima` is the best of scores[:, j], scores[:, j + slab], ...
  maxima = scores[:, :head].reshape(rows, groups, slab).max(axis=1)
  best = np.argpartition(maxima, -k, axis=1)[:, -k:]
  columns = (best[:, :, None] +
             slab * np.arange(groups)[None, None, :]).reshape(rows, k * groups)
  if head < width:
    # The ragged tail (fewer than `groups` columns) joins every row's pool.
    tail = np.broadcast_to(np.arange(head, width), (rows, width - head))
    columns = np.concatenate([columns, tail], axis=1)
  pool = np.take_along_axis(scores, columns, axis=1)
  keep = np.argpartition(pool, -k, axis=1)[:, -k:]
  return (np.take_along_axis(pool, keep, axis=1),
          np.take_along_axis(columns, keep, axis=1))


def _sorted_top(scores: np.ndarray, ids: np.ndarray,
                k: int) -> Tuple[np.ndarray, np.ndarray]:
  """Rows' k best by score (descending), ties broken by the smaller id."""
  if scores.shape[1] > k:
    keep = np.argpartition(scores, -k, axis=1)[:, -k:]
    scores = np.take_along_axis(scores, keep, axis=1)
    ids = np.take_along_axis(ids, keep, axis=1)
  order = np.lexsort((ids, -scores), axis=1)
  return (np.take_along_axis(scores, order, axis=1),
          np.take_along_axis(ids, order, axis=1))


def _exclusion_pairs(exclude: Exclusions, num_queries: int,
                     num_items: int) -> Tuple[np.ndarray, np.ndarray]:
  """Flattens per-query excluded items into (query, item) index arrays."""
  if exclude is None:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  if len(exclude) != num_queries:
    raise ValueError(f"exclude has {len(exclude)} entries for {num_queries} "
                     f"queries")
  query_rows, items = [], []
  for row, excluded in enumerate(exclude):
    if excluded is None or len(excluded) == 0:
      continue
    excluded = np.asarray(excluded, dtype=np.int64).ravel()
    excluded = excluded[(excluded >= 0) & (excluded < num_items)]
    query_rows.append(np.full(len(excluded), row, np.int64))
    items.append(excluded)
  if not items:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(query_rows), np.concatenate(items)


def _query_block_top(queries: np.ndarray, items: np.ndarray, k: int,
                     item_bias: Optional[np.ndarray],
                     excluded: Tuple[np.ndarray, np.ndarray],
                     item_block: int,
                     groups: int) -> Tuple[np.ndarray, np.ndarray]:
  """The sorted top-k of one block of queries, item block by item block.

  Args:
    queries: [b, d] the block's queries.
    items: [n, d] all items.
    k: results per query, at most n.
    item_bias: optional [n] item bias.
    excluded: (query row within the block, item row) pairs to skip.
    item_block: items scored at a time.
    groups: strided slabs for the two-stage selection.

  Returns:
    (scores [b, k], ids [b, k]); ids of -inf scores are -1.
  """
  rows, excluded_items = excluded
  best_scores = best_ids = None
  for i0 in range(0, items.shape[0], item_block):
    i1 = min(i0 + item_block, items.shape[0])
    scores = queries @ items[i0:i1].T
    if item_bias is not None:
      scores += item_bias[i0:i1]
    hit = (excluded_items >= i0) & (excluded_items < i1)
    if hit.any():
      scores[rows[hit], excluded_items[hit] - i0] = -np.inf
    cand_scores, cand_ids = _block_candidates(scores, k, groups)
    cand_ids = cand_ids + i0
    if best_scores is None:
      best_scores, best_ids = cand_scores, cand_ids
    else:
      best_scores, best_ids = _sorted_top(
          np.concatenate([best_scores, cand_scores], axis=1),
          np.concatenate([best_ids, cand_ids], axis=1), k)
  best_scores, best_ids = _sorted_top(best_scores, best_ids, k)
  return best_scores, np.where(np.isneginf(best_scores), -1, best_ids)


def top_k(queries: np.ndarray, items: np.ndarray, k: int,
          item_bias: Optional[np.ndarray] = None,
          exclude: Exclusions = None,
          query_block: int = DEFAULT_QUERY_BLOCK,
          item_block: int = DEFAULT_ITEM_BLOCK,
          groups: int = DEFAULT_GROUPS,
          excluded_pairs: ExcludedPairs = None
          ) -> Tuple[np.ndarray, np.ndarray]:
  """Exact top-k items per query by inner product (+ an item bias).

  Args:
    queries: [q, d] query vectors.
    items: [n, d] item vectors.
    k: results per query (more than n gives n real results per query).
    item_bias: optional [n] added to every score of an item.
    exclude: optional, one sequence of item rows per query that must not be
      returned for that query (e.g. items a user has rated).
    query_block: queries scored at a time.
    item_block: items scored at a time; with query_block it bounds memory.
    groups: strided slabs for the two-stage selection (see the module doc).
    excluded_pairs: optional (query rows, item rows), the same exclusions
      as two arrays (instead of `exclude`, not with it).

  Returns:
    (scores float32 [q, k], ids int64 [q, k]), best first, ties by smaller
    id. Slots a query cannot fill (everything excluded) hold id -1 and score
    -inf.

  Raises:
    ValueError: shapes disagree or k < 1.
  """
  queries = np.ascontiguousarray(queries, dtype=np.float32)
  items = np.ascontiguousarray(items, dtype=np.float32)
  if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
    raise ValueError(f"queries {queries.shape} and items {items.shape} must be "
                     f"2-D with the same dimension")
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  num_queries, num_items = queries.shape[0], items.shape[0]
  if item_bias is not None:
    item_bias = np.asarray(item_bias, dtype=np.float32).ravel()
    if item_bias.shape[0] != num_items:
      raise ValueError(f"item_bias has {item_bias.shape[0]} values for "
                       f"{num_items} items")
  slots = min(k, num_items)
  out_scores = np.full((num_queries, k), -np.inf, np.float32)
  out_ids = np.full((num_queries, k), -1, np.int64)
  if num_items == 0 or num_queries == 0:
    return out_scores, out_ids
  if excluded_pairs is None:
    excluded_rows, excluded_items = _exclusion_pairs(exclude, num_queries,
                                                     num_items)
  else:
    if exclude is not None:
      raise ValueError("pass exclude or excluded_pairs, not both")
    excluded_rows, excluded_items = (
        np.asarray(column, dtype=np.int64).ravel() for column in
        excluded_pairs)
    inside = (excluded_items >= 0) & (excluded_items < num_items)
    excluded_rows, excluded_items = (excluded_rows[inside],
                                     excluded_items[inside])
  for q0 in range(0, num_queries, query_block):
    q1 = min(q0 + query_block, num_queries)
    in_block = (excluded_rows >= q0) & (excluded_rows < q1)
    best_scores, best_ids = _query_block_top(
        queries[q0:q1], items, slots, item_bias,
        (excluded_rows[in_block] - q0, excluded_items[in_block]), item_block,
        groups)
    out_scores[q0:q1, :slots] = best_scores
    out_ids[q0:q1, :slots] = best_ids
  return out_scores, out_ids


class ExactIndex:
  """Exact k-nearest-neighbour search by cosine (or raw inner product)."""

  def __init__(self, vectors: np.ndarray, metric: str = COSINE,
               query_block: int = DEFAULT_QUERY_BLOCK,
               item_block: int = DEFAULT_ITEM_BLOCK):
    """Indexes a table.

    Args:
      vectors: [n, d] rows to search.
      metric: "cosine" (rows and queries normalised) or "dot".
      query_block: queries scored at a time.
      item_block: rows scored at a time.
    """
    if metric not in METRICS:
      raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    self.metric = metric
    self.vectors = (normalize(vectors) if metric == COSINE else
                    np.ascontiguousarray(vectors, dtype=np.float32))
    self.query_block = query_block
    self.item_block = item_block

  def __len__(self) -> int:
    return int(self.vectors.shape[0])

  def search(self, queries: np.ndarray, k: int,
             exclude: Exclusions = None) -> Tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of every query.

    Args:
      queries: [q, d] (or [d]) query vectors.
      k: neighbours per query.
      exclude: optional rows per query to skip (e.g. the query's own row).

    Returns:
      (similarities [q, k], row ids [q, k]), most similar first; unfilled
      slots hold id -1.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if self.metric == COSINE:
      queries = normalize(queries)
    return top_k(queries, self.vectors, k, exclude=exclude,
                 query_block=self.query_block, item_block=self.item_block)


def rows_subset(index_rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Maps ids of a sub-table back to rows of the full table.

  Args:
    index_rows: the full table's row of each sub-table row.
    ids: ids into the sub-table, -1 for none.

  Returns:
    Rows of the full table; -1 stays -1.
  """
  index_rows = np.asarray(index_rows, dtype=np.int64)
  return np.where(ids >= 0, index_rows[np.maximum(ids, 0)], -1)

