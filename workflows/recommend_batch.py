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
      dead-lettered, the index, the output prefix and the wall time
  OUT/ann_index.faiss   the approximate index the workers searched (only
      when it was used)

--index (exact, approximate, auto) and the approximate index's build and
calibration, before the pipeline runs, are in workflows/recommend_index.py.

Scores rank items for a user: user . item (+ the item bias when the export
has a `bias_<item>` table; see retrieval/recommend.py); exports of a model
whose prediction is not that dot product (a dnn) are refused. The steps,
and why they keep a worker's memory flat whatever the number of ratings,
are in workflows/recommend_steps.py.
"""

import dataclasses
import json
import logging
import sys
import time
from typing import Any, Dict, Optional, Sequence

import apache_beam as beam
from apache_beam.utils import shared

from core import artifacts
from core import files
from core import flags
from core import layout
from pipelines import metrics
from pipelines import runners
from retrieval import recommend as recommend_lib
from workflows import recommend_batch_options as options_lib
from workflows import recommend_chunks as chunks_lib
from workflows import recommend_index
from workflows import recommend_seen
from workflows import recommend_steps as steps
from workflows import recommend_tables as tables_lib

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


def user_count(options: RecommendBatchOptions) -> Optional[int]:
  """The users the job will score, from word2vec.txt's header line.

  Args:
    options: the job's options.

  Returns:
    The table's real rows (its rows less OOV rows), or None when the
    header does not tell.
  """
  user_dir, user_meta, _ = recommend_index.check_tables(options)
  with files.open_text(layout.TableLayout(user_dir).word2vec) as handle:
    header = handle.readline().split()
  if len(header) != 2 or not header[0].isdigit():
    return None
  rows = int(header[0])
  return min(rows, int(user_meta.get("vocabulary_size") or rows))


def _user_chunks(pipeline: beam.Pipeline, options: RecommendBatchOptions,
                 shards: int):
  """Reads the user table's vectors as chunks; outputs main and DEAD_LETTER."""
  user_dir, user_meta, _ = recommend_index.check_tables(options)
  pack = chunks_lib.PackUserLines(int(user_meta["dimension"]),
                                  artifacts.reserved_tokens(user_meta),
                                  shards)
  return (pipeline
          | "ReadUserVectors" >> beam.io.ReadFromText(
              layout.TableLayout(user_dir).word2vec, skip_header_lines=1)
          | "PackUsers" >> beam.ParDo(pack).with_outputs(
              chunks_lib.DEAD_LETTER, main="chunks"))


def _seen_chunks(pipeline: beam.Pipeline, options: RecommendBatchOptions,
                 loader: tables_lib.TablesLoader,
                 shared_handle: shared.Shared):
  """Reads --seen as packed chunks; outputs main and DEAD_LETTER."""
  options = seen_csv_options(options)
  source = recommend_seen.seen_source(
      options.seen, file_format=options.seen_format,
      columns=options.seen_columns or (), delimiter=options.seen_delimiter or
      ",", skip_header_lines=options.seen_skip_header_lines or 0,
      id_type=options.seen_id_type, user_key=options.user_key,
      item_key=options.item_key)
  return (pipeline
          | "ReadSeenRatings" >> source
          | "PackSeen" >> beam.ParDo(recommend_seen.PackSeenBatches(
              options.user_key, options.item_key, loader, shared_handle,
              options.shards)).with_outputs(chunks_lib.DEAD_LETTER,
                                            main="chunks"))


def build(pipeline: beam.Pipeline, options: RecommendBatchOptions,
          loader: Optional[tables_lib.ItemLoader] = None) -> None:
  """Adds the recommendation job's steps to a pipeline.

  Args:
    pipeline: the Beam pipeline.
    options: the job's options.
    loader: the item table's loader (recommend_index.prepare_index's);
      default the exact search's.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables do not fit together or cannot be ranked by
      their dot product, or --seen cannot be read (see seen_csv_options).
  """
  recommend_index.check_tables(options)
  loader = tables_lib.TablesLoader(
      loader or tables_lib.ItemLoader(options.embeddings, options.item_table,
                                      not options.no_bias),
      tables_lib.UserRowsLoader(options.embeddings, options.user_table)
      if options.seen else None)
  tables = shared.Shared()
  # Without seen items nothing is grouped, so one shard keeps chunks whole.
  users = _user_chunks(pipeline, options, options.shards if options.seen
                       else 1)
  dead_letters = [users[chunks_lib.DEAD_LETTER]]
  inputs = users.chunks
  if options.seen:
    seen = _seen_chunks(pipeline, options, loader, tables)
    inputs = (users.chunks, seen.chunks)
    dead_letters.append(seen[chunks_lib.DEAD_LETTER])
  scored = inputs | "Recommend" >> steps.ShardedRecommend(
      loader, tables, options.top_k, options.block_size, options.item_block)
  dead_letters.append(scored[chunks_lib.DEAD_LETTER])
  recommendations = (
      scored.users
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
  counts = {name: 0 for name in chunks_lib.COUNTERS}
  counts.update(metrics.counter_totals(result, chunks_lib.NAMESPACE))
  return counts


def user_accounting(counts: Dict[str, int]) -> Dict[str, int]:
  """Where every user went: in = written + dead-lettered when none is lost.

  Args:
    counts: the job's counters.

  Returns:
    {"in", "written", "dead_lettered"}: users read from the user table
    (valid lines and rejected ones) plus users who rated but have no
    embedding; users written to the recommendations; and the rejected,
    repeated (a token's later lines) and embedding-less users, who are in
    the dead letters.
  """
  outside = counts["user_lines_rejected"] + counts["users_without_embedding"]
  return {"in": counts["users_read"] + outside,
          "written": counts["users_written"],
          "dead_lettered": outside + counts["users_repeated"]}


def seen_accounting(counts: Dict[str, int]) -> Dict[str, int]:
  """Where every --seen row went: in = used + dead-lettered.

  Args:
    counts: the job's counters.

  Returns:
    {"in", "used", "dead_lettered", "items_unknown"}: rows read; rows of
    scored users, whose items are excluded; rows without a user or item id
    and rows of users without an embedding, both in the dead letters (the
    latter once per user); and the rows read whose item the item table
    lacks (nothing to exclude).
  """
  return {"in": counts["seen_rows_read"],
          "used": counts["seen_rows_of_users"],
          "dead_lettered": (counts["seen_rows_rejected"] +
                            counts["seen_rows_without_user"]),
          "items_unknown": counts["seen_items_unknown"]}


def recommend_batch(options: RecommendBatchOptions,
                    beam_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Runs the batch recommendation job and writes its run report.

  Args:
    options: the job's options.
    beam_args: Beam pipeline flags (`--runner ...`, or `--preset NAME`).

  Returns:
    The run report, as written to run_report.json: the output prefix,
    format, k, block size, the index (recommend_index.prepare_index),
    every counter, the user and rating accounting (user_accounting,
    seen_accounting), the files written and the wall time.

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables do not fit together or cannot be ranked by
      their dot product, or --seen cannot be read.
    runners.PresetError: the preset cannot be expanded.
  """
  started = time.time()
  pipeline = beam.Pipeline(options=runners.preset_options(list(beam_args)))
  loader, index_report = recommend_index.prepare_index(options)
  build(pipeline, options, loader)
  steps.PROGRESS.reset(user_count(options))
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
      "index": index_report,
      "counts": counts,
      "users": user_accounting(counts),
      "seen_rows": seen_accounting(counts),
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
