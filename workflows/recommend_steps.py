"""The Beam steps of `embeddings recommend-batch` and why they scale.

The job scores every user of a large catalogue (millions of users, hundreds
of thousands of items) and keeps each worker's memory independent of the
number of users:

  * Users: the user table's word2vec.txt (one `token v1 .. vd` line per row,
    written by core/artifacts.py with exact float32 digits) read with
    ReadFromText, which splits the file across workers. A TF checkpoint
    cannot serve this: restoring a slice of a tensor still reads the whole
    tensor into memory, so every worker would hold every user.
  * Seen items: the ratings file through TFXIO (CSV or tf.Example TFRecord)
    as Arrow RecordBatches, turned into (user, item) pairs. They join the
    users by key with CoGroupByKey. A side input would put every rating of
    every user in every worker's memory (hundreds of millions of pairs at
    this scale); the shuffle keeps a worker's memory at one user's ratings.
  * Blocks: BatchElements groups users into blocks of `block_size`; one
    block is scored against the item table with one matrix product per item
    block (retrieval/index.py: exact top-k, the user's seen items masked).
    Memory per worker is the item table plus block_size x item_block scores,
    whatever the number of users.
  * Items: loaded once per worker process (beam.utils.shared.Shared, in
    DoFn.setup) from the artifact directory through core.files, so gs://
    paths work and no local path is baked into the job.

Rejected records leave every step on the DEAD_LETTER tagged output as
{"table", "reason", "raw"}. The counters account for every user: those
read from the user table end up in `users_written`, the others in
`user_lines_rejected` or `users_without_embedding` (both dead-lettered).
"""

from typing import List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from core import artifacts
from retrieval import index as index_lib
from workflows import recommend_batch_options as options_lib

NAMESPACE = "recommend"
# The tagged output of rejected records inside the graph.
DEAD_LETTER = "dead_letter"
NO_EMBEDDING = "user has ratings but no row in the user table"
MISSING_ID = "ratings row without a user or item id"
BAD_VECTOR = "word2vec line with the wrong number of values"
COUNTERS = ("users_read", "users_scored", "users_written",
            "users_without_embedding", "seen_rows_read", "seen_rows_rejected",
            "seen_items_unknown", "blocks_scored", "user_lines_rejected",
            "dead_letters_written")
_SEEN_BATCH_SIZE = 4096
_TELEMETRY = ["embeddings", "recommend"]


class ItemTable:
  """The item side of scoring: real rows, their tokens, bias, token -> row.

  A plain class (not a tuple) so beam.utils.shared can hold it by weak
  reference, once per worker process.
  """

  def __init__(self, vectors: np.ndarray, tokens: Sequence[str],
               bias: Optional[np.ndarray] = None):
    self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    self.tokens = list(tokens)
    self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
    self.row_of = {token: row for row, token in enumerate(self.tokens)}


def load_item_table(embeddings: str, table: str, use_bias: bool) -> ItemTable:
  """Reads an export's item table (real rows only) and its bias.

  Args:
    embeddings: the export directory (`embeddings export --output`).
    table: the item feature name.
    use_bias: add the exported `bias_<table>` when there is one.

  Returns:
    The ItemTable.
  """
  loaded = artifacts.load(embeddings, table)
  rows = loaded.real_rows
  bias = artifacts.find_bias(embeddings, loaded) if use_bias else None
  return ItemTable(loaded.vectors[rows], [loaded.tokens[r] for r in rows],
                   None if bias is None else bias[rows])


class ItemLoader:
  """A picklable loader of the item table (no closure over local state).

  Attributes:
    embeddings: the export directory.
    table: the item feature name.
    use_bias: add the exported item bias when there is one.
  """

  def __init__(self, embeddings: str, table: str, use_bias: bool):
    self.embeddings = embeddings
    self.table = table
    self.use_bias = use_bias

  def __call__(self) -> ItemTable:
    return load_item_table(self.embeddings, self.table, self.use_bias)


class ParseWord2VecLine(beam.DoFn):
  """`token v1 .. vd` -> (token, float32 [d]); reserved rows dropped."""

  def __init__(self, dimension: int, skip_tokens: Sequence[str]):
    """Keeps the parsing rules.

    Args:
      dimension: values per vector.
      skip_tokens: rows that stand for no user (OOV buckets, the default
        row: core.artifacts.reserved_tokens).
    """
    self._dimension = dimension
    self._skip = frozenset(skip_tokens)
    self._read = Metrics.counter(NAMESPACE, "users_read")
    self._rejected = Metrics.counter(NAMESPACE, "user_lines_rejected")

  def process(self, line: str):
    fields = line.split(" ")
    token = fields[0]
    if not token or token in self._skip:
      return
    if len(fields) != self._dimension + 1:
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
          "table": "users", "reason": BAD_VECTOR, "raw": line[:200]})
      return
    self._read.inc()
    yield token, np.array(fields[1:], dtype=np.float32)


class RecordBatchToPairs(beam.DoFn):
  """Arrow RecordBatches of ratings -> (user, item) string pairs."""

  def __init__(self, user_key: str, item_key: str):
    self._user_key = user_key
    self._item_key = item_key
    self._read = Metrics.counter(NAMESPACE, "seen_rows_read")
    self._rejected = Metrics.counter(NAMESPACE, "seen_rows_rejected")

  def process(self, batch):
    users = batch.column(batch.schema.get_field_index(self._user_key))
    items = batch.column(batch.schema.get_field_index(self._item_key))
    for user, item in zip(users.to_pylist(), items.to_pylist()):
      self._read.inc()
      if not user or not item or user[0] is None or item[0] is None:
        self._rejected.inc()
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
            "table": "seen", "reason": MISSING_ID,
            "raw": {"user": _text(user), "item": _text(item)}})
        continue
      # word2vec.txt spells tokens with whitespace as `_`; users must match.
      yield artifacts.word2vec_token(_text(user[0])), _text(item[0])


def _text(value) -> Optional[str]:
  if value is None:
    return None
  if isinstance(value, list):
    return ",".join(str(_text(v)) for v in value)
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def nothing_seen(pair: Tuple[str, np.ndarray]
                ) -> Tuple[str, np.ndarray, List[str]]:
  """(user, vector) -> (user, vector, no seen items), when --seen is unset."""
  return pair[0], pair[1], []


class AttachSeen(beam.DoFn):
  """CoGroupByKey result -> (user, vector, seen items); rejects orphans."""

  def __init__(self):
    self._orphans = Metrics.counter(NAMESPACE, "users_without_embedding")

  def process(self, element):
    user, grouped = element
    vectors = list(grouped["vector"])
    seen = sorted(set(grouped["seen"]))
    if not vectors:
      self._orphans.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
          "table": "seen", "reason": NO_EMBEDDING, "raw": {"user": user}})
      return
    yield user, vectors[0], seen


class ScoreUserBlock(beam.DoFn):
  """Scores a block of users against every item; emits top-k per user."""

  def __init__(self, loader, k: int, item_block: int,
               shared_handle: shared.Shared):
    """Keeps what the workers need; the table itself loads in setup().

    Args:
      loader: a picklable callable returning the ItemTable (an ItemLoader).
      k: recommendations per user.
      item_block: items scored at a time.
      shared_handle: a beam.utils.shared.Shared, so threads of one worker
        process share one copy of the table.
    """
    self._loader = loader
    self._k = k
    self._item_block = item_block
    self._shared = shared_handle
    self._items = None
    self._scored = Metrics.counter(NAMESPACE, "users_scored")
    self._blocks = Metrics.counter(NAMESPACE, "blocks_scored")
    self._unknown = Metrics.counter(NAMESPACE, "seen_items_unknown")

  def setup(self):
    self._items = self._shared.acquire(self._loader)

  def process(self, block):
    items = self._items
    users = [user for user, _, _ in block]
    vectors = np.stack([vector for _, vector, _ in block])
    exclude, unknown = [], 0
    for _, _, seen in block:
      rows = [items.row_of.get(token, -1) for token in seen]
      unknown += sum(1 for row in rows if row < 0)
      exclude.append([row for row in rows if row >= 0])
    if unknown:
      self._unknown.inc(unknown)
    scores, ids = index_lib.top_k(vectors, items.vectors, self._k,
                                  item_bias=items.bias, exclude=exclude,
                                  item_block=self._item_block)
    self._blocks.inc()
    self._scored.inc(len(users))
    for user, row_scores, row_ids in zip(users, scores, ids):
      keep = row_ids >= 0
      yield {"user": user,
             "items": [items.tokens[i] for i in row_ids[keep]],
             "scores": [float(s) for s in row_scores[keep]]}


class CountRecords(beam.DoFn):
  """Passes records through, counting them under `counter` (what is written)."""

  def __init__(self, counter: str):
    self._counter = Metrics.counter(NAMESPACE, counter)

  def process(self, record):
    self._counter.inc()
    yield record


class JoinSeen(beam.PTransform):
  """(user, vector) + (user, item) pairs -> (user, vector, sorted seen items).

  Outputs: main, and DEAD_LETTER for users with ratings but no vector.
  """

  def expand(self, pcolls):
    users, seen = pcolls
    return ({"vector": users, "seen": seen}
            | "GroupByUser" >> beam.CoGroupByKey()
            | "AttachSeen" >> beam.ParDo(AttachSeen()).with_outputs(
                DEAD_LETTER, main="users"))


class RecommendTopK(beam.PTransform):
  """(user, vector, seen items) -> {"user", "items", "scores"} per user."""

  def __init__(self, loader, k: int, block_size: int = 512,
               item_block: int = index_lib.DEFAULT_ITEM_BLOCK):
    """Keeps the scoring settings.

    Args:
      loader: a picklable callable returning the ItemTable (an ItemLoader).
      k: recommendations per user.
      block_size: users scored together.
      item_block: items scored at a time within a block.
    """
    super().__init__()
    self._loader = loader
    self._k = k
    self._block_size = block_size
    self._item_block = item_block

  def expand(self, users):
    return (users
            | "BlockUsers" >> beam.BatchElements(
                min_batch_size=self._block_size,
                max_batch_size=self._block_size)
            | "ScoreBlocks" >> beam.ParDo(ScoreUserBlock(
                self._loader, self._k, self._item_block, shared.Shared())))


def _seen_schema(user_key: str, item_key: str, id_type: str):
  schema = schema_pb2.Schema()
  kind = (schema_pb2.INT if id_type == options_lib.INT_IDS else
          schema_pb2.BYTES)
  for name in (user_key, item_key):
    feature = schema.feature.add()
    feature.name = name
    feature.type = kind
  return schema


def seen_source(pattern: str, file_format: str, columns: Sequence[str],
                delimiter: str, skip_header_lines: int, id_type: str,
                user_key: str, item_key: str) -> beam.PTransform:
  """The TFXIO source of the ratings whose items are excluded.

  Args:
    pattern: the ratings file pattern.
    file_format: CSV or TFRECORD (tf.Example; recommend_batch_options).
    columns: CSV column names in file order.
    delimiter: the CSV delimiter; backslash escapes (`\\t`) are decoded.
    skip_header_lines: CSV lines to skip at the start of each file.
    id_type: STRING_IDS or INT_IDS (recommend_batch_options), the type of
      the id features.
    user_key: the user id column (feature).
    item_key: the item id column (feature).

  Returns:
    A PTransform from the pipeline to Arrow RecordBatches holding the two
    id columns.

  Raises:
    ValueError: CSV columns that lack one of the keys.
  """
  schema = _seen_schema(user_key, item_key, id_type)
  if file_format == options_lib.CSV:
    columns = list(columns)
    for key in (user_key, item_key):
      if key not in columns:
        raise ValueError(f"--seen_columns {columns} must include {key!r}")
    source = tfxio.CsvTFXIO(
        pattern, column_names=columns,
        delimiter=delimiter.encode().decode("unicode_escape"),
        skip_header_lines=skip_header_lines, schema=schema,
        telemetry_descriptors=_TELEMETRY)
  else:
    source = tfxio.TFExampleRecord(pattern, schema=schema,
                                   telemetry_descriptors=_TELEMETRY)
  return source.BeamSource(batch_size=_SEEN_BATCH_SIZE)


def parquet_schema() -> pa.Schema:
  """The Arrow schema of one recommendation record."""
  return pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())),
                    ("scores", pa.list_(pa.float32()))])
