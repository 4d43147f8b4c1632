"""The Dataflow job `embeddings preprocess` would submit, built offline.

`python -m deploy.dataflow_job` takes the same flags as `embeddings
preprocess` plus Dataflow options (a `--preset dataflow` expands as usual)
and builds the complete job with Beam's own DataflowRunner in `--dry_run`
mode: Dataflow's overrides, the Runner v2 portable pipeline, the worker
environment with the staged package (the setup.py sdist) or custom
container. Nothing is uploaded and no credentials are needed.

Beam's dry run stops before `--dataflow_job_file` is written (writing it is
part of staging, which uploads to GCS), so this module writes it: the job
description from Beam's own `apiclient.Environment`, exactly what the
service would receive minus the staged files' URLs, and beside it
`<job file>.pipeline.json`, the portable pipeline Runner v2 executes.

tf.Transform writes its intermediate graphs to its temp dir while the
pipeline is being built, so that dir (--tft_temp_dir, default a local
temporary directory) must be writable from here; in a real submission it is
under the gs:// output. That is the only local write.

  python -m deploy.dataflow_job --spec configs/movielens100k.yaml \\
      --output gs://BUCKET/ml100k/preprocessed --preset dataflow \\
      --project PROJECT --region us-central1 --temp_location gs://BUCKET/tmp \\
      --dataflow_job_file /tmp/job.json

(the spec's input files must exist where it says: they are checked as for
a real run; the gs:// paths are only named).

From Python, with the preprocessing job's typed options:

  built = dataflow_job.build_job(preprocess.PreprocessOptions(
      spec="configs/movielens100k.yaml", output="gs://BUCKET/out"),
      ["--preset", "dataflow", "--project", "PROJECT", ...])
"""

import argparse
import dataclasses
import json
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options as beam_options
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.runners.internal import names as shared_names
from google.protobuf import json_format

from pipelines import inputs
from pipelines import options as options_lib
from pipelines import preprocess
from pipelines import runners
from pipelines import job
from transforms import spec as spec_lib

PIPELINE_SUFFIX = ".pipeline.json"


@dataclasses.dataclass
class DataflowJob:
  """A Dataflow job built without submitting it.

  Attributes:
    job: the Dataflow job description (what --dataflow_job_file holds).
    pipeline: the Runner v2 portable pipeline, as JSON.
    steps: the top-level step names, in pipeline order.
    options: the pipeline options the job was built with.
  """
  job: Dict[str, object]
  pipeline: Dict[str, object]
  steps: List[str]
  options: beam_options.PipelineOptions


def top_level_steps(pipeline: Dict[str, object]) -> List[str]:
  """Names of the steps directly under the pipeline's root transform.

  Args:
    pipeline: a portable pipeline as JSON (json_format.MessageToDict).

  Returns:
    Step names such as "ReadMainTrain", "Analyze", "WriteDeadLetters".
  """
  transforms = pipeline["components"]["transforms"]
  names = []
  for root_id in pipeline["rootTransformIds"]:
    root = transforms[root_id]
    children = root.get("subtransforms") or []
    if not children:
      names.append(root["uniqueName"])
    names.extend(transforms[child]["uniqueName"] for child in children)
  return names


PROG = "python -m deploy.dataflow_job"


def flag_parser() -> argparse.ArgumentParser:
  """`embeddings preprocess`'s flags plus --tft_temp_dir, named after this.

  Returns:
    The parser; what it does not know goes to Beam (Dataflow options,
    --preset dataflow, --dataflow_job_file).
  """
  parser = options_lib.preprocess_parser(prog=PROG)
  parser.description = (
      "Build the Dataflow job of `embeddings preprocess` offline (Beam "
      "--dry_run: no credentials, nothing uploaded) and write it with "
      "--dataflow_job_file PATH. Other flags go to Beam (--preset dataflow "
      "--project --region --temp_location ...).")
  parser.add_argument("--tft_temp_dir", default=None,
                      help="where tf.Transform writes its graphs while the "
                           "pipeline is built (unset: a local temp dir)")
  return parser


def _describe(job) -> DataflowJob:
  """The DataflowJob of a dry run's job; writes the job file if asked."""
  cloud = job.options.view_as(beam_options.GoogleCloudOptions)
  # The same Environment the client builds before submitting; with no
  # packages uploaded its list of staged files is empty, the rest is equal.
  job.proto.environment = apiclient.Environment(
      packages=[], options=job.options,
      environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
      proto_pipeline_staged_url=FileSystems.join(
          cloud.staging_location, shared_names.STAGED_PIPELINE_FILENAME),
      proto_pipeline=job.proto_pipeline).proto
  pipeline_json = json_format.MessageToDict(job.proto_pipeline)
  built = DataflowJob(job=json.loads(job.json()), pipeline=pipeline_json,
                      steps=top_level_steps(pipeline_json),
                      options=job.options)
  job_file = job.options.view_as(beam_options.DebugOptions).dataflow_job_file
  if job_file:
    write_job_file(built, job_file)
  return built


def build_job(options: preprocess.PreprocessOptions,
              beam_args: Sequence[str] = (),
              tft_temp_dir: Optional[str] = None) -> DataflowJob:
  """Builds the preprocessing job for DataflowRunner without submitting it.

  Args:
    options: the job's options, as for preprocess.preprocess.
    beam_args: Beam/Dataflow options (or `--preset dataflow` with its
      values); `--dry_run` is implied.
    tft_temp_dir: where tf.Transform writes its graphs while the pipeline
      is built (default: a local temporary directory).

  Returns:
    The DataflowJob; when `--dataflow_job_file` is given, the job and its
    pipeline are also written there.

  Raises:
    runners.PresetError: Dataflow options are missing or invalid.
    transforms.spec.SpecError, pipelines.inputs.InputError: as for
      preprocess.preprocess.
  """
  beam_args = runners.expand_preset(list(beam_args)) + ["--dry_run=True"]
  runner = beam_options.PipelineOptions(beam_args).view_as(
      beam_options.StandardOptions).runner
  if runner != "DataflowRunner":
    raise runners.PresetError(f"this builds a DataflowRunner job; got "
                              f"--runner={runner} (use --preset dataflow)")
  plan = preprocess.plan_job(options, beam_args)
  # The job only names its output paths; nothing is written there.
  staging = options.output.rstrip("/") + ".staging-dryrun"
  with tempfile.TemporaryDirectory(prefix="tft-dryrun-") as local_temp:
    pipeline = beam.Pipeline(options=plan.pipeline_options)
    with tft_beam.Context(temp_dir=tft_temp_dir or local_temp):
      job.build_pipeline(pipeline, plan.spec, plan.rules, staging,
                           options.num_shards, options.raw_eval,
                           reread_input=preprocess.reads_input_twice(
                               options, plan.spec, plan.pipeline_options))
    result = pipeline.run()
  return _describe(result.job)


def build_preprocess_job(argv: Sequence[str]) -> DataflowJob:
  """build_job from a command line.

  Args:
    argv: `embeddings preprocess` flags plus Beam/Dataflow options (or
      `--preset dataflow` with its values) and this module's
      `--tft_temp_dir`.

  Returns:
    As build_job.

  Raises:
    As build_job.
  """
  parser = flag_parser()
  known, beam_args = parser.parse_known_args(list(argv))
  return build_job(options_lib.options_from_args(known), beam_args,
                   tft_temp_dir=known.tft_temp_dir)


def write_job_file(built: DataflowJob, path: str) -> None:
  """Writes the job description and, beside it, the portable pipeline.

  Args:
    built: from build_preprocess_job.
    path: the job file (any Beam filesystem); the pipeline goes to
      `path + ".pipeline.json"`.
  """
  for target, payload in ((path, built.job),
                          (path + PIPELINE_SUFFIX, built.pipeline)):
    with FileSystems.create(target) as handle:
      handle.write(json.dumps(payload, indent=2, sort_keys=True).encode())


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Builds the job, writes the job file if asked, prints the steps.

  Args:
    argv: as for build_preprocess_job (default: sys.argv[1:]).

  Returns:
    0.

  Raises:
    As build_job.
  """
  built = build_preprocess_job(sys.argv[1:] if argv is None else argv)
  environment = built.job.get("environment", {})
  images = [pool.get("workerHarnessContainerImage")
            for pool in environment.get("workerPools", [])]
  print(f"Dataflow job {built.job['name']} ({built.job['type']}), "
        f"{len(built.steps)} steps, worker image {images}:")
  for step in built.steps:
    print(f"  {step}")
  job_file = built.options.view_as(
      beam_options.DebugOptions).dataflow_job_file
  if job_file:
    print(f"{PROG}: wrote the job to {job_file} and its pipeline to "
          f"{job_file}{PIPELINE_SUFFIX}")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs `run`; known failures print one line instead of a traceback.

  Args:
    argv: as for run().

  Returns:
    0, 1 for a bad spec or input, 2 for unusable Dataflow options.
  """
  try:
    return run(argv)
  except (runners.PresetError, options_lib.OptionsError) as error:
    print(f"{PROG}: error: {error} (see {PROG} --help)", file=sys.stderr)
    return 2
  except (spec_lib.SpecError, inputs.InputError) as error:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
