"""Runner presets: one short flag expands into standard Beam pipeline options.

`--preset NAME` plus the few values that runner needs becomes the ordinary
`--runner ...` flags a Beam user would type; every other argument passes
through untouched, and explicit flags always win over a preset's defaults.
The result is checked with Beam's own option classes and validator, so a
missing value fails here, before any pipeline is built:

  direct               DirectRunner, in-process.
  direct_multiprocess  DirectRunner running the SDK harness in N worker
                       processes (--direct_num_workers, default: CPU count),
                       the local stand-in for a distributed runner.
  dataflow             DataflowRunner (Runner v2). Needs --project, --region,
                       --temp_location gs://...; stages this repository's
                       setup.py, or runs a custom worker container
                       (--sdk_container_image, deploy/dataflow/Dockerfile).
  flink                FlinkRunner against --flink_master host:port, through
                       a running Beam job server (--job_endpoint) or one the
                       runner starts; SDK harness as DOCKER, PROCESS or
                       EXTERNAL (a worker pool, deploy/flink/).
  portable             PortableRunner against any Beam job server
                       (--job_endpoint, optional --artifact_endpoint).

Pipelines call `expand_preset(pipeline_args)` on the arguments their own
parser did not consume, then build `PipelineOptions` from the result.
"""

import argparse
import json
import os
from typing import List, Optional, Sequence

from apache_beam.options import pipeline_options as beam_options
from apache_beam.options import pipeline_options_validator
from apache_beam.runners.dataflow import dataflow_runner
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import flink_runner
from apache_beam.runners.portability import portable_runner

PRESETS = ("direct", "direct_multiprocess", "dataflow", "flink", "portable")
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")

# The Beam SDK container of the pinned apache-beam and this Python version
# (tests/test_deploy.py checks both); the custom worker image in
# deploy/dataflow/ builds on it.
DEFAULT_SDK_IMAGE = "apache/beam_python3.11_sdk:2.77.0"
# Where the SDK container keeps its boot program (for PROCESS environments
# the same program runs directly on the worker host).
DEFAULT_PROCESS_COMMAND = "/opt/apache/beam/boot"

_REPO_SETUP_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


class PresetError(ValueError):
  """A preset that cannot produce a runnable set of options."""


def repo_setup_file() -> str:
  """The setup.py that ships this package to remote workers.

  Returns:
    The absolute path of this repository's setup.py.
  """
  return _REPO_SETUP_FILE


def _has_flag(args: Sequence[str], name: str) -> bool:
  flag = f"--{name}"
  return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def _preset_parser() -> argparse.ArgumentParser:
  # Only --preset itself is consumed; the values a preset needs are Beam's
  # own flags, read through Beam's option classes.
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument("--preset", default=None)
  return parser


def _defaults(args: List[str], **values) -> List[str]:
  """Appends `--name=value` for every value the caller did not set."""
  extra = []
  for name, value in values.items():
    if value is not None and not _has_flag(args, name):
      extra.append(f"--{name}={value}")
  return args + extra


def _options(args: Sequence[str]) -> beam_options.PipelineOptions:
  return beam_options.PipelineOptions(list(args))


def _beam_errors(args: Sequence[str], runner) -> List[str]:
  """Runs Beam's PipelineOptionsValidator over `args` for `runner`."""
  validator = pipeline_options_validator.PipelineOptionsValidator(
      _options(args), runner)
  return validator.validate()


def _raise(preset: str, errors: Sequence[str]) -> None:
  if errors:
    raise PresetError(f"--preset {preset}: " + "; ".join(errors))


def _expand_direct(args: List[str], multiprocess: bool) -> List[str]:
  args = _defaults(args, runner="DirectRunner")
  if multiprocess:
    args = _defaults(args, direct_running_mode="multi_processing",
                     direct_num_workers=os.cpu_count() or 2)
  direct = _options(args).view_as(beam_options.DirectOptions)
  errors = []
  if direct.direct_num_workers < 1:
    errors.append(f"--direct_num_workers must be >= 1, got "
                  f"{direct.direct_num_workers}")
  if multiprocess and direct.direct_running_mode != "multi_processing":
    errors.append("direct_multiprocess needs --direct_running_mode="
                  "multi_processing")
  errors.extend(_beam_errors(args, direct_runner.DirectRunner()))
  _raise("direct_multiprocess" if multiprocess else "direct", errors)
  return args


def _expand_dataflow(args: List[str]) -> List[str]:
  cloud = _options(args).view_as(beam_options.GoogleCloudOptions)
  worker = _options(args).view_as(beam_options.WorkerOptions)
  setup = _options(args).view_as(beam_options.SetupOptions)
  errors = []
  if not cloud.project:
    errors.append("--project is required (the GCP project that runs the job)")
  if not cloud.region:
    errors.append("--region is required (e.g. --region=us-central1)")
  if not cloud.temp_location:
    errors.append("--temp_location gs://BUCKET/PATH is required (Dataflow "
                  "keeps temporary files and tf.Transform's analysis output "
                  "there)")
  # Checked here, before Beam's validator: given two bad locations it falls
  # back to creating a default bucket, a network call.
  validator = pipeline_options_validator.PipelineOptionsValidator(
      _options(args), dataflow_runner.DataflowRunner())
  for name in ("temp_location", "staging_location"):
    value = getattr(cloud, name)
    if value and not value.startswith("gs://"):
      errors.append(f"--{name} must be a gs:// path, got {value!r}")
    elif value:
      errors.extend(validator.validate_gcs_path(cloud, name))
  _raise("dataflow", errors)

  # Workers get our code either from a custom container that already has the
  # package installed, or from an sdist of setup.py staged with the job.
  if not worker.sdk_container_image and not setup.setup_file:
    if not os.path.isfile(_REPO_SETUP_FILE):
      _raise("dataflow", [
          f"{_REPO_SETUP_FILE} does not exist (installed without the source "
          f"tree?): pass --setup_file=PATH/setup.py or "
          f"--sdk_container_image=IMAGE built from deploy/dataflow/Dockerfile"])
    args = _defaults(args, setup_file=_REPO_SETUP_FILE)
  args = _defaults(args, runner="DataflowRunner",
                   staging_location=cloud.temp_location.rstrip("/") +
                   "/staging")
  debug = _options(args).view_as(beam_options.DebugOptions)
  if not debug.lookup_experiment("use_runner_v2"):
    args = args + ["--experiments=use_runner_v2"]
  # Beam's GoogleCloudOptions.validate asks GCS for the bucket's soft-delete
  # policy unless --dry_run is set; validating a dry-run copy keeps option
  # checking offline, the real run still does the check.
  errors = _beam_errors(args + ["--dry_run=True"],
                        dataflow_runner.DataflowRunner())
  _raise("dataflow", errors)
  return args


def _environment(args: List[str], preset: str) -> List[str]:
  """Fills the SDK-harness environment flags of a portable runner."""
  portable = _options(args).view_as(beam_options.PortableOptions)
  worker = _options(args).view_as(beam_options.WorkerOptions)
  setup = _options(args).view_as(beam_options.SetupOptions)
  env_type = (portable.environment_type or "DOCKER").upper()
  if env_type not in ENVIRONMENT_TYPES:
    _raise(preset, [f"--environment_type must be one of {ENVIRONMENT_TYPES}, "
                    f"got {portable.environment_type!r}"])
  # Runners compare the type in upper case; normalise whatever was typed.
  args = _strip_flag_value(args, "environment_type")
  args = args + [f"--environment_type={env_type}"]
  has_config = portable.environment_config or portable.environment_options
  image = worker.sdk_container_image
  if env_type == "DOCKER" and not has_config:
    args = args + [f"--environment_config={image or DEFAULT_SDK_IMAGE}"]
  elif env_type == "PROCESS" and not has_config:
    args = args + ["--environment_config=" + json.dumps(
        {"command": DEFAULT_PROCESS_COMMAND})]
  elif env_type == "EXTERNAL" and not has_config:
    _raise(preset, ["--environment_type EXTERNAL needs --environment_config="
                    "HOST:PORT of the SDK worker pool (the beam_python sdk "
                    "container started with --worker_pool, port 50000)"])
  # A worker pool or custom image built from deploy/dataflow/Dockerfile
  # already has the package; the stock image gets it as a staged sdist.
  ships_code = env_type == "EXTERNAL" or (
      env_type == "DOCKER" and (image or portable.environment_config))
  if not ships_code and env_type != "LOOPBACK" and not setup.setup_file:
    if os.path.isfile(_REPO_SETUP_FILE):
      args = _defaults(args, setup_file=_REPO_SETUP_FILE)
  return args


def _strip_flag_value(args: List[str], name: str) -> List[str]:
  """Removes `--name VALUE` and `--name=VALUE` occurrences."""
  out, skip = [], False
  flag = f"--{name}"
  for arg in args:
    if skip:
      skip = False
      continue
    if arg == flag:
      skip = True
      continue
    if arg.startswith(flag + "="):
      continue
    out.append(arg)
  return out


def _expand_flink(args: List[str]) -> List[str]:
  flink = _options(args).view_as(beam_options.FlinkRunnerOptions)
  if flink.flink_master in flink_runner.MAGIC_HOST_NAMES:
    _raise("flink", ["--flink_master HOST:PORT is required (the Flink "
                     "JobManager's REST address, e.g. localhost:8081); use "
                     "--preset direct_multiprocess for a local run"])
  master = flink.flink_master.split("://", 1)[-1]
  if ":" not in master or not master.rsplit(":", 1)[1].isdigit():
    _raise("flink", [f"--flink_master must be HOST:PORT, got "
                     f"{flink.flink_master!r}"])
  args = _defaults(args, runner="FlinkRunner")
  args = _environment(args, "flink")
  _raise("flink", _beam_errors(args, flink_runner.FlinkRunner()))
  return args


def _expand_portable(args: List[str]) -> List[str]:
  portable = _options(args).view_as(beam_options.PortableOptions)
  if not portable.job_endpoint:
    _raise("portable", ["--job_endpoint HOST:PORT is required (the Beam job "
                        "server, e.g. localhost:8099)"])
  args = _defaults(args, runner="PortableRunner")
  args = _environment(args, "portable")
  _raise("portable", _beam_errors(args, portable_runner.PortableRunner()))
  return args


def expand_preset(pipeline_args: List[str]) -> List[str]:
  """Expands `--preset NAME` in pipeline arguments into standard Beam flags.

  Args:
    pipeline_args: the arguments a pipeline's own parser left over (Beam
      flags), possibly holding `--preset NAME`.

  Returns:
    The arguments with `--preset` replaced by the runner's flags (explicit
    flags kept, preset defaults added after them). Arguments without a preset
    come back unchanged.

  Raises:
    PresetError: a required value is missing or Beam's validator rejects the
      options; the message names the preset and the flag.
  """
  known, rest = _preset_parser().parse_known_args(list(pipeline_args))
  if known.preset is None:
    return list(pipeline_args)
  if known.preset not in PRESETS:
    raise PresetError(f"--preset {known.preset!r} is unknown; choose one of "
                      f"{', '.join(PRESETS)}")
  runner = _options(rest).view_as(beam_options.StandardOptions).runner
  if runner is not None:
    raise PresetError(f"--preset {known.preset} chooses the runner; drop "
                      f"--runner={runner} (or drop --preset)")
  if known.preset in ("direct", "direct_multiprocess"):
    return _expand_direct(rest, multiprocess=known.preset != "direct")
  if known.preset == "dataflow":
    return _expand_dataflow(rest)
  if known.preset == "flink":
    return _expand_flink(rest)
  return _expand_portable(rest)


def spills_between_stages(options: beam_options.PipelineOptions) -> bool:
  """Whether the runner keeps what crosses stages off the heap (on disk).

  Dataflow's shuffle does; the local runners (DirectRunner's FnApiRunner)
  keep every such element in memory, so a job that must stay flat in
  memory there avoids making a large PCollection wait for a later stage.

  Args:
    options: the pipeline's options.

  Returns:
    True for the Dataflow runners.
  """
  runner = options.view_as(beam_options.StandardOptions).runner or ""
  name = runner if isinstance(runner, str) else type(runner).__name__
  return "Dataflow" in name


def preset_options(pipeline_args: Optional[List[str]] = None
                  ) -> beam_options.PipelineOptions:
  """PipelineOptions from arguments that may hold a preset.

  Args:
    pipeline_args: Beam arguments, possibly with `--preset NAME`.

  Returns:
    The PipelineOptions built from the expanded arguments.
  """
  return beam_options.PipelineOptions(expand_preset(list(pipeline_args or [])))
