"""Runner presets: the Beam options they expand to, and their errors."""

import json

import pytest
from apache_beam.options import pipeline_options as beam_options

from pipelines import runners

DATAFLOW = ["--preset", "dataflow", "--project", "my-project", "--region",
            "us-central1", "--temp_location", "gs://my-bucket/tmp"]


def _view(args, cls):
  return beam_options.PipelineOptions(args).view_as(cls)


def test_no_preset_leaves_arguments_alone():
  args = ["--runner", "DirectRunner", "--direct_num_workers", "3"]
  assert runners.expand_preset(args) == args


def test_direct():
  args = runners.expand_preset(["--preset", "direct"])
  assert args == ["--runner=DirectRunner"]


def test_direct_multiprocess_defaults_and_override():
  args = runners.expand_preset(["--preset", "direct_multiprocess",
                                "--direct_num_workers", "2"])
  direct = _view(args, beam_options.DirectOptions)
  assert _view(args, beam_options.StandardOptions).runner == "DirectRunner"
  assert direct.direct_running_mode == "multi_processing"
  assert direct.direct_num_workers == 2
  with pytest.raises(runners.PresetError, match="direct_num_workers must be"):
    runners.expand_preset(["--preset", "direct_multiprocess",
                           "--direct_num_workers", "0"])


def test_dataflow_expands_to_runner_v2_with_setup_file():
  args = runners.expand_preset(DATAFLOW + ["--machine_type", "n2-standard-4",
                                           "--max_num_workers", "20"])
  cloud = _view(args, beam_options.GoogleCloudOptions)
  worker = _view(args, beam_options.WorkerOptions)
  setup = _view(args, beam_options.SetupOptions)
  debug = _view(args, beam_options.DebugOptions)
  assert _view(args, beam_options.StandardOptions).runner == "DataflowRunner"
  assert (cloud.project, cloud.region) == ("my-project", "us-central1")
  assert cloud.temp_location == "gs://my-bucket/tmp"
  assert cloud.staging_location == "gs://my-bucket/tmp/staging"
  assert setup.setup_file == runners.repo_setup_file()
  assert setup.setup_file.endswith("setup.py")
  assert debug.lookup_experiment("use_runner_v2")
  assert (worker.machine_type, worker.max_num_workers) == ("n2-standard-4", 20)


def test_dataflow_custom_container_replaces_setup_file():
  args = runners.expand_preset(DATAFLOW + [
      "--sdk_container_image", "us-docker.pkg.dev/p/r/embeddings:1",
      "--staging_location", "gs://my-bucket/staging"])
  assert _view(args, beam_options.SetupOptions).setup_file is None
  assert (_view(args, beam_options.WorkerOptions).sdk_container_image
          == "us-docker.pkg.dev/p/r/embeddings:1")
  assert (_view(args, beam_options.GoogleCloudOptions).staging_location
          == "gs://my-bucket/staging")
  # An experiment already given is not repeated.
  again = runners.expand_preset(DATAFLOW + ["--experiments=use_runner_v2"])
  assert again.count("--experiments=use_runner_v2") == 1


@pytest.mark.parametrize("args,message", [
    (["--preset", "dataflow", "--project", "my-project", "--region", "r1"],
     "--temp_location gs://BUCKET/PATH is required"),
    (["--preset", "dataflow", "--region", "r1", "--temp_location",
      "gs://my-bucket/t"], "--project is required"),
    (["--preset", "dataflow", "--project", "my-project", "--temp_location",
      "gs://my-bucket/t"], "--region is required"),
    (DATAFLOW[:-1] + ["/tmp/local"], "--temp_location must be a gs:// path"),
    (DATAFLOW + ["--staging_location", "/tmp/s"],
     "--staging_location must be a gs:// path"),
    (DATAFLOW[:-1] + ["gs://x/tmp"], "Invalid GCS bucket"),
    (DATAFLOW + ["--num_workers", "8", "--max_num_workers", "2"],
     r"num_workers \(8\) cannot exceed max_num_workers \(2\)"),
    (["--preset", "dataflow", "--project", "My Project", "--region", "r1",
      "--temp_location", "gs://my-bucket/t"], "Invalid Project ID"),
])
def test_dataflow_errors(args, message):
  with pytest.raises(runners.PresetError, match=message):
    runners.expand_preset(args)


def test_flink_external_worker_pool():
  args = runners.expand_preset([
      "--preset", "flink", "--flink_master", "localhost:8081",
      "--job_endpoint", "localhost:8099", "--environment_type", "external",
      "--environment_config", "localhost:50000", "--parallelism", "4"])
  portable = _view(args, beam_options.PortableOptions)
  flink = _view(args, beam_options.FlinkRunnerOptions)
  assert _view(args, beam_options.StandardOptions).runner == "FlinkRunner"
  assert flink.flink_master == "localhost:8081"
  assert flink.parallelism == 4
  assert portable.environment_type == "EXTERNAL"
  assert portable.environment_config == "localhost:50000"
  assert portable.job_endpoint == "localhost:8099"
  # The worker pool image already has the package: nothing to stage.
  assert _view(args, beam_options.SetupOptions).setup_file is None


def test_flink_docker_default_image_stages_package():
  args = runners.expand_preset(["--preset", "flink", "--flink_master",
                                "flink-jobmanager:8081"])
  portable = _view(args, beam_options.PortableOptions)
  assert portable.environment_type == "DOCKER"
  assert portable.environment_config == runners.DEFAULT_SDK_IMAGE
  assert (_view(args, beam_options.SetupOptions).setup_file
          == runners.repo_setup_file())


def test_flink_docker_custom_image_and_process():
  args = runners.expand_preset([
      "--preset", "flink", "--flink_master", "jm:8081",
      "--sdk_container_image", "embeddings-worker:latest"])
  portable = _view(args, beam_options.PortableOptions)
  assert portable.environment_config == "embeddings-worker:latest"
  assert _view(args, beam_options.SetupOptions).setup_file is None
  args = runners.expand_preset(["--preset", "flink", "--flink_master",
                                "jm:8081", "--environment_type", "PROCESS"])
  config = _view(args, beam_options.PortableOptions).environment_config
  assert json.loads(config) == {"command": runners.DEFAULT_PROCESS_COMMAND}


@pytest.mark.parametrize("args,message", [
    (["--preset", "flink"], "--flink_master HOST:PORT is required"),
    (["--preset", "flink", "--flink_master", "jobmanager"],
     "--flink_master must be HOST:PORT"),
    (["--preset", "flink", "--flink_master", "jm:8081", "--environment_type",
      "EXTERNAL"], "EXTERNAL needs --environment_config"),
    (["--preset", "flink", "--flink_master", "jm:8081", "--environment_type",
      "KUBERNETES"], "--environment_type must be one of"),
    (["--preset", "portable"], "--job_endpoint HOST:PORT is required"),
    (["--preset", "portable", "--job_endpoint", "localhost:8099",
      "--environment_config", "img", "--environment_option",
      "docker_container_image=other"],
     "environment_config is incompatible with option"),
    (["--preset", "direct", "--runner", "DataflowRunner"],
     "chooses the runner"),
])
def test_portable_errors(args, message):
  with pytest.raises(runners.PresetError, match=message):
    runners.expand_preset(args)


def test_portable_job_and_artifact_endpoints():
  args = runners.expand_preset([
      "--preset", "portable", "--job_endpoint", "localhost:8099",
      "--artifact_endpoint", "localhost:8098", "--environment_type",
      "EXTERNAL", "--environment_config", "localhost:50000"])
  portable = _view(args, beam_options.PortableOptions)
  assert _view(args, beam_options.StandardOptions).runner == "PortableRunner"
  assert (portable.job_endpoint, portable.artifact_endpoint) == (
      "localhost:8099", "localhost:8098")
  assert portable.environment_type == "EXTERNAL"


def test_unknown_preset_is_rejected():
  with pytest.raises(runners.PresetError, match="'spark' is unknown"):
    runners.expand_preset(["--preset", "spark"])


def test_preset_options_builds_pipeline_options():
  options = runners.preset_options(["--preset", "direct_multiprocess",
                                    "--direct_num_workers", "3"])
  assert options.view_as(beam_options.DirectOptions).direct_num_workers == 3
