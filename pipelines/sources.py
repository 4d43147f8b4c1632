"""Reading raw input tables as batches: CSV, Parquet, tf.Example, BigQuery.

Every reader emits batches, never one element per row, because per-element
Beam overhead dominates a preprocessing job at millions of rows:

* CSV (any one-character delimiter, any ASCII-compatible encoding, with or
  without a header): files are cut into byte ranges that workers read in
  parallel; each range yields blocks of complete lines as raw bytes, so
  decoding and parsing (pipelines/parsers.py) happen a block at a time and
  rows that do not decode can be dead-lettered instead of failing the job.
  Quoted fields are parsed with the csv module; a quoted field may not hold
  a line break, since ranges are cut at line breaks.
* Parquet: Beam's batched Parquet reader (Arrow tables).
* TFRecord of tf.Example: records grouped into lists for batch decoding.
* BigQuery (a table or a query): Beam's ReadFromBigQuery with the EXPORT
  method (a snapshot exported as Avro to --temp_location, read in parallel),
  its row dicts grouped into lists for batch parsing.

Paths go through Beam's FileSystems, so local paths, gs:// and any other
registered filesystem work the same. The inputs are checked before the
pipeline is built (pipelines/inputs.py).
"""

from typing import Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import spec as spec_lib

# Bytes per emitted CSV block: ~20K short rating rows, a few thousand wide
# rows. Big enough to amortize per-batch work, small enough to stream.
DEFAULT_BLOCK_BYTES = 1 << 19
# Byte range per CSV read task: the unit of parallelism across workers.
DEFAULT_RANGE_BYTES = 16 << 20
# tf.Example records decoded together.
DEFAULT_RECORD_BATCH = 8192
# BigQuery rows parsed together.
DEFAULT_ROW_BATCH = 8192


def iter_line_blocks(handle, start: int, end: Optional[int],
                     block_bytes: int) -> Iterator[bytes]:
  """Blocks of the complete lines that start in [start, end).

  A line belongs to the range its first byte lies in, so adjacent ranges of
  one file together yield every line exactly once.

  Args:
    handle: a readable binary file, seekable when start > 0.
    start: first byte offset of the range.
    end: end offset (exclusive), or None for the rest of the file.
    block_bytes: read size; blocks are about this long.

  Yields:
    bytes holding whole lines, each ending in b"\\n" except maybe the last
    line of the file.
  """
  buffer = b""
  pos = start
  if start > 0:
    # The line that straddles `start` belongs to the previous range; the
    # byte before `start` tells whether one does.
    handle.seek(start - 1)
    pos = start - 1
    while True:
      chunk = handle.read(block_bytes)
      if not chunk:
        return
      newline = chunk.find(b"\n")
      if newline >= 0:
        pos += newline + 1
        buffer = chunk[newline + 1:]
        break
      pos += len(chunk)
  while end is None or pos < end:
    chunk = handle.read(block_bytes)
    if chunk:
      buffer += chunk
      cut = buffer.rfind(b"\n")
      if cut < 0:
        continue
      complete, buffer = buffer[:cut + 1], buffer[cut + 1:]
    else:
      # End of file: the rest is whole lines, the last maybe unterminated.
      complete, buffer = buffer, b""
      if not complete:
        return
    if end is not None and pos + len(complete) > end:
      # Keep the lines that start before `end`; the one holding byte
      # end - 1 is the last of them.
      last = complete.find(b"\n", end - pos - 1)
      yield complete if last < 0 else complete[:last + 1]
      return
    yield complete
    pos += len(complete)


class _SplitIntoRanges(beam.DoFn):
  """FileMetadata -> (path, start, end or None, compression) read tasks."""

  def __init__(self, range_bytes: int):
    self._range_bytes = range_bytes

  def process(self, metadata):
    path, size = metadata.path, metadata.size_in_bytes
    compression = CompressionTypes.detect_compression_type(path)
    if compression != CompressionTypes.UNCOMPRESSED:
      # A compressed stream cannot be entered in the middle.
      yield path, 0, None, compression
      return
    for start in range(0, max(size, 1), self._range_bytes):
      yield path, start, min(start + self._range_bytes, size), compression


class _ReadRanges(beam.DoFn):
  """A read task -> blocks of complete lines (bytes); the header skipped."""

  def __init__(self, header: bool, block_bytes: int):
    self._header = header
    self._block_bytes = block_bytes

  def process(self, task):
    path, start, end, compression = task
    with FileSystems.open(path, compression_type=compression) as handle:
      skip_header = self._header and start == 0
      for block in iter_line_blocks(handle, start, end, self._block_bytes):
        if skip_header:
          skip_header = False
          newline = block.find(b"\n")
          block = b"" if newline < 0 else block[newline + 1:]
        if block:
          yield block


class ReadCsvBlocks(beam.PTransform):
  """File pattern -> PCollection of bytes blocks of whole CSV lines."""

  def __init__(self, pattern: str, header: bool,
               block_bytes: int = DEFAULT_BLOCK_BYTES,
               range_bytes: int = DEFAULT_RANGE_BYTES):
    """Builds the reader.

    Args:
      pattern: file pattern on any Beam filesystem.
      header: skip each file's first line.
      block_bytes: about how many bytes each emitted block holds.
      range_bytes: size of the byte ranges read in parallel.
    """
    super().__init__()
    self._pattern = pattern
    self._header = header
    self._block_bytes = block_bytes
    self._range_bytes = range_bytes

  def expand(self, pbegin):
    return (pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "SplitIntoRanges" >> beam.ParDo(
                _SplitIntoRanges(self._range_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(
                _ReadRanges(self._header, self._block_bytes)))


class ReadParquetTables(beam.PTransform):
  """File pattern -> PCollection of pyarrow Tables holding `columns`."""

  def __init__(self, pattern: str, columns: Sequence[str]):
    """Builds the reader.

    Args:
      pattern: file pattern on any Beam filesystem.
      columns: the columns to read.
    """
    super().__init__()
    self._pattern = pattern
    self._columns = list(columns)

  def expand(self, pbegin):
    return pbegin | "ReadParquet" >> beam.io.ReadFromParquetBatched(
        self._pattern, columns=self._columns)


class ReadExampleLists(beam.PTransform):
  """TFRecord tf.Example file pattern -> lists of serialized records."""

  def __init__(self, pattern: str, batch_size: int = DEFAULT_RECORD_BATCH):
    """Builds the reader.

    Args:
      pattern: file pattern; compression is detected from the extension.
      batch_size: records per emitted list.
    """
    super().__init__()
    self._pattern = pattern
    self._batch_size = batch_size

  def expand(self, pbegin):
    return (pbegin
            | "ReadTFRecord" >> beam.io.ReadFromTFRecord(
                self._pattern, coder=beam.coders.BytesCoder())
            | "Batch" >> beam.BatchElements(
                min_batch_size=self._batch_size,
                max_batch_size=self._batch_size))


class BatchRowDicts(beam.PTransform):
  """Row dicts -> lists of row dicts, the unit parsers.parse_row_dicts takes."""

  def __init__(self, batch_size: int = DEFAULT_ROW_BATCH):
    """Builds the batching step.

    Args:
      batch_size: rows per emitted list (the last of a bundle may be
        shorter).
    """
    super().__init__()
    self._batch_size = batch_size

  def expand(self, rows):
    return rows | "Batch" >> beam.BatchElements(
        min_batch_size=self._batch_size, max_batch_size=self._batch_size)


class ReadBigQueryRowLists(beam.PTransform):
  """A BigQuery table or query -> lists of row dicts.

  Beam's ReadFromBigQuery with the EXPORT method: BigQuery exports a
  snapshot (of the table, or of the query's result table) as Avro files
  under --temp_location, which workers read in parallel and delete after.
  Values arrive as Python values (INT64 int, FLOAT64 float, STRING str,
  NUMERIC Decimal, TIMESTAMP datetime, NULL None); pipelines/parsers.py types
  and checks them against the spec.
  """

  def __init__(self, table: spec_lib.InputTable,
               batch_size: int = DEFAULT_ROW_BATCH):
    """Builds the reader.

    Args:
      table: a bigquery input table (its `table` or `query`).
      batch_size: rows per emitted list.
    """
    super().__init__()
    self._table = table
    self._batch_size = batch_size

  def read_transform(self) -> beam.io.ReadFromBigQuery:
    """Beam's BigQuery read for the table or query."""
    if self._table.query is not None:
      source = {"query": self._table.query,
                "use_standard_sql": self._table.use_standard_sql}
    else:
      source = {"table": self._table.table}
    return beam.io.ReadFromBigQuery(
        method=beam.io.ReadFromBigQuery.Method.EXPORT, **source)

  def expand(self, pbegin):
    return (pbegin
            | "ReadFromBigQuery" >> self.read_transform()
            | "BatchRows" >> BatchRowDicts(self._batch_size))


def read_table(pbegin, table: spec_lib.InputTable, pattern: Optional[str],
               label: str) -> beam.PCollection:
  """Applies the reader for `table`'s format.

  Args:
    pbegin: the pipeline.
    table: the input table.
    pattern: the file pattern to read (table.path or table.eval_path);
      unused for bigquery.
    label: a unique step label.

  Returns:
    A PCollection of raw batches: bytes blocks (csv), pyarrow Tables
    (parquet), lists of serialized tf.Examples (tfrecord) or lists of row
    dicts (bigquery).
  """
  if table.format == "csv":
    reader = ReadCsvBlocks(pattern, table.header)
  elif table.format == "parquet":
    reader = ReadParquetTables(pattern, table.columns)
  elif table.is_bigquery:
    reader = ReadBigQueryRowLists(table)
  else:
    reader = ReadExampleLists(pattern)
  return pbegin | label >> reader
