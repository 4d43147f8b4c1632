"""The Beam steps of `embeddings recommend-batch` and why they scale.

The job scores every user of a large catalogue (millions of users, hundreds
of thousands of items, tens of millions of ratings) with each worker's
memory independent of the number of ratings, and of users but for a token
index of about 30 bytes a user:

  * Users: the user table's word2vec.txt (one `token v1 .. vd` line per row,
    written by core/artifacts.py with exact float32 digits) read with
    ReadFromText, which splits the file across workers, and packed per
    user shard (recommend_chunks.PackUserLines). A TF checkpoint cannot
    serve this: restoring a slice of a tensor still reads the whole tensor
    into memory, so every worker would hold every user.
  * Seen items: --seen read as Arrow batches, the ids turned into int32
    rows of the user and item tables where they are read, packed per user
    shard (recommend_seen). What crosses the join's GroupByKey is a few
    chunks per shard and bundle at a few bytes a rating (the in-process
    runner holds all of it in memory); a side input would put every rating in
    every worker's memory instead.
  * Scoring: one DoFn per shard (ScoreShard) joins its chunks (vectorised:
    the seen pairs sorted by user, deduplicated, as row ranges per user),
    dead-letters users who rated but have no vector, and scores its users
    in blocks of `block_size`, exactly (retrieval/index.py, one matrix
    product per item block, seen items masked) or with the calibrated IVF
    index (retrieval/approximate.py search_unseen). Memory per worker is
    the item table (and its index), the user token index and one shard.
  * Tables: loaded once per worker process (recommend_tables, through
    beam.utils.shared.Shared in DoFn.setup). The approximate index is
    built and calibrated once before the job runs and read from its file
    (recommend_index says why).

Rejected records leave every step on the DEAD_LETTER tagged output as
{"table", "reason", "raw"}. The counters account for every user and
rating: users read from the user table end up in `users_written`, the
others in `user_lines_rejected`, `users_repeated` (a token's later
lines) or `users_without_embedding` (all dead-lettered); `seen_rows_read`
= `seen_rows_rejected` (dead-lettered) + `seen_rows_of_users` (rows of
scored users) + `seen_rows_without_user` (rows of dead-lettered users).
"""

import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retrieval import approximate
from retrieval import index as index_lib
from workflows import recommend_chunks as chunks_lib
from workflows import recommend_tables as tables_lib

NAMESPACE = chunks_lib.NAMESPACE
USERS, SEEN = chunks_lib.USERS, chunks_lib.SEEN
UNKNOWN_USERS = chunks_lib.UNKNOWN_USERS
PROGRESS_PREFIX = "embeddings recommend-batch:"
# Seconds between two progress lines at most.
PROGRESS_EVERY_S = 15.0
# The columns of each chunk kind when a shard has none of it.
_EMPTY = {USERS: (pa.array([], pa.string()), np.zeros((0, 0), np.float32)),
          SEEN: (np.zeros(0, np.int32), np.zeros(0, np.int32)),
          UNKNOWN_USERS: (pa.array([], pa.string()), np.zeros(0, np.int64))}


class _Progress:
  """The scoring progress of this process, a line every PROGRESS_EVERY_S."""

  def __init__(self):
    self._lock = threading.Lock()
    self.reset(None)

  def reset(self, total: Optional[int]) -> None:
    """Starts counting a run's scored users (total: its users, if known)."""
    with self._lock:
      self._total = total
      self._scored = 0
      self._started = self._printed = None

  def scored(self, users: int) -> None:
    """Adds scored users; prints a line when the last one is old enough."""
    with self._lock:
      now = time.monotonic()
      if self._started is None:
        self._started = self._printed = now
      self._scored += users
      if now - self._printed < PROGRESS_EVERY_S:
        return
      self._printed = now
      done, total = self._scored, self._total
      rate = done / max(now - self._started, 1e-9)
    line = f"scored {done:,} users, {rate:,.0f} users/s"
    if total:
      eta = max(total - done, 0) / max(rate, 1e-9)
      line = (f"scored {done:,} of {total:,} users, {rate:,.0f} users/s, "
              f"ETA {eta:,.0f} s")
    print(f"{PROGRESS_PREFIX} {line}", file=sys.stderr, flush=True)


PROGRESS = _Progress()


class ShardSeen:
  """One shard's seen items: per user row, the item rows it rated, unique.

  Attributes:
    rows: int64 user rows (into the shard's users), sorted.
    items: int64 item rows, ascending within each user.
  """

  def __init__(self, user_rows: np.ndarray, item_rows: np.ndarray,
               num_items: int):
    keys = np.unique(user_rows.astype(np.int64) * num_items +
                     item_rows.astype(np.int64))
    self.rows = keys // num_items
    self.items = keys % num_items

  def block(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
    """(user row - start, item row) of users start..stop-1."""
    low, high = np.searchsorted(self.rows, [start, stop])
    return self.rows[low:high] - start, self.items[low:high]


class ScoreShard(beam.DoFn):
  """(shard, chunks) -> {"user", "items", "scores"} per user of the shard."""

  def __init__(self, loader: tables_lib.TablesLoader, k: int,
               block_size: int, item_block: int,
               shared_handle: shared.Shared):
    """Keeps what the workers need; the tables themselves load in setup().

    Args:
      loader: the TablesLoader (with user rows when there are seen items).
      k: recommendations per user.
      block_size: users scored together.
      item_block: items scored at a time (exact search).
      shared_handle: a beam.utils.shared.Shared, so threads of one worker
        process share one copy of the tables.
    """
    self._loader = loader
    self._k = k
    self._block_size = block_size
    self._item_block = item_block
    self._shared = shared_handle
    self._tables = None
    self._scored = Metrics.counter(NAMESPACE, "users_scored")
    self._blocks = Metrics.counter(NAMESPACE, "blocks_scored")
    self._orphans = Metrics.counter(NAMESPACE, "users_without_embedding")
    self._repeated = Metrics.counter(NAMESPACE, "users_repeated")
    self._rows_of_users = Metrics.counter(NAMESPACE, "seen_rows_of_users")
    self._rows_without_user = Metrics.counter(NAMESPACE,
                                              "seen_rows_without_user")

  def setup(self):
    self._tables = self._shared.acquire(self._loader)

  def process(self, element):
    _, chunks = element
    parts: Dict[str, List[Tuple]] = {USERS: [], SEEN: [], UNKNOWN_USERS: []}
    for chunk in chunks:
      parts[chunk[0]].append(chunks_lib.unpack_pairs(chunk[1])
                             if chunk[0] == SEEN else chunk[1:])
    users, vectors = _joined(parts, USERS)
    seen_users, seen_items = _joined(parts, SEEN)
    unknown, unknown_rows = _joined(parts, UNKNOWN_USERS)
    del parts, chunks
    tokens = users.to_numpy(zero_copy_only=False)
    tokens, vectors = yield from self._unique_users(tokens, vectors)
    yield from self._unknown_users(unknown, unknown_rows)
    positions = yield from self._seen_positions(tokens, seen_users)
    known = (positions >= 0) & (seen_items >= 0)
    seen = ShardSeen(positions[known], seen_items[known],
                     max(len(self._tables.items.tokens), 1))
    del seen_users, seen_items, positions, known
    for start in range(0, len(tokens), self._block_size):
      stop = min(start + self._block_size, len(tokens))
      yield from self._score(tokens[start:stop], vectors[start:stop],
                             seen.block(start, stop))

  def _unique_users(self, tokens: np.ndarray, vectors: np.ndarray):
    """The first row of each token; later repeats are dead-lettered."""
    _, first = np.unique(tokens, return_index=True)
    if len(first) == len(tokens):
      return tokens, vectors
    first.sort()
    repeated = np.setdiff1d(np.arange(len(tokens)), first)
    self._repeated.inc(len(repeated))
    for row in repeated:
      yield chunks_lib.dead_letter(USERS, chunks_lib.DUPLICATE_USER,
                                   tokens[row])
    return tokens[first], vectors[first]

  def _unknown_users(self, tokens: pa.Array, rows: np.ndarray):
    """Dead-letters each user id the user table lacks, once."""
    if not len(tokens):
      return
    self._rows_without_user.inc(int(rows.sum()))
    for user in pc.unique(tokens).to_pylist():
      self._orphans.inc()
      yield chunks_lib.dead_letter(SEEN, chunks_lib.NO_EMBEDDING,
                                   {"user": user})

  def _seen_positions(self, tokens: np.ndarray, seen_users: np.ndarray):
    """Each seen rating's user as a row of `tokens`; -1 without a vector.

    Users without a vector (in the user table, not in this shard's users)
    are dead-lettered once each.
    """
    if not len(seen_users):
      return np.zeros(0, np.int64)
    rows = self._tables.users.rows_of(pa.array(tokens, pa.string()))
    order = np.argsort(rows)
    ranked = rows[order]
    positions = np.full(len(seen_users), -1, np.int64)
    if len(ranked):
      at = np.minimum(np.searchsorted(ranked, seen_users), len(ranked) - 1)
      found = ranked[at] == seen_users
      positions[found] = order[at[found]]
    orphan = positions < 0
    self._rows_of_users.inc(int(np.count_nonzero(~orphan)))
    if orphan.any():
      self._rows_without_user.inc(int(np.count_nonzero(orphan)))
      for user in self._tables.users.token_list(
          np.unique(seen_users[orphan])):
        self._orphans.inc()
        yield chunks_lib.dead_letter(SEEN, chunks_lib.NO_EMBEDDING,
                                     {"user": user})
    return positions

  def _score(self, tokens: np.ndarray, vectors: np.ndarray,
             excluded: Tuple[np.ndarray, np.ndarray]):
    items = self._tables.items
    k = self._k

    def exact(rows, pairs):
      return index_lib.top_k(vectors[rows], items.vectors, k,
                             item_bias=items.bias, excluded_pairs=pairs,
                             item_block=self._item_block)

    if items.ann is None:
      scores, ids = exact(np.arange(len(tokens)), excluded)
    else:
      scores, ids = approximate.search_unseen(
          items.ann, approximate.augment_queries(vectors), k, excluded, exact)
    self._blocks.inc()
    self._scored.inc(len(tokens))
    PROGRESS.scored(len(tokens))
    for user, row_scores, row_ids in zip(tokens, scores, ids):
      keep = row_ids >= 0
      yield {"user": user, "items": items.token_list(row_ids[keep]),
             "scores": row_scores[keep].tolist()}


def _joined(parts: Dict[str, List[Tuple]], kind: str) -> Tuple:
  """One shard's chunks of one kind, each column concatenated."""
  chunks = parts[kind]
  if not chunks:
    return _EMPTY[kind]
  return tuple(chunks_lib.concat([chunk[column] for chunk in chunks])
               for column in range(len(chunks[0])))


def single_chunk(element):
  """(shard, chunk) -> (shard, [chunk]): scoring input without a shuffle."""
  shard, chunk = element
  return shard, [chunk]


class CountRecords(beam.DoFn):
  """Passes records through, counting them under `counter` (what is written)."""

  def __init__(self, counter: str):
    self._counter = Metrics.counter(NAMESPACE, counter)

  def process(self, record):
    self._counter.inc()
    yield record


class ShardedRecommend(beam.PTransform):
  """User chunks (+ seen chunks) -> {"user", "items", "scores"} per user.

  Takes the (shard, chunk) outputs of PackUserLines and, with seen items,
  PackSeenBatches; groups them by shard when there are seen items (users
  alone need no shuffle). Outputs: main, and DEAD_LETTER for users with
  ratings but no vector (and repeated user tokens).
  """

  def __init__(self, loader: tables_lib.TablesLoader,
               shared_handle: shared.Shared, k: int, block_size: int = 512,
               item_block: int = index_lib.DEFAULT_ITEM_BLOCK):
    """Keeps the scoring settings.

    Args:
      loader: the TablesLoader (with user rows when there are seen items).
      shared_handle: the Shared the tables are held by (the one given to
        PackSeenBatches).
      k: recommendations per user.
      block_size: users scored together.
      item_block: items scored at a time within a block (exact search).
    """
    super().__init__()
    self._loader = loader
    self._shared = shared_handle
    self._k = k
    self._block_size = block_size
    self._item_block = item_block

  def expand(self, pcolls):
    users, seen = pcolls if isinstance(pcolls, tuple) else (pcolls, None)
    if seen is None:
      grouped = users | "OneChunkEach" >> beam.Map(single_chunk)
    else:
      grouped = ((users, seen) | "MergeChunks" >> beam.Flatten()
                 | "GroupByShard" >> beam.GroupByKey())
    return grouped | "ScoreShards" >> beam.ParDo(ScoreShard(
        self._loader, self._k, self._block_size, self._item_block,
        self._shared)).with_outputs(chunks_lib.DEAD_LETTER, main="users")


def parquet_schema() -> pa.Schema:
  """The Arrow schema of one recommendation record."""
  return pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())),
                    ("scores", pa.list_(pa.float32()))])
