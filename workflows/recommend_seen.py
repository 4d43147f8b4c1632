"""The seen side of recommend-batch: --seen ratings -> packed row chunks.

CSV files are read by pyarrow's streaming CSV reader (a file per DoFn call,
through Beam's filesystems, so gs:// and compressed files work), tf.Example
TFRecords through TFXIO; either way as Arrow RecordBatches handled
column-wise, with no Python per row. TFXIO's CSV source parses each line in
Python, which at tens of millions of ratings takes longer than scoring.

PackSeenBatches turns each batch's ids into rows of the user and item
tables where it reads them (recommend_tables.TokenRows) and packs them as
compressed int32 pairs per user shard (recommend_chunks.pack_pairs), so
the join's shuffle, and the in-process runner that holds it in memory,
keep a few bytes a rating rather than a string and a Python object per
pair. Users the user table lacks leave as UNKNOWN_USERS chunks, once per
chunk with their rating count, for the scoring side to dead-letter once
each.
"""

from typing import List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from core import files
from workflows import recommend_batch_options as options_lib
from workflows import recommend_chunks as chunks_lib
from workflows import recommend_tables as tables_lib

# Rows per seen RecordBatch: large enough that the column-wise work per
# batch dwarfs its fixed cost.
_SEEN_BATCH_SIZE = 65536
# Bytes of CSV pyarrow parses at a time (the reader's memory).
_CSV_BLOCK_BYTES = 8 << 20
_TELEMETRY = ["embeddings", "recommend"]
NAMESPACE = chunks_lib.NAMESPACE


class BadCsvRow:
  """A --seen CSV line pyarrow could not split into the columns."""

  def __init__(self, text: str):
    self.text = text


class ReadCsvIds(beam.DoFn):
  """CSV file path -> RecordBatches of its user and item columns (strings).

  Empty ids are nulls (rejected downstream as MISSING_ID); lines with the
  wrong number of fields come out as BadCsvRow.
  """

  def __init__(self, columns: Sequence[str], delimiter: str,
               skip_header_lines: int, user_key: str, item_key: str):
    """Keeps the file's layout.

    Args:
      columns: the column names in file order.
      delimiter: the delimiter (one character, escapes already decoded).
      skip_header_lines: lines to skip at the start of the file.
      user_key: the user id column.
      item_key: the item id column.
    """
    self._columns = list(columns)
    self._delimiter = delimiter
    self._skip = skip_header_lines
    self._keys = [user_key, item_key]

  def process(self, path: str):
    bad: List[str] = []

    def keep_bad(row):
      bad.append(row.text)
      return "skip"

    with FileSystems.open(path) as handle:
      reader = pa_csv.open_csv(
          handle,
          read_options=pa_csv.ReadOptions(column_names=self._columns,
                                          skip_rows=self._skip,
                                          block_size=_CSV_BLOCK_BYTES),
          parse_options=pa_csv.ParseOptions(delimiter=self._delimiter,
                                            invalid_row_handler=keep_bad),
          convert_options=pa_csv.ConvertOptions(
              include_columns=self._keys,
              column_types={key: pa.string() for key in self._keys},
              strings_can_be_null=True, null_values=[""]))
      for batch in reader:
        for text in bad:
          yield BadCsvRow(text)
        bad.clear()
        yield batch
    for text in bad:
      yield BadCsvRow(text)


class ReadSeenCsv(beam.PTransform):
  """The files of a CSV pattern -> RecordBatches (and BadCsvRow)."""

  def __init__(self, pattern: str, reader: ReadCsvIds):
    super().__init__()
    self._pattern = pattern
    self._reader = reader

  def expand(self, pipeline):
    return (pipeline
            | "SeenFiles" >> beam.Create(files.glob(self._pattern))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadCsv" >> beam.ParDo(self._reader))


def _first_values(column) -> Tuple[np.ndarray, pa.Array]:
  """Which rows of an id column hold a first value, and those values.

  Args:
    column: an Arrow list array (TFXIO's id columns, one list per row) or
      a plain array (the CSV reader's).

  Returns:
    (bool [rows], the present rows' first values as an Arrow string array).
  """
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  if not (pa.types.is_list(column.type) or
          pa.types.is_large_list(column.type)):
    present = column.is_valid()
    return (present.to_numpy(zero_copy_only=False),
            _as_strings(column.filter(present)))
  lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(
      zero_copy_only=False)
  has = lengths > 0
  starts = column.offsets.to_numpy()[:-1][has]
  first = column.values.take(pa.array(starts))
  valid = np.zeros(len(column), bool)
  valid[np.flatnonzero(has)] = first.is_valid().to_numpy(
      zero_copy_only=False)
  return valid, _as_strings(first.filter(first.is_valid()))


def _as_strings(values: pa.Array) -> pa.Array:
  """Ids as an Arrow string array (bytes decoded, invalid UTF-8 replaced)."""
  if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
    try:
      return pc.cast(values, pa.string())
    except pa.ArrowInvalid:
      return pa.array([value.decode("utf-8", errors="replace")
                       for value in values.to_pylist()], pa.string())
  return pc.cast(values, pa.string())


def _text(value) -> Optional[str]:
  if value is None:
    return None
  if isinstance(value, list):
    return ",".join(str(_text(v)) for v in value)
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


class PackSeenBatches(chunks_lib.ShardPacker):
  """Arrow RecordBatches of ratings -> (shard, SEEN / UNKNOWN_USERS chunks).

  Rows without a user or item id are dead-lettered (MISSING_ID), CSV lines
  that are no row too (BAD_CSV_ROW); the ids become rows of the user and
  item tables (item row -1, and counted, for items the table lacks; users
  it lacks go to UNKNOWN_USERS chunks).
  """

  def __init__(self, user_key: str, item_key: str,
               loader: tables_lib.TablesLoader, shared_handle: shared.Shared,
               shards: int = chunks_lib.DEFAULT_SHARDS,
               chunk_rows: int = chunks_lib.DEFAULT_CHUNK_ROWS):
    """Keeps the columns, the tables' loader and the packing rules.

    Args:
      user_key: the user id column.
      item_key: the item id column.
      loader: the TablesLoader, with user rows.
      shared_handle: the beam.utils.shared.Shared the scoring step holds the
        tables by, so a worker process loads them once.
      shards: user shards.
      chunk_rows: rows buffered before a flush.
    """
    super().__init__(shards, chunk_rows)
    self._user_key = user_key
    self._item_key = item_key
    self._loader = loader
    self._shared = shared_handle
    self._tables = None
    self._read = Metrics.counter(NAMESPACE, "seen_rows_read")
    self._rejected = Metrics.counter(NAMESPACE, "seen_rows_rejected")
    self._unknown = Metrics.counter(NAMESPACE, "seen_items_unknown")

  def setup(self):
    self._tables = self._shared.acquire(self._loader)

  def process(self, batch):
    if isinstance(batch, BadCsvRow):
      self._read.inc()
      self._rejected.inc()
      yield chunks_lib.dead_letter(chunks_lib.SEEN, chunks_lib.BAD_CSV_ROW,
                                   batch.text[:200])
      return
    users = batch.column(batch.schema.get_field_index(self._user_key))
    items = batch.column(batch.schema.get_field_index(self._item_key))
    self._read.inc(batch.num_rows)
    user_ok, user_values = _first_values(users)
    item_ok, item_values = _first_values(items)
    valid = user_ok & item_ok
    rejected = np.flatnonzero(~valid)
    if len(rejected):
      self._rejected.inc(len(rejected))
      taken = pa.array(rejected)
      for user, item in zip(users.take(taken).to_pylist(),
                            items.take(taken).to_pylist()):
        yield chunks_lib.dead_letter(
            chunks_lib.SEEN, chunks_lib.MISSING_ID,
            {"user": _text(user), "item": _text(item)})
    # Keep the rows valid on both sides, from the first values of each.
    user_tokens = tables_lib.word2vec_tokens(
        user_values.filter(pa.array(valid[user_ok])))
    item_rows = self._tables.items.rows_of(
        item_values.filter(pa.array(valid[item_ok])))
    unknown = int(np.count_nonzero(item_rows < 0))
    if unknown:
      self._unknown.inc(unknown)
    hashes = tables_lib.token_hashes(user_tokens)
    user_rows = self._tables.users.rows_of(user_tokens, hashes)
    known = user_rows >= 0
    yield from self._add(chunks_lib.SEEN,
                         chunks_lib.shard_of(hashes[known], self._shards),
                         user_rows[known], item_rows[known])
    if not known.all():
      counted = pc.value_counts(user_tokens.filter(pa.array(~known)))
      tokens = counted.field("values")
      yield from self._add(
          chunks_lib.UNKNOWN_USERS,
          chunks_lib.shard_of(tables_lib.token_hashes(tokens), self._shards),
          tokens, counted.field("counts").to_numpy())


  def _encode(self, kind: str, columns: Tuple) -> Tuple:
    if kind == chunks_lib.SEEN:
      return (chunks_lib.pack_pairs(*columns),)
    return columns


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
  """The source of the ratings whose items are excluded.

  Args:
    pattern: the ratings file pattern.
    file_format: CSV or TFRECORD (tf.Example; recommend_batch_options).
    columns: CSV column names in file order.
    delimiter: the CSV delimiter; backslash escapes (`\\t`) are decoded.
    skip_header_lines: CSV lines to skip at the start of each file.
    id_type: STRING_IDS or INT_IDS (recommend_batch_options), the type of
      the TFRecords' id features (CSV ids are read as strings).
    user_key: the user id column (feature).
    item_key: the item id column (feature).

  Returns:
    A PTransform from the pipeline to Arrow RecordBatches holding the two
    id columns (and, from CSV, BadCsvRow for lines it cannot split).

  Raises:
    ValueError: CSV columns that lack one of the keys.
  """
  if file_format == options_lib.CSV:
    columns = list(columns)
    for key in (user_key, item_key):
      if key not in columns:
        raise ValueError(f"--seen_columns {columns} must include {key!r}")
    return ReadSeenCsv(pattern, ReadCsvIds(
        columns, delimiter.encode().decode("unicode_escape"),
        skip_header_lines, user_key, item_key))
  source = tfxio.TFExampleRecord(
      pattern, schema=_seen_schema(user_key, item_key, id_type),
      telemetry_descriptors=_TELEMETRY)
  return source.BeamSource(batch_size=_SEEN_BATCH_SIZE)
