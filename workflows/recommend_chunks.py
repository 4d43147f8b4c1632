"""The packed chunks recommend-batch's seen join groups, and the user side.

Users go to one of `shards` shards by a stable hash of their word2vec.txt
token (recommend_tables.token_hashes, the same in every process). Both
sides of the join leave their DoFn as (shard, chunk) elements, up to
`chunk_rows` rows buffered per flush, so what crosses the GroupByKey is a
few chunks per shard and bundle, never an element per rating. A chunk is a
tuple whose first field names its kind:

  (USERS, tokens, vectors)   an Arrow string array, float32 [n, d]
  (SEEN, pairs)   the int32 rows of the user and item tables, a pair per
      rating, as pack_pairs' bytes: sorted by user, the user rows as
      differences, zlib-compressed: a few bytes a rating where the plain
      arrays take 8 (the in-process runner holds the shuffle in memory, in
      two or three copies at times)
  (UNKNOWN_USERS, tokens, rows)   user ids the user table lacks, each once
      per chunk with its rating count (int64)

Also here: the job's counters, its dead-letter reasons and the helpers
every step emits records with.
"""

import zlib
from typing import Dict, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils import windowed_value
import numpy as np
import pyarrow as pa

from workflows import recommend_batch_options as options_lib
from workflows import recommend_tables as tables_lib

NAMESPACE = "recommend"
# The tagged output of rejected records inside the graph.
DEAD_LETTER = "dead_letter"
NO_EMBEDDING = "user has ratings but no row in the user table"
MISSING_ID = "ratings row without a user or item id"
BAD_VECTOR = "word2vec line with the wrong number of values"
BAD_CSV_ROW = "ratings line with the wrong number of fields"
DUPLICATE_USER = "user token repeated in the user table"
COUNTERS = ("users_read", "users_scored", "users_written",
            "users_without_embedding", "seen_rows_read", "seen_rows_rejected",
            "seen_rows_of_users", "seen_rows_without_user",
            "seen_items_unknown", "blocks_scored", "user_lines_rejected",
            "users_repeated", "dead_letters_written", "chunks_packed",
            "chunk_flushes")
USERS, SEEN, UNKNOWN_USERS = "users", "seen", "unknown_users"
DEFAULT_SHARDS = options_lib.DEFAULT_SHARDS
DEFAULT_CHUNK_ROWS = 65536


def shard_of(hashes: np.ndarray, shards: int) -> np.ndarray:
  """The shard of every user token, from its token_hashes.

  Args:
    hashes: uint64 hashes (recommend_tables.token_hashes).
    shards: the number of shards.

  Returns:
    int64 shard per token, in [0, shards).
  """
  return (hashes % np.uint64(shards)).astype(np.int64)


def pack_pairs(user_rows: np.ndarray, item_rows: np.ndarray) -> bytes:
  """Rating pairs as compact bytes (see the module doc); unpack_pairs inverts.

  Args:
    user_rows: int32 [n] user table rows.
    item_rows: int32 [n] item table rows (-1: an item the table lacks).

  Returns:
    The bytes; the pairs come back sorted by user row.
  """
  order = np.argsort(user_rows, kind="stable")
  users = user_rows[order].astype(np.int32)
  steps = np.diff(users, prepend=np.int32(0)).astype(np.int32)
  return zlib.compress(np.concatenate(
      [steps, item_rows[order].astype(np.int32)]).tobytes(), 1)


def unpack_pairs(data: bytes) -> Tuple[np.ndarray, np.ndarray]:
  """pack_pairs' bytes -> (int32 user rows, int32 item rows)."""
  values = np.frombuffer(zlib.decompress(data), np.int32)
  half = len(values) // 2
  return np.cumsum(values[:half], dtype=np.int32), values[half:].copy()


def global_output(output):
  """An output as finish_bundle must give it (the job is batch)."""
  if isinstance(output, beam.pvalue.TaggedOutput):
    return beam.pvalue.TaggedOutput(output.tag, global_output(output.value))
  return windowed_value.WindowedValue(output, window.MIN_TIMESTAMP,
                                      [window.GlobalWindow()])


def dead_letter(table: str, reason: str, raw) -> beam.pvalue.TaggedOutput:
  """A rejected record on the DEAD_LETTER output: {"table", "reason", "raw"}."""
  return beam.pvalue.TaggedOutput(DEAD_LETTER, {"table": table,
                                                "reason": reason, "raw": raw})


def concat(columns: Sequence):
  """Columns of chunks (NumPy or Arrow arrays) as one."""
  if isinstance(columns[0], np.ndarray):
    return np.concatenate(columns)
  return pa.concat_arrays(columns)


def _take(column, rows: np.ndarray):
  if isinstance(column, np.ndarray):
    return column[rows]
  # take() copies: a slice would pickle its whole parent buffer.
  return column.take(pa.array(rows))


class ShardPacker(beam.DoFn):
  """Buffers rows within a bundle; emits them as (shard, chunk) per shard.

  Subclasses add rows with _add: a kind, the shard of every row and the
  chunk's columns (NumPy or Arrow arrays, a row per shard entry), and may
  encode a chunk's columns (_encode). A flush
  emits, per kind, one chunk per shard that has rows, so at most `shards`
  elements of a kind leave per flush; a flush happens per `chunk_rows`
  rows and at the end of a bundle (counters chunks_packed, chunk_flushes).
  """

  def __init__(self, shards: int, chunk_rows: int):
    self._shards = shards
    self._chunk_rows = chunk_rows
    self._chunks = Metrics.counter(NAMESPACE, "chunks_packed")
    self._flushes = Metrics.counter(NAMESPACE, "chunk_flushes")
    self._pending: Dict[str, List[Tuple[np.ndarray, Tuple]]] = {}
    self._pending_rows = 0

  def start_bundle(self):
    self._pending, self._pending_rows = {}, 0

  def _add(self, kind: str, shards: np.ndarray, *columns):
    if len(shards):
      self._pending.setdefault(kind, []).append((shards, columns))
      self._pending_rows += len(shards)
    if self._pending_rows >= self._chunk_rows:
      yield from self._flush()

  def _flush(self):
    pending, self._pending, self._pending_rows = self._pending, {}, 0
    if pending:
      self._flushes.inc()
    for kind, parts in pending.items():
      shards = np.concatenate([part_shards for part_shards, _ in parts])
      columns = [concat([part[column] for _, part in parts])
                 for column in range(len(parts[0][1]))]
      del parts
      order = np.argsort(shards, kind="stable")
      bounds = np.searchsorted(shards[order], np.arange(self._shards + 1))
      for shard in range(self._shards):
        rows = order[bounds[shard]:bounds[shard + 1]]
        if len(rows):
          self._chunks.inc()
          yield shard, (kind,) + self._encode(
              kind, tuple(_take(column, rows) for column in columns))

  def _encode(self, kind: str, columns: Tuple) -> Tuple:
    """The fields of a chunk after its kind (by default its columns)."""
    del kind
    return columns

  def finish_bundle(self):
    for element in self._flush():
      yield global_output(element)


class PackUserLines(ShardPacker):
  """word2vec lines -> (shard, (USERS, tokens, float32 [n, d])) chunks.

  Reserved rows (OOV buckets, the default row) are dropped; lines with the
  wrong number of values are dead-lettered (BAD_VECTOR).
  """

  def __init__(self, dimension: int, skip_tokens: Sequence[str],
               shards: int = DEFAULT_SHARDS,
               chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """Keeps the parsing and packing rules.

    Args:
      dimension: values per vector.
      skip_tokens: rows that stand for no user (OOV buckets, the default
        row: core.artifacts.reserved_tokens).
      shards: user shards.
      chunk_rows: lines buffered before a flush.
    """
    super().__init__(shards, chunk_rows)
    self._dimension = dimension
    self._skip = frozenset(skip_tokens)
    self._read = Metrics.counter(NAMESPACE, "users_read")
    self._rejected = Metrics.counter(NAMESPACE, "user_lines_rejected")
    self._lines: List[str] = []

  def start_bundle(self):
    super().start_bundle()
    self._lines = []

  def process(self, line: str):
    self._lines.append(line)
    if len(self._lines) >= self._chunk_rows:
      yield from self._parse()

  def _parse(self):
    lines, self._lines = self._lines, []
    tokens, values = [], []
    for line in lines:
      token, _, rest = line.partition(" ")
      if not token or token in self._skip:
        continue
      if rest.count(" ") != self._dimension - 1:
        self._rejected.inc()
        yield dead_letter(USERS, BAD_VECTOR, line[:200])
        continue
      tokens.append(token)
      values.append(rest)
    if not tokens:
      return
    try:
      vectors = np.fromstring(" ".join(values), dtype=np.float32, sep=" ")
    except ValueError:
      vectors = None
    if vectors is None or vectors.size != len(tokens) * self._dimension:
      # A value that is no number: find its lines one by one.
      yield from self._parse_each(tokens, values)
      return
    self._read.inc(len(tokens))
    yield from self._add_users(tokens,
                               vectors.reshape(len(tokens), self._dimension))

  def _parse_each(self, tokens: List[str], values: List[str]):
    good_tokens, good = [], []
    for token, rest in zip(tokens, values):
      try:
        good.append(np.array(rest.split(" "), dtype=np.float32))
        good_tokens.append(token)
      except ValueError:
        self._rejected.inc()
        yield dead_letter(USERS, BAD_VECTOR, f"{token} {rest}"[:200])
    self._read.inc(len(good_tokens))
    if good_tokens:
      yield from self._add_users(good_tokens, np.stack(good))

  def _add_users(self, tokens: List[str], vectors: np.ndarray):
    tokens = pa.array(tokens, pa.string())
    shards = shard_of(tables_lib.token_hashes(tokens), self._shards)
    yield from self._add(USERS, shards, tokens, vectors)

  def finish_bundle(self):
    for element in self._parse():
      yield global_output(element)
    yield from super().finish_bundle()
