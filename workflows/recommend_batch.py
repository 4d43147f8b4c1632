"""`embeddings recommend-batch`: top-k unseen items for every user, in Beam.

It runs on any Beam runner as it runs here (DirectRunner locally, Dataflow
with `--preset dataflow ...`, see pipelines/runners.py):

  embeddings recommend-batch --embeddings out/run/embeddings \\
      --seen 'out/run/data/ratings.csv' --seen_skip_header_lines 1 \\
      --output out/run/recommendations -k 10 [--format parquet]

or from Python, with the same options as typed fields:

  report = recommend_batch(RecommendBatchOptions(
      embeddings="out/run/embeddings", output="out/run/recommendations",
      seen="out/run/data/ratings.csv", seen_skip_header_lines=1))

It writes (names from core.layout.RecommendationsLayout):

  OUT/recommendations-*.jsonl (or .parquet)   {"user", "items", "scores"}
      per user, best first
  OUT/dead_letter/part-*.jsonl   ratings rows without a user or item, users
      who rated but have no embedding, malformed user vector lines
  OUT/run_report.json   the counts, the output prefix and the wall time

Scores rank items for a user: user . item (+ the item bias when the export
has a `bias_<item>` table; see retrieval/recommend.py). The steps, and why
they keep a worker's memory flat whatever the number of users, are in
workflows/recommend_steps.py.
"""

import argparse
import dataclasses
import json
import logging
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import apache_beam as beam

from core import artifacts
from core import files
from core import flags
from core import layout
from pipelines import metrics
from pipelines import runners
from retrieval import index as index_lib
from workflows import recommend_steps as steps

JSONL = "jsonl"
PARQUET = "parquet"
FORMATS = (JSONL, PARQUET)
_POSITIVE = "-k, --block_size and --item_block must be positive"


def _columns(text) -> Tuple[str, ...]:
  """'a, b,c' -> ('a', 'b', 'c'); empty names kept, so positions hold."""
  return tuple(column.strip() for column in str(text).split(","))


@dataclasses.dataclass(frozen=True)
class RecommendBatchOptions:
  """Everything one `embeddings recommend-batch` run needs; each field a flag.

  Raises:
    ValueError: a count that is not positive, or a value outside its
      choices.
  """
  embeddings: str = flags.option(
      help="export directory (embeddings export --output)")
  output: str = flags.option(
      help="output directory (local, gs://, any Beam FS)")
  user_table: str = flags.option("user", help="the user feature's table")
  item_table: str = flags.option("movie", help="the item feature's table")
  top_k: int = flags.option(10, short="k", help="recommendations per user")
  output_format: str = flags.option(
      JSONL, flag="format", choices=FORMATS,
      help="file format of the recommendations")
  block_size: int = flags.option(
      512, help="users scored together (bounds worker memory)")
  item_block: int = flags.option(
      index_lib.DEFAULT_ITEM_BLOCK,
      help="items scored at a time within a block")
  no_bias: bool = flags.option(
      False, help="ignore an exported item bias table")
  seen: Optional[str] = flags.option(
      None, help="ratings file pattern whose items are excluded")
  seen_format: str = flags.option(
      steps.CSV, choices=steps.SEEN_FORMATS,
      help="format of the --seen files")
  seen_columns: Tuple[str, ...] = flags.option(
      ("user_id", "item_id", "rating", "timestamp"), parse=_columns,
      help="CSV column names in file order")
  seen_delimiter: str = flags.option(
      ",", help="CSV delimiter (\\t for MovieLens u.data)")
  seen_skip_header_lines: int = flags.option(
      0, help="lines to skip at the start of each CSV file")
  seen_id_type: str = flags.option(
      steps.STRING_IDS, choices=steps.ID_TYPES,
      help="type of the id features in TFRecord input")
  user_key: str = flags.option(
      "user_id", help="the user id column (feature) of --seen")
  item_key: str = flags.option(
      "item_id", help="the item id column (feature) of --seen")

  def __post_init__(self):
    if self.top_k < 1 or self.block_size < 1 or self.item_block < 1:
      raise ValueError(_POSITIVE)
    # argparse checks the choices of flags; this checks them for callers.
    for flag, value, choices in (
        ("--format", self.output_format, FORMATS),
        ("--seen_format", self.seen_format, steps.SEEN_FORMATS),
        ("--seen_id_type", self.seen_id_type, steps.ID_TYPES)):
      if value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}, got "
                         f"{value!r}")


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings recommend-batch` flags, one per options field."""
  parser = argparse.ArgumentParser(
      prog="embeddings recommend-batch",
      description="Top-k unseen items for every user of a user table.")
  flags.add_flags(parser, RecommendBatchOptions)
  return parser


def _table_info(embeddings: str, table: str) -> Tuple[str, Dict[str, Any]]:
  """A table's directory and metadata, read when the pipeline is built."""
  directory = artifacts.table_dir(embeddings, table)
  return directory, artifacts.read_metadata(directory)


def _user_vectors(pipeline: beam.Pipeline, options: RecommendBatchOptions):
  """Reads the user table's vectors; outputs main and DEAD_LETTER."""
  user_dir, user_meta = _table_info(options.embeddings, options.user_table)
  _, item_meta = _table_info(options.embeddings, options.item_table)
  dimension = int(user_meta["dimension"])
  if dimension != int(item_meta["dimension"]):
    raise ValueError(
        f"user table {options.user_table!r} has dimension {dimension} and "
        f"item table {options.item_table!r} {item_meta['dimension']}: "
        f"scoring needs the user and item tables of one "
        f"matrix-factorisation model")
  parse = steps.ParseWord2VecLine(dimension,
                                  artifacts.reserved_tokens(user_meta))
  return (pipeline
          | "ReadUserVectors" >> beam.io.ReadFromText(
              layout.TableLayout(user_dir).word2vec, skip_header_lines=1)
          | "ParseUserVectors" >> beam.ParDo(parse).with_outputs(
              steps.DEAD_LETTER, main="users"))


def _seen_pairs(pipeline: beam.Pipeline, options: RecommendBatchOptions):
  """Reads --seen as (user, item) pairs; outputs main and DEAD_LETTER."""
  source = steps.seen_source(
      options.seen, file_format=options.seen_format,
      columns=options.seen_columns, delimiter=options.seen_delimiter,
      skip_header_lines=options.seen_skip_header_lines,
      id_type=options.seen_id_type, user_key=options.user_key,
      item_key=options.item_key)
  return (pipeline
          | "ReadSeenRatings" >> source
          | "SeenPairs" >> beam.ParDo(steps.RecordBatchToPairs(
              options.user_key, options.item_key)).with_outputs(
                  steps.DEAD_LETTER, main="pairs"))


def build(pipeline: beam.Pipeline, options: RecommendBatchOptions) -> None:
  """Adds the recommendation job's steps to a pipeline.

  Args:
    pipeline: the Beam pipeline.
    options: the job's options.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the user and item tables differ in dimension, or the CSV
      columns lack a key.
  """
  parsed = _user_vectors(pipeline, options)
  dead_letters = [parsed[steps.DEAD_LETTER]]
  if options.seen:
    pairs = _seen_pairs(pipeline, options)
    joined = (parsed.users, pairs.pairs) | "JoinSeen" >> steps.JoinSeen()
    users = joined.users
    dead_letters += [pairs[steps.DEAD_LETTER], joined[steps.DEAD_LETTER]]
  else:
    users = parsed.users | "NothingSeen" >> beam.Map(steps.nothing_seen)
  recommendations = users | "Recommend" >> steps.RecommendTopK(
      steps.ItemLoader(options.embeddings, options.item_table,
                       not options.no_bias),
      options.top_k, options.block_size, options.item_block)
  paths = layout.RecommendationsLayout(options.output)
  if options.output_format == PARQUET:
    _ = recommendations | "WriteParquet" >> beam.io.WriteToParquet(
        paths.prefix, steps.parquet_schema(), file_name_suffix=layout.PARQUET_SUFFIX)
  else:
    _ = (recommendations
         | "ToJson" >> beam.Map(json.dumps)
         | "WriteJsonl" >> beam.io.WriteToText(
             paths.prefix, file_name_suffix=layout.JSONL_SUFFIX))
  _ = (dead_letters
       | "MergeDeadLetters" >> beam.Flatten()
       | "DeadLetterJson" >> beam.Map(json.dumps)
       | "WriteDeadLetters" >> beam.io.WriteToText(
           paths.dead_letter_prefix, file_name_suffix=layout.JSONL_SUFFIX))


def _counters(result) -> Dict[str, int]:
  counts = {name: 0 for name in steps.COUNTERS}
  counts.update(metrics.counter_totals(result, steps.NAMESPACE))
  return counts


def recommend_batch(options: RecommendBatchOptions,
                    beam_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Runs the batch recommendation job and writes its run report.

  Args:
    options: the job's options.
    beam_args: Beam pipeline flags (`--runner ...`, or `--preset NAME`).

  Returns:
    The run report, as written to run_report.json: the output prefix,
    format, k, block size, every counter, and the wall time.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables do not fit together or --seen_columns lacks a
      key.
    runners.PresetError: the preset cannot be expanded.
  """
  started = time.time()
  pipeline = beam.Pipeline(options=runners.preset_options(list(beam_args)))
  build(pipeline, options)
  result = pipeline.run()
  result.wait_until_finish()
  counts = _counters(result)
  paths = layout.RecommendationsLayout(options.output)
  report = {
      "output": paths.prefix,
      "format": options.output_format,
      "k": options.top_k,
      "block_size": options.block_size,
      "counts": counts,
      "wall_seconds": round(time.time() - started, 3),
  }
  files.write_json(paths.report, report)
  logging.info("recommend-batch: %s", json.dumps(counts))
  return report


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Runs the job from flags (Beam wordcount conventions).

  Args:
    argv: job flags plus Beam pipeline flags (or `--preset NAME`); default
      sys.argv[1:].

  Returns:
    The run report (see recommend_batch).
  """
  parser = flag_parser()
  args, beam_args = parser.parse_known_args(argv)
  try:
    options = RecommendBatchOptions(
        **flags.values_from_args(RecommendBatchOptions, args))
  except ValueError as error:
    parser.error(str(error))
  return recommend_batch(options, beam_args)


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  run()
