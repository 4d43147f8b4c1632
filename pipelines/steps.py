"""The Beam steps of `embeddings preprocess`, in the shape of wordcount.py.

`build_pipeline` adds the whole job to a pipeline; every step has a label
that is unique at the top level, so the runner's UI and the Dataflow job
file name each stage:

  Read<T> -> Parse<T>            each table, in batches (sources.py,
                                 parsers.py); T is MainTrain/MainEval or
                                 Main, and Side<Table>
  Rejected<Table>Keys -> ...ToDict
                                 the side rows its parser rejected, so a
                                 join names why a main row found none
  Collect<Table>Names -> Write<Table>Names
                                 a side table's names files (names.py)
  Drop<Table>Names               display columns, before the join
  Join<Table>                    each side table (joins.py)
  SplitAndConvert                train/eval, to TFXIO batches (split.py)
  CountTrainRows -> SumTrainRows -> AnnounceAnalysis
                                 a progress line once train is read
                                 (progress.py)
  Analyze -> WriteTransformFn    tf.Transform, on train only
  Transform<S> -> Announce<S> -> Schema<S> -> Encode<S> -> Write<S>
                                 S = Train, Eval: tf.Example TFRecords
  EncodeEvalRaw -> WriteEvalRaw  with raw_eval: the eval split's raw rows
  FlattenDeadLetters -> DeadLettersToJson -> WriteDeadLetters
  CountDeadLetters, FlattenCounts -> SumCounts -> CollectCounts
      -> CountsToJson -> WriteCounts   the counts the run report sums
                                       (pipelines/counts.py)
"""

import functools
import json
from typing import List, Mapping, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
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
from transforms import preprocessing
from transforms import spec as spec_lib

METRICS_NAMESPACE = "embeddings.preprocess"
_DEAD = joins_lib.DEAD_LETTER_TAG
_COUNTS = "counts"


class ParseBatches(beam.DoFn):
  """Raw batches of one table -> typed RecordBatches, dead letters, counts."""

  def __init__(self, rules: rows_lib.TableRules, fmt: str,
               split_name: Optional[str]):
    """Builds the parser.

    Args:
      rules: the table's rules.
      fmt: csv, parquet, tfrecord or bigquery.
      split_name: stamp rows with this split (tables with eval_path), or
        None.
    """
    self._rules = rules
    self._format = fmt
    self._split_name = split_name
    self._decoder = None
    self._read = Metrics.counter(METRICS_NAMESPACE, f"{rules.table}_rows_read")

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

  def process(self, raw):
    batch, letters, read, blank = self._parse(raw)
    self._read.inc(read)
    progress.rows_read(read)
    yield beam.pvalue.TaggedOutput(
        _COUNTS, ((counts_lib.READ, self._rules.table), read))
    if blank:
      yield beam.pvalue.TaggedOutput(
          _COUNTS, ((counts_lib.BLANK, self._rules.table), blank))
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
        _COUNTS, ((counts_lib.WRITTEN, self._split_name), len(records)))
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
                split_name: Optional[str], label: str) -> ParsedTable:
  """Parses and validates one table's raw batches (the step after read).

  Args:
    raw: raw batches as sources.read_table emits them for `fmt`.
    fmt: the table's format.
    rules: the table's rules.
    split_name: stamp rows with this split (tables with eval_path), or None.
    label: a unique step label (the step is "Parse<label>").

  Returns:
    The valid rows, dead letters and read counts.
  """
  parsed = raw | f"Parse{label}" >> beam.ParDo(
      ParseBatches(rules, fmt, split_name)).with_outputs(
          _DEAD, _COUNTS, main="rows")
  return ParsedTable(parsed.rows, parsed[_DEAD], parsed[_COUNTS])


def _read_and_parse(pipeline, table: spec_lib.InputTable,
                    pattern: Optional[str], rules: rows_lib.TableRules,
                    split_name: Optional[str], label: str) -> ParsedTable:
  raw = sources.read_table(pipeline, table, pattern, f"Read{label}")
  return parse_table(raw, table.format, rules, split_name, label)


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
               rules: rows_lib.TableRules) -> JoinedRows:
  """The main table's rows, from its path and, if given, its eval_path."""
  main = spec.main_table
  patterns = [(main.path, None if main.eval_path is None else layout.TRAIN)]
  if main.eval_path is not None:
    patterns.append((main.eval_path, layout.EVAL))
  parts = []
  for pattern, split_name in patterns:
    label = f"Main{split_name.capitalize() if split_name else ''}"
    parts.append(_read_and_parse(pipeline, main, pattern, rules, split_name,
                                 label))
  batches = parts[0].rows
  if len(parts) > 1:
    batches = [part.rows for part in parts] | "FlattenMain" >> beam.Flatten()
  schema = rules.schema
  if main.eval_path is not None:
    schema = schema.append(pa.field(rows_lib.SPLIT_COLUMN, pa.int8()))
  return JoinedRows(batches, schema, [part.dead_letters for part in parts],
                    [part.counts for part in parts])


def _join_side(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
               join: spec_lib.Join, side_rules: rows_lib.TableRules,
               joined: JoinedRows,
               out: Optional[layout.PreprocessedLayout]) -> JoinedRows:
  """Reads one side table and joins it onto `joined`, as the spec says how.

  With `out`, also writes the names files the side table gives.
  """
  side = spec.inputs[join.table]
  label = join.table.capitalize()
  parsed = _read_and_parse(pipeline, side, side.path, side_rules, None,
                           f"Side{label}")
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
  if join.how == "broadcast":
    built = (side_rows
             | f"Collect{label}" >> beam.combiners.ToList()
             | f"Build{label}" >> beam.ParDo(
                 joins_lib.BuildSideTable(join_rules)).with_outputs(
                     _DEAD, main="table"))
    dead_letters.append(built[_DEAD])
    result = joined.batches | f"Join{label}" >> beam.ParDo(
        joins_lib.BroadcastJoin(join.table, join.by, spec.main),
        side=beam.pvalue.AsSingleton(built.table),
        rejected=rejected).with_outputs(_DEAD, main="joined")
    batches = result.joined
  else:
    result = joined.batches | f"Join{label}" >> joins_lib.ShuffleJoin(
        side_rows, join_rules, join.by, spec.main, joined.schema, rejected)
    batches = result["joined"]
  dead_letters.append(result[_DEAD])
  return JoinedRows(batches, joins_lib.joined_schema(joined.schema, join_rules),
                    joined.dead_letters + dead_letters,
                    joined.counts + [parsed.counts])


def _select_columns(batch: pa.RecordBatch, names: List[str]) -> pa.RecordBatch:
  return batch.select(names)


def read_and_join(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                  rules: Mapping[str, rows_lib.TableRules],
                  out: Optional[layout.PreprocessedLayout] = None
                 ) -> JoinedRows:
  """Reads, parses and validates every table and joins the side tables.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).
    out: where to write the side tables' names files (none when None).

  Returns:
    The joined main batches, their schema, dead letters and read counts.
  """
  joined = _read_main(pipeline, spec, rules[spec.main])
  for join in spec.joins:
    joined = _join_side(pipeline, spec, join, rules[join.table], joined, out)
  return joined


def _split(batches: beam.PCollection, spec: spec_lib.FeatureSpec):
  """SplitAndConvert: joined batches -> TFXIO batches tagged by split."""
  split = spec.split
  return batches | "SplitAndConvert" >> beam.ParDo(split_lib.SplitAndConvert(
      spec.raw_column_types(), split.key if split else None,
      split.eval_fraction if split else 0.0,
      split.seed if split else 0)).with_outputs(layout.TRAIN, layout.EVAL)


def _write_examples(batches: beam.PCollection, split_name: str, label: str,
                    out: layout.PreprocessedLayout, num_shards: int,
                    schema=None) -> beam.PCollection:
  """Encode<label> -> Write<label>; returns the written-rows counts."""
  encoded = batches | f"Encode{label}" >> beam.ParDo(
      EncodeExamples(split_name), schema=schema).with_outputs(
          _COUNTS, main="records")
  _ = encoded.records | f"Write{label}" >> sinks.WriteFramedTFRecords(
      out.shard_prefix(split_name), file_name_suffix=layout.TFRECORD_SUFFIX,
      num_shards=num_shards)
  return encoded[_COUNTS]


def _schema_of(metadata):
  return metadata.schema


def _transform_and_write(batches: beam.PCollection, adapter_config,
                         transform_fn, split_name: str,
                         out: layout.PreprocessedLayout,
                         num_shards: int) -> beam.PCollection:
  """Transform<S> with the train split's transform_fn, then encode, write."""
  label = split_name.capitalize()
  transformed, metadata = (
      ((batches, adapter_config), transform_fn)
      | f"Transform{label}" >> tft_beam.TransformDataset(
          output_record_batches=True))
  # After TransformDataset, which waits for the analysis: the first
  # transformed batch marks the end of analyzing.
  transformed = transformed | f"Announce{label}" >> beam.ParDo(
      progress.AnnounceFirst("analyzed; transforming and writing"))
  schema = (metadata.deferred_metadata
            | f"Schema{label}" >> beam.Map(_schema_of))
  return _write_examples(transformed, split_name, label, out, num_shards,
                         schema=beam.pvalue.AsSingleton(schema))


def _to_json_line(record) -> str:
  return json.dumps(record, sort_keys=True)


def _write_dead_letters(dead_letters: List[beam.PCollection],
                        out: layout.PreprocessedLayout) -> beam.PCollection:
  """Writes every dead letter as a JSON line; returns their counts."""
  all_dead = dead_letters | "FlattenDeadLetters" >> beam.Flatten()
  _ = (all_dead
       | "DeadLettersToJson" >> beam.Map(_to_json_line)
       | "WriteDeadLetters" >> beam.io.WriteToText(
           out.dead_letter_prefix, file_name_suffix=layout.JSONL_SUFFIX))
  return all_dead | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())


def _write_counts(counts: List[beam.PCollection],
                  out: layout.PreprocessedLayout) -> None:
  """Sums every (kind, ...) -> rows pair into the one counts file."""
  _ = (counts
       | "FlattenCounts" >> beam.Flatten()
       | "SumCounts" >> beam.CombinePerKey(sum)
       | "CollectCounts" >> beam.combiners.ToList()
       | "CountsToJson" >> beam.Map(counts_lib.counts_json)
       | "WriteCounts" >> beam.io.WriteToText(out.counts,
                                              shard_name_template=""))


def build_pipeline(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                   rules: Mapping[str, rows_lib.TableRules], staging: str,
                   num_shards: int = 0, raw_eval: bool = False) -> None:
  """Adds the whole preprocessing job to `pipeline`.

  Must run inside a tft_beam.Context.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).
    staging: the staging output directory (layout.PreprocessedLayout).
    num_shards: TFRecord shards per split (0: the runner decides).
    raw_eval: also write the eval split's raw rows as tf.Examples
      (layout.RAW_EVAL).
  """
  out = layout.PreprocessedLayout(staging)
  joined = read_and_join(pipeline, spec, rules, out)
  counts = list(joined.counts)
  split = _split(joined.batches, spec)
  progress.announce_analysis(split[layout.TRAIN])
  adapter_config = split_lib.tensor_adapter_config(spec.raw_column_types())
  transform_fn = ((split[layout.TRAIN], adapter_config)
                  | "Analyze" >> tft_beam.AnalyzeDataset(
                      functools.partial(preprocessing.preprocessing_fn,
                                        spec=spec)))
  _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)
  for split_name in layout.SPLITS:
    counts.append(_transform_and_write(split[split_name], adapter_config,
                                       transform_fn, split_name, out,
                                       num_shards))
  if raw_eval:
    # The rows TransformEval reads, before any transform: each model's raw
    # serving signature can then be scored on the same held-out rows.
    counts.append(_write_examples(split[layout.EVAL], layout.RAW_EVAL,
                                  "EvalRaw", out, num_shards))
  counts.append(_write_dead_letters(joined.dead_letters, out))
  _write_counts(counts, out)
