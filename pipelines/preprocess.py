"""`embeddings preprocess`: raw tables -> TFRecords + tf.Transform graph.

A Beam + tf.Transform job in the shape of apache_beam/examples/wordcount.py:

  read (CSV / Parquet / TFRecord files, BigQuery tables or queries, in
        batches)
    -> parse and validate per table (bad rows -> dead letters)
    -> join side tables (broadcast side input or CoGroupByKey)
    -> split train/eval (hash of a key, or given eval files)
    -> Arrow RecordBatches in TFXIO form
    -> tft_beam.AnalyzeDataset on train only
    -> tft_beam.TransformDataset on train and eval (same transform_fn)
    -> tf.Example (tfx_bsl encoder) -> gzipped TFRecord shards

Everything is written into a staging directory beside --output and moved
into place with _SUCCESS last (pipelines/outputs.py), after the rejected
rows are checked against --max_rejected_fraction and feature_info.json and
run_report.json are written. Rows in = rows written + rows rejected, per
table; run_report.json has the numbers.

Usage:
  embeddings preprocess --spec configs/movielens100k.yaml --output OUT \\
      [--env ML100K_FOLD=u2] [--max_rejected_fraction 0.05] [--num_shards 4] \\
      [Beam options, e.g. --direct_num_workers 2
       --direct_running_mode multi_processing]
"""

import argparse
import functools
import json
import logging
import os
import posixpath
import sys
import time
from typing import (Dict, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from tfx_bsl.coders import example_coder
from tfx_bsl.public import tfxio

from core import files
from pipelines import joins as joins_lib
from pipelines import metrics
from core import outputs
from pipelines import rows as rows_lib
from pipelines import runners
from pipelines import sinks
from pipelines import sources
from pipelines import split as split_lib
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import preprocessing
from transforms import spec as spec_lib

# Re-exported: the trainer checks a preprocessing output with it.
require_finished_output = outputs.require_finished_output
UnfinishedOutputError = outputs.UnfinishedOutputError

METRICS_NAMESPACE = "embeddings.preprocess"
RUN_REPORT_FILE = "run_report.json"
DEAD_LETTER_DIR = "dead_letter"
_COUNTS_FILE = "_counts.json"
_TFT_TEMP_DIR = "_tft_temp"
_DEAD = joins_lib.DEAD_LETTER_TAG
_COUNTS = "counts"


class RejectedRowsError(RuntimeError):
  """Too many rows were rejected; the output was not accepted."""


class EmptyInputError(ValueError):
  """An input, or the train split, ended up with no rows."""


def _join_path(base: str, *parts: str) -> str:
  return (os.path.join(base, *parts) if files.is_local(base)
          else posixpath.join(base, *parts))


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

  def process(self, raw):
    if self._format == "csv":
      batch, letters, read = rows_lib.parse_csv_block(self._rules, raw)
    elif self._format == "parquet":
      batch, letters, read = rows_lib.parse_arrow_table(self._rules, raw)
    elif self._format == spec_lib.BIGQUERY:
      batch, letters, read = rows_lib.parse_row_dicts(self._rules, raw)
    else:
      batch, letters, read = rows_lib.parse_examples(self._rules, raw,
                                                     self._decoder)
    self._read.inc(read)
    yield beam.pvalue.TaggedOutput(_COUNTS, (("read", self._rules.table),
                                             read))
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
    yield ("rejected", letter["table"], letter["reason"]), 1


class EncodeExamples(beam.DoFn):
  """Transformed (RecordBatch, passthrough) -> framed TFRecord bytes."""

  def __init__(self, split_name: str):
    """Builds the encoder step.

    Args:
      split_name: TRAIN or EVAL, for the written-rows counts.
    """
    self._split_name = split_name
    self._schema = None
    self._encoder = None
    self._written = Metrics.counter(METRICS_NAMESPACE,
                                    f"{split_name}_rows_written")

  def process(self, element, schema):
    batch, _ = element
    if schema is not self._schema:
      self._encoder = tfxio.RecordBatchToExamplesEncoder(schema)
      self._schema = schema
    records = self._encoder.encode(batch)
    self._written.inc(len(records))
    yield beam.pvalue.TaggedOutput(_COUNTS, (("written", self._split_name),
                                             len(records)))
    if records:
      yield sinks.frame_records(records)


def _schema_of(metadata):
  return metadata.schema


def _to_json_line(record) -> str:
  return json.dumps(record, sort_keys=True)


def _counts_json(pairs) -> str:
  return json.dumps(sorted([list(key), value] for key, value in pairs))


def _table_rules(spec: spec_lib.FeatureSpec, found: Mapping[str, Mapping]
                ) -> Dict[str, rows_lib.TableRules]:
  rules = {}
  for name, info in found.items():
    table = spec.inputs[name]
    if table.format == "csv":
      positions, num_fields = sources.header_positions(table, info["header"])
    else:
      positions = {c: i for i, c in enumerate(table.columns)}
      num_fields = len(table.columns)
    rules[name] = rows_lib.table_rules(spec, name, positions, num_fields)
  return rules


def plan_inputs(spec: spec_lib.FeatureSpec) -> Dict[str, rows_lib.TableRules]:
  """Checks every input exists and is readable; returns each table's rules.

  Runs before any Beam work, so a missing file, an empty input or a CSV
  header that disagrees with the spec fails fast.

  Args:
    spec: the feature spec.

  Returns:
    Table name -> TableRules, for the main table and every joined table.

  Raises:
    sources.InputError: an input cannot be used.
  """
  return _table_rules(spec, sources.check_inputs(spec))


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


def read_and_join(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                  rules: Mapping[str, rows_lib.TableRules]) -> JoinedRows:
  """Reads, parses and validates every table and joins the side tables.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).

  Returns:
    The joined main batches, their schema, dead letters and read counts.
  """
  main = spec.main_table
  dead_letters: List[beam.PCollection] = []
  counts: List[beam.PCollection] = []

  main_parts = []
  patterns = [(main.path, None if main.eval_path is None else split_lib.TRAIN)]
  if main.eval_path is not None:
    patterns.append((main.eval_path, split_lib.EVAL))
  for pattern, split_name in patterns:
    label = f"Main{split_name.capitalize() if split_name else ''}"
    parsed = _read_and_parse(pipeline, main, pattern, rules[spec.main],
                             split_name, label)
    main_parts.append(parsed.rows)
    dead_letters.append(parsed.dead_letters)
    counts.append(parsed.counts)
  batches = (main_parts[0] if len(main_parts) == 1
             else main_parts | "FlattenMain" >> beam.Flatten())
  schema = rules[spec.main].schema
  if main.eval_path is not None:
    schema = schema.append(pa.field(rows_lib.SPLIT_COLUMN, pa.int8()))

  for join in spec.joins:
    side_rules = rules[join.table]
    side = spec.inputs[join.table]
    label = join.table.capitalize()
    parsed = _read_and_parse(pipeline, side, side.path, side_rules, None,
                             f"Side{label}")
    dead_letters.append(parsed.dead_letters)
    counts.append(parsed.counts)
    if join.how == "broadcast":
      built = (parsed.rows
               | f"Collect{label}" >> beam.combiners.ToList()
               | f"Build{label}" >> beam.ParDo(
                   joins_lib.BuildSideTable(side_rules)).with_outputs(
                       _DEAD, main="table"))
      dead_letters.append(built[_DEAD])
      joined = batches | f"Join{label}" >> beam.ParDo(
          joins_lib.BroadcastJoin(join.table, join.by, spec.main),
          side=beam.pvalue.AsSingleton(built.table)).with_outputs(
              _DEAD, main="joined")
      batches = joined.joined
    else:
      joined = batches | f"Join{label}" >> joins_lib.ShuffleJoin(
          parsed.rows, side_rules, join.by, spec.main, schema)
      batches = joined["joined"]
    dead_letters.append(joined[_DEAD])
    schema = joins_lib.joined_schema(schema, side_rules)
  return JoinedRows(batches, schema, dead_letters, counts)


def build_pipeline(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                   rules: Mapping[str, rows_lib.TableRules], staging: str,
                   num_shards: int) -> None:
  """Adds the whole preprocessing job to `pipeline`.

  Must run inside a tft_beam.Context.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).
    staging: the staging output directory.
    num_shards: TFRecord shards per split (0: the runner decides).
  """
  joined = read_and_join(pipeline, spec, rules)
  batches = joined.batches
  dead_letters = list(joined.dead_letters)
  counts = list(joined.counts)

  column_types = spec.raw_column_types()
  split_key = spec.split.key if spec.split is not None else None
  split = batches | "SplitAndConvert" >> beam.ParDo(split_lib.SplitAndConvert(
      column_types, split_key,
      spec.split.eval_fraction if spec.split else 0.0,
      spec.split.seed if spec.split else 0)).with_outputs(
          split_lib.TRAIN, split_lib.EVAL)

  adapter_config = split_lib.tensor_adapter_config(column_types)
  transform_fn = ((split[split_lib.TRAIN], adapter_config)
                  | "Analyze" >> tft_beam.AnalyzeDataset(
                      functools.partial(preprocessing.preprocessing_fn,
                                        spec=spec)))
  _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)

  for split_name in split_lib.SPLITS:
    label = split_name.capitalize()
    transformed, metadata = (
        ((split[split_name], adapter_config), transform_fn)
        | f"Transform{label}" >> tft_beam.TransformDataset(
            output_record_batches=True))
    schema_pc = (metadata.deferred_metadata
                 | f"Schema{label}" >> beam.Map(_schema_of))
    encoded = transformed | f"Encode{label}" >> beam.ParDo(
        EncodeExamples(split_name),
        schema=beam.pvalue.AsSingleton(schema_pc)).with_outputs(
            _COUNTS, main="records")
    counts.append(encoded[_COUNTS])
    _ = encoded.records | f"Write{label}" >> sinks.WriteFramedTFRecords(
        _join_path(staging, split_name, "part"),
        file_name_suffix=".tfrecord.gz", num_shards=num_shards)

  all_dead = dead_letters | "FlattenDeadLetters" >> beam.Flatten()
  _ = (all_dead
       | "DeadLettersToJson" >> beam.Map(_to_json_line)
       | "WriteDeadLetters" >> beam.io.WriteToText(
           _join_path(staging, DEAD_LETTER_DIR, "part"),
           file_name_suffix=".jsonl"))
  counts.append(all_dead | "CountDeadLetters" >> beam.ParDo(
      CountDeadLetters()))
  _ = (counts
       | "FlattenCounts" >> beam.Flatten()
       | "SumCounts" >> beam.CombinePerKey(sum)
       | "CollectCounts" >> beam.combiners.ToList()
       | "CountsToJson" >> beam.Map(_counts_json)
       | "WriteCounts" >> beam.io.WriteToText(
           _join_path(staging, _COUNTS_FILE), shard_name_template=""))


def _read_counts(staging: str) -> Dict[Tuple[str, ...], int]:
  with tf.io.gfile.GFile(_join_path(staging, _COUNTS_FILE)) as handle:
    pairs = json.loads(handle.read())
  return {tuple(key): value for key, value in pairs}


def summarize_counts(counts: Mapping[Tuple[str, ...], int],
                     tables: Sequence[str]) -> Dict[str, object]:
  """Shapes raw (kind, ...) -> n counts into the run report's sections.

  Args:
    counts: ("read", table), ("written", split), ("rejected", table, reason)
      -> rows.
    tables: every input table the job read.

  Returns:
    {"rows_read": {table: n}, "rows_written": {split: n}, "rows_rejected":
    {table: {reason: n}}, "rows_rejected_total": {table: n}}.
  """
  read = {table: counts.get(("read", table), 0) for table in tables}
  written = {name: counts.get(("written", name), 0)
             for name in split_lib.SPLITS}
  rejected = {table: {} for table in tables}
  for key, value in sorted(counts.items()):
    if key[0] == "rejected":
      rejected.setdefault(key[1], {})[key[2]] = value
  totals = {table: sum(reasons.values()) for table, reasons in rejected.items()}
  return {"rows_read": read, "rows_written": written,
          "rows_rejected": rejected, "rows_rejected_total": totals}


def check_rejections(summary: Mapping[str, Mapping], main_table: str,
                     max_fraction: float) -> None:
  """Fails when a table rejected too many rows or nothing reached train.

  Args:
    summary: from summarize_counts.
    main_table: the spec's main table.
    max_fraction: the highest acceptable rejected / read per table.

  Raises:
    RejectedRowsError: a table's rejected fraction is above max_fraction.
    EmptyInputError: a table had no rows at all.
  """
  for table, read in summary["rows_read"].items():
    if read == 0:
      raise EmptyInputError(f"input '{table}' has no rows")
    rejected = summary["rows_rejected_total"].get(table, 0)
    if rejected / read > max_fraction:
      reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(
          summary["rows_rejected"][table].items(), key=lambda kv: -kv[1]))
      raise RejectedRowsError(
          f"input '{table}': {rejected} of {read} rows "
          f"({100.0 * rejected / read:.2f}%) were rejected, more than "
          f"max_rejected_fraction {max_fraction} allows ({reasons})")
  if summary["rows_written"][split_lib.TRAIN] == 0:
    raise EmptyInputError(f"no row of input '{main_table}' reached the train "
                          f"split")


def _print_metrics(result) -> None:
  try:
    totals = metrics.counter_totals(result, METRICS_NAMESPACE)
  except (NotImplementedError, AttributeError, ValueError):
    return
  for name in sorted(totals):
    print(f"  {name}: {totals[name]}")


def flag_parser() -> argparse.ArgumentParser:
  """The job's own flags; everything it does not know goes to Beam."""
  parser = argparse.ArgumentParser(
      prog="embeddings preprocess",
      description=("Beam + tf.Transform: raw tables -> gzipped TFRecords, "
                   "transform_fn/, feature_info.json, run_report.json. "
                   "Other flags go to Beam (--runner, --direct_num_workers, "
                   "--temp_location, ...)."))
  parser.add_argument("--spec", required=True, help="feature spec YAML")
  parser.add_argument("--output", required=True,
                      help="output directory (local, gs://, ...)")
  parser.add_argument("--env", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="set ${KEY} in the spec's paths (repeatable)")
  parser.add_argument("--max_rejected_fraction", type=float, default=None,
                      help="fail when a table rejects more than this share "
                           "of its rows (default: the spec's)")
  parser.add_argument("--num_shards", type=int, default=0,
                      help="TFRecord files per split (0: runner decides)")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the preprocessing job.

  Args:
    argv: command-line flags (see `embeddings preprocess --help`); flags
      this job does not know are Beam pipeline options.

  Returns:
    0 on success.

  Raises:
    spec_lib.SpecError: the spec is invalid.
    sources.InputError: an input is missing, empty or unreadable, or a
      BigQuery input lacks a gs:// --temp_location or --project.
    RejectedRowsError: too many rows were rejected (the staging directory
      with its dead letters is kept and named in the message).
    EmptyInputError: no rows to analyze.
  """
  known, pipeline_args = flag_parser().parse_known_args(
      None if argv is None else list(argv))
  pipeline_args = runners.expand_preset(pipeline_args)
  spec = loader.load_spec(known.spec, dict(spec_lib.parse_env_flags(known.env)))
  max_fraction = (spec.max_rejected_fraction
                  if known.max_rejected_fraction is None
                  else known.max_rejected_fraction)
  if not 0.0 <= max_fraction <= 1.0:
    raise ValueError(f"--max_rejected_fraction must be in [0, 1], got "
                     f"{max_fraction}")
  rules = plan_inputs(spec)
  options = PipelineOptions(pipeline_args)
  sources.check_bigquery_options(spec, options)

  started = time.time()
  staging = outputs.new_staging_dir(known.output)
  keep_staging = False
  try:
    pipeline = beam.Pipeline(options=options)
    with tft_beam.Context(temp_dir=_join_path(staging, _TFT_TEMP_DIR)):
      build_pipeline(pipeline, spec, rules, staging, known.num_shards)
    result = pipeline.run()
    result.wait_until_finish()

    tables = [spec.main] + [join.table for join in spec.joins]
    summary = summarize_counts(_read_counts(staging), tables)
    try:
      check_rejections(summary, spec.main, max_fraction)
    except RejectedRowsError as error:
      keep_staging = True
      raise RejectedRowsError(
          f"{error}; dead letters kept in "
          f"{_join_path(staging, DEAD_LETTER_DIR)}") from None

    transform_output = tft.TFTransformOutput(staging)
    vocabulary_sizes = {
        f.name: transform_output.vocabulary_size_by_name(f.name)
        for f in spec.features if f.has_learned_vocabulary}
    infos = feature_info_lib.resolve_feature_info(spec, vocabulary_sizes)
    feature_info_lib.write_feature_info(staging, infos)
    for temp in (_TFT_TEMP_DIR, _COUNTS_FILE):
      path = _join_path(staging, temp)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)
    report = {
        "spec": spec.name,
        "spec_path": known.spec,
        "output": known.output,
        "main_table": spec.main,
        **summary,
        "vocabulary_sizes": vocabulary_sizes,
        "feature_sizes": {n: i.size for n, i in infos.items()},
        "embedding_dims": {n: i.embedding_dim for n, i in infos.items()
                           if i.size},
        "max_rejected_fraction": max_fraction,
        "beam_options": pipeline_args,
        "wall_time_s": round(time.time() - started, 3),
    }
    with tf.io.gfile.GFile(_join_path(staging, RUN_REPORT_FILE), "w") as f:
      f.write(json.dumps(report, indent=2))
    outputs.commit(staging, known.output,
                   {"spec": spec.name, "rows_written": summary["rows_written"],
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
  except BaseException:
    if not keep_staging:
      outputs.discard(staging)
    raise

  written = summary["rows_written"]
  print(f"embeddings preprocess: wrote {written[split_lib.TRAIN]} train and "
        f"{written[split_lib.EVAL]} eval rows to {known.output} in "
        f"{report['wall_time_s']:.1f}s; rejected "
        f"{sum(summary['rows_rejected_total'].values())} rows")
  _print_metrics(result)
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the job; known failures print one clear line and return 1.

  Args:
    argv: as for run().

  Returns:
    The process exit status.
  """
  try:
    return run(argv)
  except (spec_lib.SpecError, sources.InputError, RejectedRowsError,
          EmptyInputError, runners.PresetError) as error:
    print(f"embeddings preprocess: error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.WARNING)
  sys.exit(main())
