"""The read, parse and join steps of `embeddings preprocess`.

Each table is read and parsed in batches (sources.py, parsers.py), side
tables' rejected keys and names are collected, and side tables are joined
onto the main table (joins.py). `pipelines.job.build_pipeline` assembles
these steps, the split, tf.Transform and the writes into the whole job.
"""
from typing import List, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from tfx_bsl.coders import example_coder
from tfx_bsl.public import tfxio

from core import layout
from pipelines import counts as counts_lib
from pipelines import joins as joins_lib
from pipelines import names as names_lib
from pipelines import parsers
from pipelines import progress
from pipelines import rows as rows_lib
from pipelines import sinks
from pipelines import sources
from pipelines import split as split_lib
from transforms import spec as spec_lib

METRICS_NAMESPACE = "embeddings.preprocess"
_DEAD = joins_lib.DEAD_LETTER_TAG
COUNTS_TAG = "counts"
# Appended to the labels of the analysis pass's steps (ReadMainForAnalysis,
# ...); the transform pass keeps the plain labels.
ANALYSIS_SUFFIX = "ForAnalysis"


class ParseBatches(beam.DoFn):
  """Raw batches of one table -> typed RecordBatches, dead letters, counts."""

  def __init__(self, rules: rows_lib.TableRules, fmt: str,
               split_name: Optional[str], phase: Optional[str] = None):
    """Builds the parser.

    Args:
      rules: the table's rules.
      fmt: csv, parquet, tfrecord or bigquery.
      split_name: stamp rows with this split (tables with eval_path), or
        None.
      phase: the pass whose progress lines count these rows (progress.py),
        or None for none (side tables, read once and quickly).
    """
    self._rules = rules
    self._format = fmt
    self._split_name = split_name
    self._phase = phase
    self._decoder = None
    # Each pass over the main table has its own counter, so a Beam UI shows
    # how far each pass is.
    prefix = "" if phase in (None, progress.ONE_PASS, progress.TRANSFORM_PASS) \
        else f"{phase}_"
    self._read = Metrics.counter(METRICS_NAMESPACE,
                                 f"{prefix}{rules.table}_rows_read")

  def setup(self):
    if self._format == "tfrecord":
      self._decoder = example_coder.ExamplesToRecordBatchDecoder()

  def _parse(self, raw) -> parsers.Parsed:
    if self._format == "csv":
      return parsers.parse_csv_block(self._rules, raw)
    if self._format == "parquet":
      return parsers.parse_arrow_table(self._rules, raw)
    if self._format == spec_lib.BIGQUERY:
      return parsers.parse_row_dicts(self._rules, raw)
    return parsers.parse_examples(self._rules, raw, self._decoder)

  def process(self, raw, total_rows=None):
    batch, letters, read, blank = self._parse(raw)
    self._read.inc(read)
    if self._phase is not None:
      progress.rows_read(self._phase, read, total_rows)
    yield beam.pvalue.TaggedOutput(
        COUNTS_TAG, ((counts_lib.READ, self._rules.table), read))
    if blank:
      yield beam.pvalue.TaggedOutput(
          COUNTS_TAG, ((counts_lib.BLANK, self._rules.table), blank))
    for letter in letters:
      yield beam.pvalue.TaggedOutput(_DEAD, letter)
    if batch.num_rows:
      if self._split_name is not None:
        stamp = pa.array([split_lib.split_id(self._split_name)]
                         * batch.num_rows, pa.int8())
        batch = pa.RecordBatch.from_arrays(
            list(batch.columns) + [stamp],
            names=list(batch.schema.names) + [rows_lib.SPLIT_COLUMN])
      yield batch


class CountDeadLetters(beam.DoFn):
  """Dead letters -> ("rejected", table, reason) counts and Beam counters."""

  def process(self, letter):
    Metrics.counter(METRICS_NAMESPACE,
                    f"{letter['table']}_rows_rejected").inc()
    Metrics.counter(METRICS_NAMESPACE,
                    f"{letter['table']}_rejected_{letter['reason']}").inc()
    yield (counts_lib.REJECTED, letter["table"], letter["reason"]), 1
    if "side_table" in letter:
      yield (counts_lib.LOST, letter["table"], letter["side_table"]), 1


class EncodeExamples(beam.DoFn):
  """RecordBatches -> framed TFRecord bytes of tf.Examples, and counts.

  Takes TransformDataset's (RecordBatch, passthrough) pairs with their
  transformed schema, or raw TFXIO RecordBatches with no schema (each of
  their columns is a list of one value, which encodes without one).
  """

  def __init__(self, split_name: str):
    """Builds the encoder step.

    Args:
      split_name: the output (layout.TRAIN, EVAL or RAW_EVAL), for the
        written-rows counts.
    """
    self._split_name = split_name
    self._schema = None
    self._encoder = None
    self._written = Metrics.counter(METRICS_NAMESPACE,
                                    f"{split_name}_rows_written")

  def process(self, element, schema=None):
    batch = element if isinstance(element, pa.RecordBatch) else element[0]
    if self._encoder is None or schema is not self._schema:
      self._encoder = tfxio.RecordBatchToExamplesEncoder(schema)
      self._schema = schema
    records = self._encoder.encode(batch)
    self._written.inc(len(records))
    yield beam.pvalue.TaggedOutput(
        COUNTS_TAG, ((counts_lib.WRITTEN, self._split_name), len(records)))
    if records:
      yield sinks.frame_records(records)


class ParsedTable(NamedTuple):
  """One table's raw batches after parsing.

  Attributes:
    rows: typed RecordBatches of the valid rows.
    dead_letters: dead-letter dicts of the rejected rows.
    counts: (("read", table), rows) pairs, one per raw batch.
  """
  rows: beam.PCollection
  dead_letters: beam.PCollection
  counts: beam.PCollection


def parse_table(raw: beam.PCollection, fmt: str, rules: rows_lib.TableRules,
                split_name: Optional[str], label: str,
                phase: Optional[str] = None, total_rows=None) -> ParsedTable:
  """Parses and validates one table's raw batches (the step after read).

  Args:
    raw: raw batches as sources.read_table emits them for `fmt`.
    fmt: the table's format.
    rules: the table's rules.
    split_name: stamp rows with this split (tables with eval_path), or None.
    label: a unique step label (the step is "Parse<label>").
    phase: the pass whose progress lines count the rows, or None.
    total_rows: an AsSingleton of the rows the pass will read, or None.

  Returns:
    The valid rows, dead letters and read counts.
  """
  side_inputs = {} if total_rows is None else {"total_rows": total_rows}
  parsed = raw | f"Parse{label}" >> beam.ParDo(
      ParseBatches(rules, fmt, split_name, phase), **side_inputs).with_outputs(
          _DEAD, COUNTS_TAG, main="rows")
  return ParsedTable(parsed.rows, parsed[_DEAD], parsed[COUNTS_TAG])


class JoinedRows(NamedTuple):
  """What read_and_join adds to a pipeline.

  Attributes:
    batches: joined RecordBatches (main columns, side columns, RAW_COLUMN
      and, with eval_path, SPLIT_COLUMN).
    schema: their Arrow schema.
    dead_letters: PCollections of dead-letter dicts, one per step.
    counts: PCollections of (("read", table), rows) pairs.
  """
  batches: beam.PCollection
  schema: pa.Schema
  dead_letters: List[beam.PCollection]
  counts: List[beam.PCollection]


def _read_main(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
               rules: rows_lib.TableRules, suffix: str, phase: str,
               total_rows=None) -> JoinedRows:
  """The main table's rows, from its path and, if given, its eval_path."""
  main = spec.main_table
  patterns = [(main.path, None if main.eval_path is None else layout.TRAIN)]
  if main.eval_path is not None:
    patterns.append((main.eval_path, layout.EVAL))
  parts = []
  for pattern, split_name in patterns:
    label = f"Main{split_name.capitalize() if split_name else ''}{suffix}"
    raw = sources.read_table(pipeline, main, pattern, f"Read{label}")
    parts.append(parse_table(raw, main.format, rules, split_name, label,
                             phase, total_rows))
  batches = parts[0].rows
  if len(parts) > 1:
    batches = ([part.rows for part in parts]
               | f"FlattenMain{suffix}" >> beam.Flatten())
  schema = rules.schema
  if main.eval_path is not None:
    schema = schema.append(pa.field(rows_lib.SPLIT_COLUMN, pa.int8()))
  return JoinedRows(batches, schema, [part.dead_letters for part in parts],
                    [part.counts for part in parts])


class SideTable(NamedTuple):
  """One side table, read once and joined onto every pass over the main rows.

  Attributes:
    join: the spec's join.
    rules: the rules of the columns the join adds (display columns
      dropped).
    rows: its valid rows, as RecordBatches of `rules`' columns.
    built: with a broadcast join, the singleton joins.SideTable; else None.
    rejected: the side input rejected_keys gives.
    dead_letters: PCollections of its dead letters (parser, build).
    counts: its read counts.
  """
  join: spec_lib.Join
  rules: rows_lib.TableRules
  rows: beam.PCollection
  built: Optional[beam.PCollection]
  rejected: object
  dead_letters: List[beam.PCollection]
  counts: beam.PCollection


def read_side_table(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                    join: spec_lib.Join, side_rules: rows_lib.TableRules,
                    out: Optional[layout.PreprocessedLayout]) -> SideTable:
  """Reads, parses and validates one side table, ready to join.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    join: the spec's join of this table.
    side_rules: the table's rules.
    out: where to write the names files the table gives (none when None).

  Returns:
    The SideTable.
  """
  side = spec.inputs[join.table]
  label = join.table.capitalize()
  raw = sources.read_table(pipeline, side, side.path, f"ReadSide{label}")
  parsed = parse_table(raw, side.format, side_rules, None, f"Side{label}")
  if out is not None:
    names_lib.write_names(parsed.rows, spec, join.table, side_rules, out)
  dead_letters = [parsed.dead_letters]
  rejected = joins_lib.rejected_keys(parsed.dead_letters, f"Rejected{label}")
  # Display columns are written to the names files only; the joined rows
  # do not carry them.
  join_rules = side_rules.without_display()
  side_rows = parsed.rows
  if join_rules is not side_rules:
    side_rows = parsed.rows | f"Drop{label}Names" >> beam.Map(
        _select_columns, list(join_rules.schema.names))
  built = None
  if join.how == "broadcast":
    result = (side_rows
              | f"Collect{label}" >> beam.combiners.ToList()
              | f"Build{label}" >> beam.ParDo(
                  joins_lib.BuildSideTable(join_rules)).with_outputs(
                      _DEAD, main="table"))
    dead_letters.append(result[_DEAD])
    built = result.table
  return SideTable(join, join_rules, side_rows, built, rejected, dead_letters,
                   parsed.counts)


def _join_side(spec: spec_lib.FeatureSpec, side: SideTable,
               joined: JoinedRows, suffix: str) -> JoinedRows:
  """Joins one side table onto `joined`, as the spec says how."""
  join = side.join
  label = f"{join.table.capitalize()}{suffix}"
  if side.built is not None:
    result = joined.batches | f"Join{label}" >> beam.ParDo(
        joins_lib.BroadcastJoin(join.table, join.by, spec.main),
        side=beam.pvalue.AsSingleton(side.built),
        rejected=side.rejected).with_outputs(_DEAD, main="joined")
    batches = result.joined
  else:
    result = joined.batches | f"Join{label}" >> joins_lib.ShuffleJoin(
        side.rows, side.rules, join.by, spec.main, joined.schema,
        side.rejected)
    batches = result["joined"]
  return JoinedRows(batches, joins_lib.joined_schema(joined.schema, side.rules),
                    joined.dead_letters + [result[_DEAD]], joined.counts)


def _select_columns(batch: pa.RecordBatch, names: List[str]) -> pa.RecordBatch:
  return batch.select(names)


def read_side_tables(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                     rules: Mapping[str, rows_lib.TableRules],
                     out: Optional[layout.PreprocessedLayout] = None
                    ) -> List[SideTable]:
  """Every joined table, read once (read_side_table), in the spec's order.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules.
    out: where to write the side tables' names files (none when None).

  Returns:
    One SideTable per join.
  """
  return [read_side_table(pipeline, spec, join, rules[join.table], out)
          for join in spec.joins]


def join_main(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
              rules: Mapping[str, rows_lib.TableRules],
              sides: Sequence[SideTable], suffix: str = "",
              phase: str = progress.ONE_PASS, total_rows=None) -> JoinedRows:
  """One pass over the main table: read, parse, validate, join every side.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules.
    sides: read_side_tables' result.
    suffix: appended to every step label of this pass (unique labels when
      a job reads the main table twice).
    phase: the progress lines' name of this pass (progress.py).
    total_rows: an AsSingleton of the rows this pass will read (for an
      ETA), or None.

  Returns:
    The joined main batches, their schema, and the dead letters and read
    counts of this pass's steps (not the side tables').
  """
  joined = _read_main(pipeline, spec, rules[spec.main], suffix, phase,
                      total_rows)
  for side in sides:
    joined = _join_side(spec, side, joined, suffix)
  return joined


def read_and_join(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                  rules: Mapping[str, rows_lib.TableRules],
                  out: Optional[layout.PreprocessedLayout] = None
                 ) -> JoinedRows:
  """Reads, parses and validates every table and joins the side tables.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).
    out: where to write the names files (none when None).

  Returns:
    The joined main batches, their schema, and every dead letter and read
    count (the side tables' included).
  """
  sides = read_side_tables(pipeline, spec, rules, out)
  joined = join_main(pipeline, spec, rules, sides)
  return with_sides(joined, sides)


def with_sides(joined: JoinedRows, sides: Sequence[SideTable]) -> JoinedRows:
  """Adds the side tables' dead letters and counts to one pass's."""
  dead_letters = [letters for side in sides for letters in side.dead_letters]
  return joined._replace(
      dead_letters=joined.dead_letters + dead_letters,
      counts=joined.counts + [side.counts for side in sides])
