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
`python -m benchmarks.retrieval_bench` measures it against faiss' flat index
(and, with --hnsw, against hnswlib); the README lists the results.
"""

import dataclasses
import math
from typing import Optional, Tuple

import faiss
import numpy as np

from retrieval import index as index_lib

# recall@10 the approximate index is calibrated to: 0.95 plus a margin for
# the sampling error of calibrating on 500 queries (a standard error of
# about 0.003 at this recall), so other queries still see 0.95.
DEFAULT_TARGET_RECALL = 0.96


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

  def __len__(self) -> int:
    return int(self.vectors.shape[0])

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
    return Calibration(nprobe=best, recall=best_recall, sample=len(rows),
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
                metric: str = index_lib.COSINE, threshold: int = 200_000,
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
