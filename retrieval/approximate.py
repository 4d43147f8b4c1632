"""Approximate search over a large embedding table: a calibrated IVF index.

`ApproximateIndex` is faiss IndexIVFFlat over normalised vectors (sqrt(n)
lists), with nprobe calibrated against exact search (retrieval/index.py) to
a recall target. IVF rather than a graph index (HNSW, as in hnswlib or
faiss IndexHNSWFlat), because:

  * Build time is paid on every use. An IVF index is one k-means over a
    sample of rows plus one assignment pass; an HNSW graph inserts rows one
    at a time, each insertion a search of the graph, so a table of a
    million rows takes minutes to index instead of seconds. Tables are
    re-exported with every model version and `embeddings neighbors` indexes
    a table per invocation (the batch jobs search exactly anyway).
  * Query speed at the recall target on structured data (trained tables
    group rows by taste or genre) is no worse. Structureless uniform random
    vectors are the worst case for both: every index visits much of the
    table to reach the target, and HNSW is the better choice for such data
    if its build time is acceptable.
  * IVF's recall is tunable after the build (nprobe), so `calibrate` finds
    the smallest nprobe meeting a recall target measured on the table's own
    rows, instead of trusting one setting for every data set.

`build_index` gives small tables the exact index and large ones this one.

Ranking by `user . item + item_bias` (batch recommendation) is a maximum
inner-product search: `augment_items` appends the bias to every item and
`augment_queries` a 1 to every user, so the inner products of the augmented
vectors are those scores exactly and the same IVF index (metric "dot")
serves them; `calibrate_queries` calibrates it on user vectors, and
`search_unseen` leaves out each user's seen items.
`python -m benchmarks.retrieval_bench` measures it against faiss' flat index
(and, with --hnsw, against hnswlib); the README lists the results.
"""

import dataclasses
import math
from typing import Callable, Optional, Tuple

import faiss
import numpy as np

from retrieval import index as index_lib

# recall@10 the approximate index is calibrated to: 0.95 plus a margin for
# the sampling error of calibrating on 500 queries (a standard error of
# about 0.003 at this recall), so other queries still see 0.95.
DEFAULT_TARGET_RECALL = 0.96
# Rows above which build_index (and `recommend-batch --index auto`) search
# approximately.
APPROXIMATE_THRESHOLD = 200_000


@dataclasses.dataclass
class Calibration:
  """What `ApproximateIndex.calibrate` settled on."""
  nprobe: int
  recall: float
  sample: int
  target: float


class ApproximateIndex:
  """Approximate cosine search with faiss IndexIVFFlat (see the module doc)."""

  def __init__(self, vectors: np.ndarray, metric: str = index_lib.COSINE,
               nlist: Optional[int] = None, nprobe: Optional[int] = None,
               train_size: Optional[int] = None, seed: int = 0):
    """Builds the index.

    Args:
      vectors: [n, d] rows to search.
      metric: "cosine" or "dot".
      nlist: inverted lists (k-means cells); default sqrt(n), and at most
        n / 39 so every cell trains on the 39 rows faiss asks for at least.
      nprobe: cells visited per query; default nlist / 64 (at least 8), and
        `calibrate` can set it from a recall target.
      train_size: rows the coarse k-means trains on at most (a seeded
        sample; default 64 per list up to 100K).
      seed: sampling and k-means seed, for reproducible indexes.
    """
    if metric not in index_lib.METRICS:
      raise ValueError(f"metric must be one of {index_lib.METRICS}, got "
                       f"{metric!r}")
    self.metric = metric
    self.vectors = (index_lib.normalize(vectors)
                    if metric == index_lib.COSINE else
                    np.ascontiguousarray(vectors, dtype=np.float32))
    n, d = self.vectors.shape
    if n == 0:
      raise ValueError("cannot index an empty table")
    self.nlist = int(nlist or max(1, min(n // 39, round(math.sqrt(n)))))
    train_size = int(train_size or min(100_000, 64 * self.nlist))
    rng = np.random.default_rng(seed)
    sample = self.vectors
    if n > train_size:
      sample = self.vectors[np.sort(rng.choice(n, train_size, replace=False))]
    quantizer = faiss.IndexFlatIP(d)
    self._index = faiss.IndexIVFFlat(quantizer, d, self.nlist,
                                     faiss.METRIC_INNER_PRODUCT)
    self._index.cp.seed = seed
    self._index.train(sample)
    self._index.add(self.vectors)
    self._quantizer = quantizer
    self.nprobe = int(nprobe or min(self.nlist, max(8, self.nlist // 64)))

  @classmethod
  def from_bytes(cls, data: bytes, metric: str,
                 nprobe: int) -> "ApproximateIndex":
    """An index `to_bytes` wrote, ready to search (but not to calibrate).

    Args:
      data: to_bytes' output.
      metric: the metric it was built with.
      nprobe: cells visited per query.

    Returns:
      The index; its `vectors` is None (faiss holds the rows).
    """
    index = cls.__new__(cls)
    index.metric = metric
    index.vectors = None
    index._index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
    index._quantizer = None
    index.nlist = int(index._index.nlist)
    index.nprobe = nprobe
    return index

  def to_bytes(self) -> bytes:
    """The faiss index serialized (from_bytes reads it back)."""
    return faiss.serialize_index(self._index).tobytes()

  def __len__(self) -> int:
    return int(self._index.ntotal)

  @property
  def nprobe(self) -> int:
    return int(self._index.nprobe)

  @nprobe.setter
  def nprobe(self, value: int) -> None:
    self._index.nprobe = int(max(1, min(self.nlist, value)))

  def search(self, queries: np.ndarray, k: int
            ) -> Tuple[np.ndarray, np.ndarray]:
    """The (approximately) k nearest rows of every query.

    Args:
      queries: [q, d] (or [d]) query vectors.
      k: neighbours per query.

    Returns:
      (similarities [q, k], row ids [q, k]), most similar first; unfilled
      slots hold id -1.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if self.metric == index_lib.COSINE:
      queries = index_lib.normalize(queries)
    scores, ids = self._index.search(np.ascontiguousarray(queries), k)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    return scores, ids.astype(np.int64)

  def calibrate(self, target_recall: float = DEFAULT_TARGET_RECALL,
                k: int = 10,
                sample: int = 500, seed: int = 0) -> Calibration:
    """Sets nprobe to the smallest value reaching a recall target.

    Recall is measured against exact search for `sample` of the table's own
    rows used as queries (the neighbours of an item are what users ask for),
    each query's own row left out on both sides so it does not count as a
    free hit.

    Args:
      target_recall: recall@k to reach.
      k: neighbours per query.
      sample: rows used as queries.
      seed: the sample's seed.

    Returns:
      The chosen setting and the recall it measured.
    """
    rng = np.random.default_rng(seed)
    n = len(self)
    rows = rng.choice(n, min(sample, n), replace=False)
    queries = self.vectors[rows]
    k = min(k, n - 1) if n > 1 else 1
    _, truth = index_lib.top_k(queries, self.vectors, k,
                               exclude=[[r] for r in rows])

    def recall_with(nprobe: int) -> float:
      self.nprobe = nprobe
      _, found = self.search(queries, k + 1)
      found = np.array([[i for i in row_ids if i != own][:k]
                        for row_ids, own in zip(found, rows)])
      return recall_at_k(found, truth)

    return self._settle(recall_with, target_recall, len(rows))

  def calibrate_queries(self, queries: np.ndarray,
                        target_recall: float = DEFAULT_TARGET_RECALL,
                        k: int = 10) -> Calibration:
    """Sets nprobe to the smallest value reaching a recall target on queries.

    For searches whose queries are not the table's rows (users against an
    item table); recall is measured against exact search of the same
    queries.

    Args:
      queries: [q, d] query vectors, as search() takes them.
      target_recall: recall@k to reach.
      k: results per query.

    Returns:
      The chosen setting and the recall it measured.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if self.metric == index_lib.COSINE:
      queries = index_lib.normalize(queries)
    k = min(k, len(self))
    _, truth = index_lib.top_k(queries, self.vectors, k)

    def recall_with(nprobe: int) -> float:
      self.nprobe = nprobe
      return recall_at_k(self.search(queries, k)[1], truth)

    return self._settle(recall_with, target_recall, len(queries))

  def _settle(self, recall_with: Callable[[int], float], target_recall: float,
              sample: int) -> Calibration:
    """Finds and sets the smallest nprobe whose recall_with meets the target."""
    # Grow nprobe geometrically until the target is met, then bisect back
    # to the smallest value that still meets it.
    low, high = 0, 1
    measured = recall_with(high)
    while measured < target_recall and high < self.nlist:
      low, high = high, min(self.nlist, high * 2)
      measured = recall_with(high)
    best, best_recall = high, measured
    while high - low > 1 and best_recall >= target_recall:
      middle = (low + high) // 2
      recall = recall_with(middle)
      if recall >= target_recall:
        high, best, best_recall = middle, middle, recall
      else:
        low = middle
    self.nprobe = best
    return Calibration(nprobe=best, recall=best_recall, sample=sample,
                       target=target_recall)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean fraction of the true neighbours that a search returned.

  Args:
    found: [q, k] ids an approximate search returned (-1 for none).
    truth: [q, k] exact ids (-1 slots are ignored).

  Returns:
    recall@k in [0, 1].
  """
  found = np.asarray(found)
  truth = np.asarray(truth)
  if found.shape[0] != truth.shape[0]:
    raise ValueError(f"{found.shape[0]} result rows for {truth.shape[0]} "
                     f"truth rows")
  total, hits = 0, 0
  for got, want in zip(found, truth):
    want = set(int(x) for x in want if x >= 0)
    total += len(want)
    hits += len(want.intersection(int(x) for x in got if x >= 0))
  return hits / total if total else 1.0


def build_index(vectors: np.ndarray, approximate: Optional[bool] = None,
                metric: str = index_lib.COSINE,
                threshold: int = APPROXIMATE_THRESHOLD,
                target_recall: float = DEFAULT_TARGET_RECALL):
  """An exact index for small tables, a calibrated approximate one for big.

  Args:
    vectors: [n, d] rows.
    approximate: force a kind; None chooses by `threshold`.
    metric: "cosine" or "dot".
    threshold: rows above which the approximate index is used.
    target_recall: recall@10 the approximate index is calibrated to.

  Returns:
    An index.ExactIndex or a calibrated ApproximateIndex.
  """
  if approximate is None:
    approximate = len(vectors) > threshold
  if not approximate:
    return index_lib.ExactIndex(vectors, metric=metric)
  index = ApproximateIndex(vectors, metric=metric)
  index.calibrate(target_recall=target_recall)
  return index


def augment_items(vectors: np.ndarray,
                  bias: Optional[np.ndarray]) -> np.ndarray:
  """[items | bias], whose inner products with [users | 1] are the scores.

  The score is user . item + bias (a zero column stands for no bias).

  Args:
    vectors: [n, d] item vectors.
    bias: optional [n] item bias.

  Returns:
    float32 [n, d + 1].
  """
  vectors = np.asarray(vectors, dtype=np.float32)
  column = (np.zeros(len(vectors), np.float32) if bias is None else
            np.asarray(bias, dtype=np.float32).ravel())
  return np.ascontiguousarray(np.column_stack([vectors, column]))


def augment_queries(queries: np.ndarray) -> np.ndarray:
  """[queries | 1]: the query side of augment_items.

  Args:
    queries: [q, d] user vectors.

  Returns:
    float32 [q, d + 1].
  """
  queries = np.asarray(queries, dtype=np.float32)
  return np.ascontiguousarray(np.column_stack(
      [queries, np.ones(len(queries), np.float32)]))


ExactFallback = Callable[[np.ndarray, Tuple[np.ndarray, np.ndarray]],
                         Tuple[np.ndarray, np.ndarray]]


def search_unseen(index: ApproximateIndex, queries: np.ndarray, k: int,
                  excluded_pairs: Tuple[np.ndarray, np.ndarray],
                  exact: ExactFallback) -> Tuple[np.ndarray, np.ndarray]:
  """The approximate k best rows per query, each query's excluded rows left out.

  Every query asks the index for k + (the most exclusions of any query)
  results, so each gets k that are not excluded whenever the index returns
  that many. A query the index returns fewer for (its probed cells hold too
  few rows, or the table is nearly all excluded) is searched exactly.

  Args:
    index: the index (over augment_items' rows for recommendations).
    queries: [q, d] query vectors as index.search takes them.
    k: results per query.
    excluded_pairs: (query rows, table rows) that must not be returned.
    exact: the exact search of some queries, called as
      exact(query rows, their excluded pairs renumbered to those rows) and
      returning (scores, ids) [len(query rows), k] like index.top_k.

  Returns:
    (scores float32 [q, k], ids int64 [q, k]) best first; a query gets
    min(k, rows - its excluded rows) results, the other slots id -1 and
    score -inf.
  """
  num_queries, num_rows = len(queries), len(index)
  rows, excluded = (np.asarray(a, dtype=np.int64).ravel()
                    for a in excluded_pairs)
  inside = (excluded >= 0) & (excluded < num_rows)
  rows, excluded = rows[inside], excluded[inside]
  keys = np.unique(rows * num_rows + excluded)
  excluded_count = np.bincount(keys // num_rows, minlength=num_queries)
  wanted = np.minimum(k, num_rows - excluded_count)
  depth = int(min(num_rows, k + excluded_count.max(initial=0)))
  scores, ids = index.search(queries, depth)
  candidate_keys = np.arange(num_queries, dtype=np.int64)[:, None] * num_rows
  keep = (ids >= 0) & ~np.isin(candidate_keys + ids, keys)
  keep &= np.cumsum(keep, axis=1) <= k
  # Kept candidates first, each row's order (best first) unchanged.
  order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
  kept = np.take_along_axis(keep, order, axis=1)
  out_scores = np.full((num_queries, k), -np.inf, np.float32)
  out_ids = np.full((num_queries, k), -1, np.int64)
  width = order.shape[1]
  out_scores[:, :width] = np.where(
      kept, np.take_along_axis(scores, order, axis=1), -np.inf)
  out_ids[:, :width] = np.where(kept, np.take_along_axis(ids, order, axis=1),
                                -1)
  short = np.flatnonzero(kept.sum(axis=1) < wanted)
  if len(short):
    position = np.full(num_queries, -1, np.int64)
    position[short] = np.arange(len(short))
    chosen = position[rows] >= 0
    out_scores[short], out_ids[short] = exact(
        short, (position[rows[chosen]], excluded[chosen]))
  return out_scores, out_ids
