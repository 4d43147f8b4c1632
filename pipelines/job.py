"""The whole `embeddings preprocess` job, in the shape of wordcount.py.

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
from typing import List, Mapping

import apache_beam as beam
import tensorflow_transform.beam as tft_beam

from core import layout
from pipelines import counts as counts_lib
from pipelines import progress
from pipelines import rows as rows_lib
from pipelines import sinks
from pipelines import split as split_lib
from pipelines import steps
from transforms import preprocessing
from transforms import spec as spec_lib


def _split(batches: beam.PCollection, spec: spec_lib.FeatureSpec,
           suffix: str = ""):
  """SplitAndConvert: joined batches -> TFXIO batches tagged by split."""
  split = spec.split
  return batches | f"SplitAndConvert{suffix}" >> beam.ParDo(split_lib.SplitAndConvert(
      spec.raw_column_types(), split.key if split else None,
      split.eval_fraction if split else 0.0,
      split.seed if split else 0)).with_outputs(layout.TRAIN, layout.EVAL)


def _write_examples(batches: beam.PCollection, split_name: str, label: str,
                    out: layout.PreprocessedLayout, num_shards: int,
                    schema=None) -> beam.PCollection:
  """Encode<label> -> Write<label>; returns the written-rows counts."""
  encoded = batches | f"Encode{label}" >> beam.ParDo(
      steps.EncodeExamples(split_name), schema=schema).with_outputs(
          steps.COUNTS_TAG, main="records")
  _ = encoded.records | f"Write{label}" >> sinks.WriteFramedTFRecords(
      out.shard_prefix(split_name), file_name_suffix=layout.TFRECORD_SUFFIX,
      num_shards=num_shards)
  return encoded[steps.COUNTS_TAG]


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
  return all_dead | "steps.CountDeadLetters" >> beam.ParDo(steps.CountDeadLetters())


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


def _main_rows_read(counts: List[beam.PCollection], main: str,
                    suffix: str) -> beam.PCollection:
  """The main table's rows read by one pass, as a singleton."""
  return (counts
          | f"FlattenCounts{suffix}" >> beam.Flatten()
          | f"MainReadCounts{suffix}" >> beam.Filter(
              _is_read_of, main)
          | f"MainRowsRead{suffix}" >> beam.Map(_count_value)
          | f"SumMainRowsRead{suffix}" >> beam.CombineGlobally(sum))


def _is_read_of(pair, table: str) -> bool:
  return pair[0] == (counts_lib.READ, table)


def _count_value(pair) -> int:
  return pair[1]


def _analyzed_count(train_rows: int):
  return (counts_lib.ANALYZED, layout.TRAIN), train_rows


def build_pipeline(pipeline: beam.Pipeline, spec: spec_lib.FeatureSpec,
                   rules: Mapping[str, rows_lib.TableRules], staging: str,
                   num_shards: int = 0, raw_eval: bool = False,
                   reread_input: bool = True) -> None:
  """Adds the whole preprocessing job to `pipeline`.

  Must run inside a tft_beam.Context.

  With `reread_input`, the main table is read twice: once for the analysis
  (train only; its rows end in tf.Transform's analyzers) and once for the
  transform, which waits for the analysis' transform_fn. A local runner
  keeps every element that crosses from one stage to a later one in memory;
  read once, the rows the transform needs would wait there, all of them,
  while the analysis runs. Read twice, each pass streams, and memory stays
  the side tables' and the analyzers' whatever the number of rows. Side
  tables are read once and joined onto both passes. The analysis pass's
  train rows are counted ("analyzed"), so a main table that changed between
  the passes fails the run instead of passing unnoticed.

  Args:
    pipeline: the Beam pipeline.
    spec: the feature spec.
    rules: table name -> TableRules (main and every joined table).
    staging: the staging output directory (layout.PreprocessedLayout).
    num_shards: TFRecord shards per split (0: the runner decides).
    raw_eval: also write the eval split's raw rows as tf.Examples
      (layout.RAW_EVAL).
    reread_input: read the main table once for the analysis and again for
      the transform (see above); False reads it once, for runners that
      spill what crosses stages to disk (Dataflow) or inputs that must be
      read only once (a BigQuery query).
  """
  out = layout.PreprocessedLayout(staging)
  sides = steps.read_side_tables(pipeline, spec, rules, out)
  if reread_input:
    analysis = steps.join_main(pipeline, spec, rules, sides, steps.ANALYSIS_SUFFIX,
                         progress.ANALYSIS_PASS)
    analysis_train = _split(analysis.batches, spec,
                            steps.ANALYSIS_SUFFIX)[layout.TRAIN]
    total = beam.pvalue.AsSingleton(_main_rows_read(
        analysis.counts, spec.main, steps.ANALYSIS_SUFFIX))
    joined = steps.join_main(pipeline, spec, rules, sides,
                       phase=progress.TRANSFORM_PASS, total_rows=total)
    split = _split(joined.batches, spec)
  else:
    joined = steps.join_main(pipeline, spec, rules, sides)
    split = _split(joined.batches, spec)
    analysis_train = split[layout.TRAIN]
  joined = steps.with_sides(joined, sides)
  counts = list(joined.counts)
  train_rows = progress.announce_analysis(analysis_train)
  counts.append(train_rows | "AnalyzedCount" >> beam.Map(_analyzed_count))
  adapter_config = split_lib.tensor_adapter_config(spec.raw_column_types())
  transform_fn = ((analysis_train, adapter_config)
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
