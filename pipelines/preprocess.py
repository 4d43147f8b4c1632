"""`embeddings preprocess`: raw tables -> TFRecords + tf.Transform graph.

A Beam + tf.Transform job in the shape of apache_beam/examples/wordcount.py
(its steps are in pipelines/steps.py):

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
checked against max_rejected_fraction and feature_info.json and
run_report.json are written. Rows in = rows written + rows rejected, per
table; run_report.json has the numbers.

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

import argparse
import dataclasses
import logging
import sys
import time
from typing import (Any, Dict, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions

from core import files
from core import flags
from core import layout
from core import outputs
from pipelines import counts as counts_lib
from pipelines import inputs
from pipelines import metrics
from pipelines import rows as rows_lib
from pipelines import runners
from pipelines import steps
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
  """One preprocessing run: what it reads, where it writes, what it accepts.

  Each field is also the command-line flag of the same name.
  """
  spec: str = flags.option(help="feature spec YAML")
  output: str = flags.option(help="output directory (local, gs://, ...)")
  env: Tuple[Tuple[str, str], ...] = flags.option(
      (), help="set ${KEY} in the spec's paths (repeatable)",
      metavar="KEY=VALUE", repeat=True, parse=spec_lib.parse_env_flags)
  max_rejected_fraction: Optional[float] = flags.option(
      None, help="fail when a table rejects more than this share of its "
                 "rows (default: the spec's)")
  num_shards: int = flags.option(
      0, help="TFRecord files per split; 0 lets the runner decide")
  raw_eval: bool = flags.option(
      False, help="also write the eval split's raw rows as tf.Examples "
                  f"({layout.RAW_EVAL}/), the rows a model's raw serving "
                  f"signature is scored on")


def flag_parser() -> argparse.ArgumentParser:
  """The job's own flags, one per PreprocessOptions field.

  Returns:
    The parser; what it does not know goes to Beam.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings preprocess",
      description=("Beam + tf.Transform: raw tables -> gzipped TFRecords, "
                   "transform_fn/, feature_info.json, run_report.json. "
                   "Other flags go to Beam (--runner, --direct_num_workers, "
                   "--temp_location, ...)."))
  flags.add_flags(parser, PreprocessOptions)
  return parser


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
  """The options that flags parsed by `flag_parser` give.

  Args:
    args: the parsed flags.

  Returns:
    The PreprocessOptions.

  Raises:
    spec_lib.SpecError: an --env entry is not NAME=VALUE.
  """
  return PreprocessOptions(**flags.values_from_args(PreprocessOptions, args))


def parse_args(argv: Optional[Sequence[str]] = None
              ) -> Tuple[PreprocessOptions, List[str]]:
  """Splits a command line into the job's options and Beam's arguments.

  Args:
    argv: command-line flags (default: sys.argv[1:]).

  Returns:
    (the options, the arguments the job does not know: Beam options, maybe
    with a --preset).

  Raises:
    spec_lib.SpecError: an --env entry is not NAME=VALUE.
  """
  known, beam_args = flag_parser().parse_known_args(
      None if argv is None else list(argv))
  return options_from_args(known), beam_args


class JobPlan(NamedTuple):
  """What a run knows before its pipeline is built.

  Attributes:
    spec: the loaded feature spec.
    rules: table name -> TableRules, for every table the job reads.
    max_rejected_fraction: the option, or the spec's when it is unset.
    pipeline_options: Beam's options.
    beam_args: the Beam arguments the options came from.
  """
  spec: spec_lib.FeatureSpec
  rules: Mapping[str, rows_lib.TableRules]
  max_rejected_fraction: float
  pipeline_options: PipelineOptions
  beam_args: List[str]


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
    spec_lib.SpecError: the spec is invalid.
    inputs.InputError: an input is missing, empty or unreadable, or a
      BigQuery input lacks a gs:// --temp_location or --project.
    ValueError: max_rejected_fraction is outside [0, 1].
  """
  spec = loader.load_spec(options.spec, dict(options.env))
  max_fraction = (spec.max_rejected_fraction
                  if options.max_rejected_fraction is None
                  else options.max_rejected_fraction)
  if not 0.0 <= max_fraction <= 1.0:
    raise ValueError(f"--max_rejected_fraction must be in [0, 1], got "
                     f"{max_fraction}")
  rules = inputs.plan_inputs(spec)
  pipeline_options = PipelineOptions(list(beam_args))
  inputs.check_bigquery_options(spec, pipeline_options)
  return JobPlan(spec, rules, max_fraction, pipeline_options, list(beam_args))


def _run_pipeline(plan: JobPlan, options: PreprocessOptions, staging: str):
  pipeline = beam.Pipeline(options=plan.pipeline_options)
  with tft_beam.Context(temp_dir=layout.PreprocessedLayout(staging).tft_temp):
    steps.build_pipeline(pipeline, plan.spec, plan.rules, staging,
                         options.num_shards, options.raw_eval)
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


def _write_report(plan: JobPlan, options: PreprocessOptions, staging: str,
                  summary: Mapping[str, Any],
                  started: float) -> Dict[str, Any]:
  """Writes feature_info.json and run_report.json; returns the report."""
  out = layout.PreprocessedLayout(staging)
  spec = plan.spec
  transform_output = tft.TFTransformOutput(staging)
  vocabulary_sizes = {
      f.name: transform_output.vocabulary_size_by_name(f.name)
      for f in spec.features if f.has_learned_vocabulary}
  infos = feature_info_lib.resolve_feature_info(spec, vocabulary_sizes)
  feature_info_lib.write_feature_info(staging, infos)
  for temporary in (out.tft_temp, out.counts):
    files.remove_tree(temporary)
  report = {
      "spec": spec.name,
      "spec_path": options.spec,
      "output": options.output,
      "main_table": spec.main,
      **summary,
      "vocabulary_sizes": vocabulary_sizes,
      "feature_sizes": {n: i.size for n, i in infos.items()},
      "embedding_dims": {n: i.embedding_dim for n, i in infos.items()
                         if i.size},
      "max_rejected_fraction": plan.max_rejected_fraction,
      "beam_options": plan.beam_args,
      "wall_time_s": round(time.time() - started, 3),
  }
  files.write_json(out.report, report)
  return report


def _print_metrics(result) -> None:
  try:
    totals = metrics.counter_totals(result, steps.METRICS_NAMESPACE)
  except (NotImplementedError, AttributeError, ValueError):
    return
  for name in sorted(totals):
    print(f"  {name}: {totals[name]}")


def _print_summary(report: Mapping[str, Any]) -> None:
  written = report["rows_written"]
  raw = "".join(f", {n} raw rows to {name}/"
                for name, n in report["raw_rows_written"].items())
  print(f"embeddings preprocess: wrote {written[layout.TRAIN]} train and "
        f"{written[layout.EVAL]} eval rows{raw} to {report['output']} in "
        f"{report['wall_time_s']:.1f}s; rejected "
        f"{sum(report['rows_rejected_total'].values())} rows")


def preprocess(options: PreprocessOptions,
               beam_args: Sequence[str] = ()) -> Dict[str, Any]:
  """Runs the preprocessing job.

  Args:
    options: what to read, where to write it, what to accept.
    beam_args: Beam pipeline options (--runner, --direct_num_workers, ...),
      or a `--preset NAME` with its values (pipelines/runners.py).

  Returns:
    The run report, as written to run_report.json: spec, spec_path, output,
    main_table, rows_read {table: n}, rows_written {train, eval: n},
    raw_rows_written ({eval_raw: n} with raw_eval, else {}), rows_rejected
    {table: {reason: n}}, rows_rejected_total {table: n},
    vocabulary_sizes, feature_sizes, embedding_dims, max_rejected_fraction,
    beam_options (presets expanded) and wall_time_s.

  Raises:
    spec_lib.SpecError: the spec is invalid.
    inputs.InputError: an input is missing, empty or unreadable, or a
      BigQuery input lacks a gs:// --temp_location or --project.
    runners.PresetError: a preset's options are missing or invalid.
    counts_lib.RejectedRowsError: too many rows were rejected (the staging
      directory with its dead letters is kept and named in the message).
    counts_lib.EmptyInputError: no rows to analyze.
    ValueError: max_rejected_fraction is outside [0, 1].
  """
  plan = plan_job(options, runners.expand_preset(list(beam_args)))
  started = time.time()
  staging = outputs.new_staging_dir(options.output)
  keep_staging = False
  try:
    result = _run_pipeline(plan, options, staging)
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
  _print_summary(report)
  _print_metrics(result)
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
  """Runs the job; known failures print one clear line and return 1.

  Args:
    argv: as for run().

  Returns:
    The process exit status.
  """
  try:
    run(argv)
  except (spec_lib.SpecError, inputs.InputError, counts_lib.RejectedRowsError,
          counts_lib.EmptyInputError, runners.PresetError) as error:
    print(f"embeddings preprocess: error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.WARNING)
  sys.exit(main())
