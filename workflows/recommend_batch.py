"""`embeddings recommend-batch`: top-k unseen items for every user, in Beam.

It runs on any Beam runner as it runs here (DirectRunner locally, Dataflow
with `--preset dataflow ...`, see pipelines/runners.py):

  embeddings recommend-batch --embeddings out/run/embeddings \\
      --seen 'out/run/data/ratings.csv' --output out/run/recommendations \\
      -k 10 [--format parquet]

or from Python, with the same options as typed fields:

  report = recommend_batch(RecommendBatchOptions(
      embeddings="out/run/embeddings", output="out/run/recommendations",
      seen="out/run/data/ratings.csv"))

The --seen CSV's delimiter and header are detected as `embeddings
recommend` detects them (retrieval.recommend.ratings_format), so the
generated ratings.csv and MovieLens u.data both work without flags. It
writes (names from core.layout.RecommendationsLayout):

  OUT/recommendations-*.jsonl (or .parquet)   {"user", "items", "scores"}
      per user, best first
  OUT/dead_letter/part-*.jsonl   ratings rows without a user or item, users
      who rated but have no embedding, malformed user vector lines
  OUT/run_report.json   the counts, the users in, written and
      dead-lettered, the output prefix and the wall time

Scores rank items for a user: user . item (+ the item bias when the export
has a `bias_<item>` table; see retrieval/recommend.py); exports of a model
whose prediction is not that dot product (a dnn) are refused. The steps,
and why they keep a worker's memory flat whatever the number of users, are
in workflows/recommend_steps.py.
"""

import dataclasses
import json
import logging
import sys
import time
from typing import Any, Dict, Optional, Sequence

import apache_beam as beam

from core import artifacts
from core import files
from core import flags
from core import layout
from pipelines import metrics
from pipelines import runners
from retrieval import recommend as recommend_lib
from workflows import recommend_batch_options as options_lib
from workflows import recommend_steps as steps

COMMAND = "recommend-batch"
# The job's options and parser live in recommend_batch_options (fast
# --help); these names keep `recommend_batch.RecommendBatchOptions` working.
RecommendBatchOptions = options_lib.RecommendBatchOptions
flag_parser = options_lib.flag_parser
JSONL = options_lib.JSONL
PARQUET = options_lib.PARQUET
# The exit status of a failure the user can fix (a missing table, a dnn
# export, an unreadable --seen).
USAGE_ERROR = 2


def _check_tables(options: RecommendBatchOptions) -> str:
  """The user table's directory, once both tables fit together.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables come from a model whose prediction is not their
      dot product, or differ in dimension.
  """
  user_dir = artifacts.table_dir(options.embeddings, options.user_table)
  user_meta = artifacts.read_metadata(user_dir)
  item_meta = artifacts.read_metadata(
      artifacts.table_dir(options.embeddings, options.item_table))
  refusal = recommend_lib.score_refusal(options.embeddings, user_meta,
                                        item_meta)
  if refusal:
    raise ValueError(refusal)
  if int(user_meta["dimension"]) != int(item_meta["dimension"]):
    raise ValueError(
        f"user table {options.user_table!r} has dimension "
        f"{user_meta['dimension']} and item table {options.item_table!r} "
        f"{item_meta['dimension']}: scoring needs the user and item tables "
        f"of one matrix-factorisation model")
  return user_dir


def seen_csv_options(options: RecommendBatchOptions) -> RecommendBatchOptions:
  """The options with the --seen CSV's delimiter, header and columns set.

  What the flags leave unset is detected from the first line of the first
  file --seen matches, exactly as `embeddings recommend` reads --seen
  (retrieval.recommend.ratings_format).

  Args:
    options: the job's options.

  Returns:
    Options whose seen_delimiter, seen_skip_header_lines and seen_columns
    are all set (unchanged options without a CSV --seen).

  Raises:
    ValueError: no file matches --seen, or its first line does not tell.
  """
  unset = None in (options.seen_delimiter, options.seen_skip_header_lines,
                   options.seen_columns)
  if not options.seen or options.seen_format != options_lib.CSV or not unset:
    return options
  matched = files.glob(options.seen)
  if not matched:
    raise ValueError(f"no file matches --seen {options.seen!r}")
  with files.open_text(matched[0]) as handle:
    first = handle.readline()
  delimiter = options.seen_delimiter
  found = recommend_lib.ratings_format(
      first, options.user_key, options.item_key,
      delimiter.encode().decode("unicode_escape") if delimiter else None)
  return dataclasses.replace(
      options, seen_delimiter=delimiter or found.delimiter,
      seen_skip_header_lines=(int(found.has_header)
                              if options.seen_skip_header_lines is None else
                              options.seen_skip_header_lines),
      seen_columns=options.seen_columns or found.columns)


def _user_vectors(pipeline: beam.Pipeline, options: RecommendBatchOptions):
  """Reads the user table's vectors; outputs main and DEAD_LETTER."""
  user_dir = _check_tables(options)
  user_meta = artifacts.read_metadata(user_dir)
  parse = steps.ParseWord2VecLine(int(user_meta["dimension"]),
                                  artifacts.reserved_tokens(user_meta))
  return (pipeline
          | "ReadUserVectors" >> beam.io.ReadFromText(
              layout.TableLayout(user_dir).word2vec, skip_header_lines=1)
          | "ParseUserVectors" >> beam.ParDo(parse).with_outputs(
              steps.DEAD_LETTER, main="users"))


def _seen_pairs(pipeline: beam.Pipeline, options: RecommendBatchOptions):
  """Reads --seen as (user, item) pairs; outputs main and DEAD_LETTER."""
  options = seen_csv_options(options)
  source = steps.seen_source(
      options.seen, file_format=options.seen_format,
      columns=options.seen_columns or (), delimiter=options.seen_delimiter or
      ",", skip_header_lines=options.seen_skip_header_lines or 0,
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
    ValueError: the tables do not fit together or cannot be ranked by
      their dot product, or --seen cannot be read (see seen_csv_options).
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
  recommendations = (
      users
      | "Recommend" >> steps.RecommendTopK(
          steps.ItemLoader(options.embeddings, options.item_table,
                           not options.no_bias),
          options.top_k, options.block_size, options.item_block)
      | "CountWritten" >> beam.ParDo(steps.CountRecords("users_written")))
  paths = layout.RecommendationsLayout(options.output)
  if options.output_format == PARQUET:
    _ = recommendations | "WriteParquet" >> beam.io.WriteToParquet(
        paths.prefix, steps.parquet_schema(),
        file_name_suffix=layout.PARQUET_SUFFIX)
  else:
    _ = (recommendations
         | "ToJson" >> beam.Map(json.dumps)
         | "WriteJsonl" >> beam.io.WriteToText(
             paths.prefix, file_name_suffix=layout.JSONL_SUFFIX))
  _ = (dead_letters
       | "MergeDeadLetters" >> beam.Flatten()
       | "CountDeadLetters" >> beam.ParDo(
           steps.CountRecords("dead_letters_written"))
       | "DeadLetterJson" >> beam.Map(json.dumps)
       | "WriteDeadLetters" >> beam.io.WriteToText(
           paths.dead_letter_prefix, file_name_suffix=layout.JSONL_SUFFIX))


def _counters(result) -> Dict[str, int]:
  counts = {name: 0 for name in steps.COUNTERS}
  counts.update(metrics.counter_totals(result, steps.NAMESPACE))
  return counts


def user_accounting(counts: Dict[str, int]) -> Dict[str, int]:
  """Where every user went: in = written + dead-lettered when none is lost.

  Args:
    counts: the job's counters.

  Returns:
    {"in", "written", "dead_lettered"}: users read from the user table
    (valid lines and rejected ones) plus users who rated but have no
    embedding; users written to the recommendations; and the rejected and
    embedding-less users, who are in the dead letters.
  """
  dead = counts["user_lines_rejected"] + counts["users_without_embedding"]
  return {"in": counts["users_read"] + dead,
          "written": counts["users_written"], "dead_lettered": dead}


def recommend_batch(options: RecommendBatchOptions,
                    beam_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Runs the batch recommendation job and writes its run report.

  Args:
    options: the job's options.
    beam_args: Beam pipeline flags (`--runner ...`, or `--preset NAME`).

  Returns:
    The run report, as written to run_report.json: the output prefix,
    format, k, block size, every counter, the user accounting
    (user_accounting), the files written and the wall time.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables do not fit together or cannot be ranked by
      their dot product, or --seen cannot be read.
    runners.PresetError: the preset cannot be expanded.
  """
  started = time.time()
  pipeline = beam.Pipeline(options=runners.preset_options(list(beam_args)))
  build(pipeline, options)
  result = pipeline.run()
  result.wait_until_finish()
  counts = _counters(result)
  paths = layout.RecommendationsLayout(options.output)
  suffix = (layout.PARQUET_SUFFIX if options.output_format == PARQUET else
            layout.JSONL_SUFFIX)
  report = {
      "output": paths.prefix,
      "format": options.output_format,
      "k": options.top_k,
      "block_size": options.block_size,
      "counts": counts,
      "users": user_accounting(counts),
      "files": files.glob(f"{paths.prefix}-*{suffix}"),
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


def summary_line(report: Dict[str, Any]) -> str:
  """The closing line: users, k, files and where they are.

  Args:
    report: recommend_batch's report.

  Returns:
    One line.
  """
  users = report["users"]
  paths = layout.RecommendationsLayout(layout.split(report["output"])[0])
  return (f"embeddings {COMMAND}: top {report['k']} items for "
          f"{users['written']} of {users['in']} users in "
          f"{len(report['files'])} {report['format']} file(s) under "
          f"{paths.root}; {users['dead_lettered']} users and "
          f"{report['counts']['seen_rows_rejected']} rating rows "
          f"dead-lettered in {layout.split(paths.dead_letter_prefix)[0]}; "
          f"report {paths.report}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`embeddings recommend-batch`: runs the job, ends with a summary line.

  Args:
    argv: as for run().

  Returns:
    0, or USAGE_ERROR after one line on stderr when a table is missing,
    the export cannot be ranked by dot products, or --seen cannot be read.
  """
  try:
    report = run(argv)
  except (FileNotFoundError, ValueError, runners.PresetError) as error:
    print(f"embeddings {COMMAND}: {error}", file=sys.stderr)
    return USAGE_ERROR
  print(summary_line(report), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
