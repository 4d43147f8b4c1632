"""`embeddings preprocess`: raw tables -> TFRecords + tf.Transform graph.

A Beam + tf.Transform job in the shape of apache_beam/examples/wordcount.py
(the job is assembled in pipelines/job.py from the steps in
pipelines/steps.py):

  read (CSV / Parquet / TFRecord files, BigQuery tables or queries, in
        batches)
    -> parse and validate per table (bad rows -> dead letters)
    -> join side tables (broadcast side input or CoGroupByKey)
    -> split train/eval (hash of a key, or given eval files)
    -> Arrow RecordBatches in TFXIO form
    -> tft_beam.AnalyzeDataset on train only
    -> tft_beam.TransformDataset on train and eval (same transform_fn)
    -> tf.Example (tfx_bsl encoder) -> gzipped TFRecord shards
       (with raw_eval, the eval split's raw rows too)

Everything is written into a staging directory beside the output and moved
into place with _SUCCESS last (core/outputs.py), after the rejected rows are
checked against max_rejected_fraction and feature_info.json,
run_report.json and the raw schema (metadata/) are written; staging folders
that killed or failed runs to the same output left are removed first. For
the main table, rows in = rows written + rows rejected + blank lines;
run_report.json has the numbers, the inputs read and the ${VAR} values
used. The run prints a line per phase, a progress line at most every 10 s
while reading, and one summary line.

From Python:

  report = preprocess.preprocess(preprocess.PreprocessOptions(
      spec="configs/movielens100k.yaml", output=OUT,
      env=(("ML100K_FOLD", "u2"),)), beam_args=["--direct_num_workers", "2"])

From the command line (the flags are PreprocessOptions' fields; the rest
are Beam options):

  embeddings preprocess --spec configs/movielens100k.yaml --output OUT \\
      [--env ML100K_FOLD=u2] [--max_rejected_fraction 0.05] [--num_shards 4] \\
      [--raw_eval] [Beam options, e.g. --direct_num_workers 2
       --direct_running_mode multi_processing]
"""

import logging
import sys
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils

from core import files
from core import layout
from core import outputs
from pipelines import counts as counts_lib
from pipelines import inputs
from pipelines import options as options_lib
from pipelines import progress
from pipelines import rows as rows_lib
from pipelines import runners
from pipelines import job
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib

# The job's options live in pipelines/options.py, which `--help` loads
# without TensorFlow or Beam; these are the names callers know them by.
PreprocessOptions = options_lib.PreprocessOptions
parse_args = options_lib.parse_args

PROG = "embeddings preprocess"
# tf dtype of each spec column type in the raw schema (as TFXIO reads it).
_RAW_DTYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32}


class JobPlan(NamedTuple):
  """What a run knows before its pipeline is built.

  Attributes:
    spec: the loaded feature spec.
    rules: table name -> TableRules, for every table the job reads.
    max_rejected_fraction: the option, or the spec's when it is unset.
    pipeline_options: Beam's options.
    beam_args: the Beam arguments the options came from.
    inputs: table name -> what it reads (resolved patterns, matched files,
      or the BigQuery table or query), for the run report.
    warnings: things a person should look at, already printed.
  """
  spec: spec_lib.FeatureSpec
  rules: Mapping[str, rows_lib.TableRules]
  max_rejected_fraction: float
  pipeline_options: PipelineOptions
  beam_args: List[str]
  inputs: Mapping[str, Mapping[str, Any]]
  warnings: List[str]


def _check_env_names(options: PreprocessOptions,
                     spec: spec_lib.FeatureSpec) -> None:
  """Refuses --env names the spec never references (a typo reads defaults)."""
  unknown = [name for name, _ in options.env if name not in spec.env]
  if not unknown:
    return
  known = (", ".join(f"${{{name}}}" for name in sorted(spec.env))
           or "no variable")
  raise spec_lib.SpecError(
      f"--env {', '.join(dict.fromkeys(unknown))}: {options.spec} never "
      f"references it; it references {known}")


def _input_report(spec: spec_lib.FeatureSpec,
                  found: Mapping[str, Mapping[str, Any]]
                 ) -> Dict[str, Dict[str, Any]]:
  report = {}
  for name, info in found.items():
    table = spec.inputs[name]
    if table.is_bigquery:
      report[name] = ({"query": table.query} if table.query is not None
                      else {"table": table.table})
      continue
    report[name] = {"path": table.path, "files": list(info["paths"])}
    if table.eval_path is not None:
      report[name]["eval_path"] = table.eval_path
  return report


def plan_job(options: PreprocessOptions,
             beam_args: Sequence[str]) -> JobPlan:
  """Loads the spec and checks the inputs and options, before any Beam work.

  Args:
    options: the job's options.
    beam_args: Beam arguments with any preset already expanded
      (runners.expand_preset).

  Returns:
    The JobPlan.

  Raises:
    spec_lib.SpecError: the spec is invalid, or an --env name is one it
      never references.
    inputs.InputError: an input is missing, empty, a directory or
      unreadable, or a BigQuery input lacks a gs:// --temp_location or
      --project.
    options_lib.OptionsError: max_rejected_fraction is outside [0, 1].
  """
  spec = loader.load_spec(options.spec, dict(options.env))
  _check_env_names(options, spec)
  max_fraction = (spec.max_rejected_fraction
                  if options.max_rejected_fraction is None
                  else options.max_rejected_fraction)
  if not 0.0 <= max_fraction <= 1.0:
    raise options_lib.OptionsError(
        f"--max_rejected_fraction must be in [0, 1], got {max_fraction}")
  found = inputs.check_inputs(spec)
  rules = inputs.table_rules(spec, found)
  pipeline_options = PipelineOptions(list(beam_args))
  inputs.check_bigquery_options(spec, pipeline_options)
  warnings = inputs.header_warnings(spec, found)
  for warning in warnings:
    print(f"{PROG}: warning: {warning}", file=sys.stderr)
  return JobPlan(spec, rules, max_fraction, pipeline_options, list(beam_args),
                 _input_report(spec, found), warnings)


def reads_input_twice(options: PreprocessOptions, spec: spec_lib.FeatureSpec,
                      pipeline_options: PipelineOptions) -> bool:
  """Whether the job reads its main table twice (job.build_pipeline).

  Args:
    options: the job's options (input_passes).
    spec: the feature spec.
    pipeline_options: Beam's options.

  Returns:
    True for "two"; for "auto", unless an input is BigQuery (a query read
    twice may return other rows, and is billed twice) or the runner spills
    what crosses stages to disk (runners.spills_between_stages).
  """
  if options.input_passes != options_lib.AUTO_PASSES:
    return options.input_passes == "two"
  if any(spec.inputs[name].is_bigquery for name in spec.used_tables):
    return False
  return not runners.spills_between_stages(pipeline_options)


def _run_pipeline(plan: JobPlan, options: PreprocessOptions, staging: str):
  pipeline = beam.Pipeline(options=plan.pipeline_options)
  twice = reads_input_twice(options, plan.spec, plan.pipeline_options)
  with tft_beam.Context(temp_dir=layout.PreprocessedLayout(staging).tft_temp):
    job.build_pipeline(pipeline, plan.spec, plan.rules, staging,
                         options.num_shards, options.raw_eval,
                         reread_input=twice)
  progress.start(reread_input=twice)
  result = pipeline.run()
  result.wait_until_finish()
  return result


def _checked_summary(plan: JobPlan, options: PreprocessOptions,
                     staging: str) -> Dict[str, Any]:
  """The counts' summary, once check_rejections accepted it."""
  raw_splits = (layout.RAW_EVAL,) if options.raw_eval else ()
  summary = counts_lib.summarize_counts(
      counts_lib.read_counts(layout.PreprocessedLayout(staging).counts),
      plan.spec.used_tables, raw_splits)
  counts_lib.check_rejections(summary, plan.spec.main,
                              plan.max_rejected_fraction)
  return summary


def write_raw_metadata(spec: spec_lib.FeatureSpec, root: str) -> None:
  """Writes the raw schema where `tft.TFTransformOutput(root)` reads it.

  Its features are the raw columns tf.Transform reads
  (spec.raw_column_types()), each one value per row.

  Args:
    spec: the feature spec.
    root: the (staging) output directory.
  """
  schema = schema_utils.schema_from_feature_spec({
      name: tf.io.FixedLenFeature([], _RAW_DTYPES[column_type])
      for name, column_type in spec.raw_column_types().items()})
  metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                             layout.PreprocessedLayout(root).raw_metadata)


def _write_report(plan: JobPlan, options: PreprocessOptions, staging: str,
                  summary: Mapping[str, Any],
                  started: float) -> Dict[str, Any]:
  """Writes feature_info.json and run_report.json; returns the report."""
  out = layout.PreprocessedLayout(staging)
  spec = plan.spec
  write_raw_metadata(spec, staging)
  transform_output = tft.TFTransformOutput(staging)
  vocabulary_sizes = {
      f.name: transform_output.vocabulary_size_by_name(f.name)
      for f in spec.features if f.has_learned_vocabulary}
  infos = feature_info_lib.resolve_feature_info(spec, vocabulary_sizes)
  feature_info_lib.write_feature_info(staging, infos)
  for temporary in (out.tft_temp, out.counts):
    files.remove_tree(temporary)
  outputs.remove_beam_temp(staging)
  report = {
      "spec": spec.name,
      "spec_path": options.spec,
      "output": options.output,
      "main_table": spec.main,
      "inputs": plan.inputs,
      "env": dict(spec.env),
      **summary,
      "vocabulary_sizes": vocabulary_sizes,
      "feature_sizes": {n: i.size for n, i in infos.items()},
      "embedding_dims": {n: i.embedding_dim for n, i in infos.items()
                         if i.size},
      "names": {feature: layout.PreprocessedLayout(options.output).names(
          feature) for feature in sorted(spec.named_tables())},
      "max_rejected_fraction": plan.max_rejected_fraction,
      "input_passes": 2 if reads_input_twice(
          options, spec, plan.pipeline_options) else 1,
      "warnings": plan.warnings,
      "beam_options": plan.beam_args,
      "wall_time_s": round(time.time() - started, 3),
  }
  files.write_json(out.report, report)
  return report


def summary_line(report: Mapping[str, Any]) -> str:
  """The one line a run ends with: rows in, where they went, where to look.

  Args:
    report: the run report.

  Returns:
    The line.
  """
  main = report["main_table"]
  written = report["rows_written"]
  raw = "".join(f", {n} raw rows to {name}/"
                for name, n in report["raw_rows_written"].items())
  rejected = report["rows_rejected_total"]
  side = ", ".join(f"{n} of '{table}'" for table, n in rejected.items()
                   if table != main and n)
  line = (f"{PROG}: wrote {written[layout.TRAIN]} train + "
          f"{written[layout.EVAL]} eval rows to {report['output']}{raw} "
          f"({report['rows_read'][main]} rows of '{main}' in, "
          f"{rejected[main]} rejected, {report['rows_blank'][main]} blank "
          f"lines{f'; side rows rejected: {side}' if side else ''})")
  if sum(rejected.values()):
    line += (f"; dead letters in "
             f"{layout.join(report['output'], layout.DEAD_LETTER_DIR)}")
  return line + f" ({report['wall_time_s']:.1f}s)"


def _remove_leftovers(output: str) -> None:
  """Removes what killed or failed runs to `output` left behind."""
  removed = outputs.remove_stale_staging(output) + outputs.remove_beam_temp(
      output)
  if removed:
    print(f"{PROG}: removed {len(removed)} folder(s) earlier runs left: "
          f"{', '.join(removed)}", flush=True)


def preprocess(options: PreprocessOptions,
               beam_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Runs the preprocessing job.

  Staging folders of earlier killed or failed runs to the same output, and
  Beam's temporary folders inside it, are removed first.

  Args:
    options: what to read, where to write it, what to accept.
    beam_args: Beam pipeline options (--runner, --direct_num_workers, ...),
      or a `--preset NAME` with its values (pipelines/runners.py).

  Returns:
    The run report, as written to run_report.json: spec, spec_path, output,
    main_table, inputs {table: {path, files[, eval_path]} or {table} or
    {query}}, env {VAR: value used}, rows_read {table: n, blank lines
    included}, rows_blank {table: n}, rows_written {train, eval: n},
    raw_rows_written ({eval_raw: n} with raw_eval, else {}), rows_rejected
    {table: {reason: n}}, rows_rejected_total {table: n},
    rows_lost_to_rejected_side_rows {table: {side table: n}},
    vocabulary_sizes, feature_sizes, embedding_dims, names {feature: names
    file}, max_rejected_fraction, warnings, beam_options (presets
    expanded) and wall_time_s.

  Raises:
    spec_lib.SpecError: the spec is invalid, or an --env name is unused.
    inputs.InputError: an input is missing, empty, a directory or
      unreadable, or a BigQuery input lacks a gs:// --temp_location or
      --project.
    runners.PresetError: a preset's options are missing or invalid.
    counts_lib.RejectedRowsError: too many rows were rejected (the staging
      directory with its dead letters is kept and named in the message).
    counts_lib.EmptyInputError: no rows to analyze.
    options_lib.OptionsError: max_rejected_fraction is outside [0, 1].
  """
  plan = plan_job(options, runners.expand_preset(list(beam_args)))
  started = time.time()
  _remove_leftovers(options.output)
  staging = outputs.new_staging_dir(options.output)
  keep_staging = False
  try:
    _run_pipeline(plan, options, staging)
    try:
      summary = _checked_summary(plan, options, staging)
    except counts_lib.RejectedRowsError as error:
      keep_staging = True
      raise counts_lib.RejectedRowsError(
          f"{error}; dead letters kept in "
          f"{layout.join(staging, layout.DEAD_LETTER_DIR)}") from None
    report = _write_report(plan, options, staging, summary, started)
    outputs.commit(staging, options.output,
                   {"spec": plan.spec.name,
                    "rows_written": summary["rows_written"],
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
  except BaseException:
    if not keep_staging:
      outputs.discard(staging)
    raise
  print(summary_line(report), flush=True)
  return report


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Runs the job from command-line flags (the wordcount convention).

  Args:
    argv: command-line flags (see `embeddings preprocess --help`); flags
      this job does not know are Beam pipeline options.

  Returns:
    The run report, as `preprocess` returns it.

  Raises:
    As `preprocess`.
  """
  options, beam_args = parse_args(argv)
  return preprocess(options, beam_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the job; known failures print one clear line.

  Args:
    argv: as for run().

  Returns:
    The process exit status: 0, 1 for bad input, 2 for unusable options
    (a preset's, or --max_rejected_fraction).
  """
  try:
    run(argv)
  except (runners.PresetError, options_lib.OptionsError) as error:
    print(f"{PROG}: error: {error} (see {PROG} --help)", file=sys.stderr)
    return 2
  except (spec_lib.SpecError, inputs.InputError, counts_lib.RejectedRowsError,
          counts_lib.EmptyInputError) as error:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.WARNING)
  sys.exit(main())
