"""deploy/: manifests parse and agree with the code they run.

* every YAML/JSON file parses; Kubernetes objects have the expected kinds;
* the TF_CONFIG each trainer manifest gives each pod (as the TFJob operator,
  Vertex AI or deploy.tf_config builds it) is accepted by the trainer's own
  parser and by TensorFlow's TFConfigClusterResolver, with the strategy the
  manifest asks for;
* the README's submission commands validate with Beam's option classes;
* the Dataflow job for the MovieLens spec is built offline (--dry_run) and
  has the expected steps;
* the preprocessing pipeline survives the portable path: DirectRunner in
  multi_processing mode gives the same output as the in-process run.
"""

import ast
import configparser
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from pipelines import options as options_lib
from transforms import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
ML100K_DIR = os.environ.get(
    "ML100K_DIR", os.path.join(REPO, "..", "shared", "data", "ml-100k"))


def _path(*parts):
  return os.path.join(DEPLOY, *parts)


def _load_all(*parts):
  with open(_path(*parts), encoding="utf-8") as handle:
    return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _by_kind(docs, kind, name=None):
  found = [d for d in docs if d["kind"] == kind
           and (name is None or d["metadata"]["name"] == name)]
  assert found, f"no {kind} {name or ''}"
  return found[0] if name is not None or len(found) == 1 else found


# --- every manifest parses -------------------------------------------------

def test_every_yaml_and_json_file_parses():
  yamls = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"),
                           recursive=True))
  assert len(yamls) >= 9
  for path in yamls:
    with open(path, encoding="utf-8") as handle:
      docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    assert docs, path
    for doc in docs:
      assert isinstance(doc, dict), path
  for path in glob.glob(os.path.join(DEPLOY, "**", "*.json"), recursive=True):
    with open(path, encoding="utf-8") as handle:
      assert isinstance(json.load(handle), dict), path


def test_kubernetes_objects_have_kinds_names_and_api_versions():
  expected = {
      ("flink", "k8s", "flink-beam.yaml"): {
          "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"},
      ("flink", "k8s", "submit-job.yaml"): {"Job"},
      ("k8s", "trainer-multiworker.yaml"): {"Service", "Job"},
      ("k8s", "trainer-tfjob.yaml"): {"TFJob"},
      ("k8s", "trainer-ps-tfjob.yaml"): {"TFJob"},
      ("k8s", "retrain-cronjob.yaml"): {"CronJob", "PersistentVolumeClaim"},
  }
  api = {"ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1",
         "Deployment": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1",
         "TFJob": "kubeflow.org/v1"}
  for parts, kinds in expected.items():
    docs = _load_all(*parts)
    assert {d["kind"] for d in docs} == kinds, parts
    for doc in docs:
      assert doc["apiVersion"] == api[doc["kind"]], (parts, doc["kind"])
      assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?",
                          doc["metadata"]["name"]), doc["metadata"]["name"]


def _containers(pod_template):
  return pod_template["spec"]["containers"]


def test_claims_and_services_referenced_by_pods_exist():
  docs = _load_all("flink", "k8s", "flink-beam.yaml")
  claims = {d["metadata"]["name"] for d in docs
            if d["kind"] == "PersistentVolumeClaim"}
  services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
  for deployment in _by_kind(docs, "Deployment"):
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        labels.items()
    for volume in template["spec"].get("volumes", []):
      assert volume["persistentVolumeClaim"]["claimName"] in claims
    mounted = {m["name"] for c in _containers(template)
               for m in c.get("volumeMounts", [])}
    assert mounted <= {v["name"] for v in template["spec"].get("volumes", [])}
  for service in services.values():
    selector = service["spec"]["selector"].items()
    assert any(selector <= d["spec"]["template"]["metadata"]["labels"].items()
               for d in _by_kind(docs, "Deployment")), service
  submit = _load_all("flink", "k8s", "submit-job.yaml")[0]
  for volume in submit["spec"]["template"]["spec"]["volumes"]:
    assert volume["persistentVolumeClaim"]["claimName"] in claims


# --- Flink -----------------------------------------------------------------

def _flags(args):
  """['--a=1', '--b', '2'] -> {'a': '1', 'b': '2'}."""
  out, i = {}, 0
  while i < len(args):
    arg = args[i]
    if arg.startswith("--") and "=" in arg:
      key, value = arg[2:].split("=", 1)
      out[key] = value
    elif arg.startswith("--"):
      out[arg[2:]] = args[i + 1]
      i += 1
    i += 1
  return out


def test_flink_compose_wires_job_server_worker_pool_and_cluster():
  compose = _load_all("flink", "docker-compose.yaml")[0]
  services = compose["services"]
  assert set(services) == {"jobmanager", "taskmanager", "job-server",
                           "python-worker-pool"}
  flink_image = services["jobmanager"]["image"]
  assert services["taskmanager"]["image"] == flink_image
  flink_minor = re.match(r"flink:(\d+\.\d+)", flink_image).group(1)
  server = services["job-server"]
  # The job server's Flink version must be the cluster's.
  assert server["image"] == f"apache/beam_flink{flink_minor}_job_server:2.77.0"
  server_flags = _flags(server["command"])
  assert server_flags["flink-master"] == "jobmanager:8081"
  assert "8081:8081" in services["jobmanager"]["ports"]
  assert {f"{server_flags['job-port']}:{server_flags['job-port']}",
          f"{server_flags['artifact-port']}:{server_flags['artifact-port']}"
          } <= set(server["ports"])
  pool = services["python-worker-pool"]
  assert pool["command"] == ["--worker_pool"]
  assert pool["network_mode"] == "service:taskmanager"
  # The job server stages artifacts where the task managers read them.
  artifacts = server_flags["artifacts-dir"]
  for name in ("job-server", "taskmanager", "python-worker-pool"):
    assert any(v.endswith(":" + artifacts) for v in services[name]["volumes"])
  assert "FLINK_PROPERTIES" in services["jobmanager"]["environment"]


def test_flink_k8s_taskmanager_has_worker_pool_sidecar():
  docs = _load_all("flink", "k8s", "flink-beam.yaml")
  taskmanager = _by_kind(docs, "Deployment", "flink-taskmanager")
  containers = {c["name"]: c for c in _containers(
      taskmanager["spec"]["template"])}
  pool = containers["python-worker-pool"]
  assert pool["args"] == ["--worker_pool"]
  assert [p["containerPort"] for p in pool["ports"]] == [50000]
  job_server = _by_kind(docs, "Deployment", "beam-job-server")
  flags = _flags(_containers(job_server["spec"]["template"])[0]["args"])
  host, port = flags["flink-master"].split(":")
  jobmanager = _by_kind(docs, "Service", host)
  assert int(port) in [p["port"] for p in jobmanager["spec"]["ports"]]
  job_service = _by_kind(docs, "Service", "beam-job-server")
  assert {int(flags["job-port"]), int(flags["artifact-port"])} <= {
      p["port"] for p in job_service["spec"]["ports"]}


def test_flink_submit_job_options_validate_and_match_the_cluster():
  from pipelines import runners
  from apache_beam.options import pipeline_options as beam_options
  job = _load_all("flink", "k8s", "submit-job.yaml")[0]
  container = _containers(job["spec"]["template"])[0]
  assert container["command"] == ["embeddings", "preprocess"]
  _, beam_args = options_lib.preprocess_parser().parse_known_args(
      container["args"])
  args = runners.expand_preset(beam_args)
  options = beam_options.PipelineOptions(args)
  portable = options.view_as(beam_options.PortableOptions)
  assert options.view_as(beam_options.StandardOptions).runner == "FlinkRunner"
  assert portable.environment_type == "EXTERNAL"
  # localhost:50000 from the task manager pod is its worker pool sidecar.
  assert portable.environment_config == "localhost:50000"
  cluster = _load_all("flink", "k8s", "flink-beam.yaml")
  service_names = {d["metadata"]["name"] for d in cluster
                   if d["kind"] == "Service"}
  assert portable.job_endpoint.split(":")[0] in service_names


# --- README commands ---------------------------------------------------------

def _readme_commands(prefix):
  with open(_path("README.md"), encoding="utf-8") as handle:
    text = handle.read()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
    for command in block.replace("\\\n", " ").splitlines():
      command = command.strip()
      if command.startswith(prefix):
        commands.append(shlex.split(command))
  return commands


def test_readme_beam_commands_validate_offline():
  from pipelines import inputs
  from pipelines import runners
  from transforms import spec as spec_lib
  from apache_beam.options import pipeline_options as beam_options
  commands = (_readme_commands("embeddings preprocess")
              + _readme_commands("python -m deploy.dataflow_job"))
  runners_seen = set()
  for command in commands:
    argv = command[2:] if command[0] == "embeddings" else command[3:]
    known, beam_args = options_lib.preprocess_parser().parse_known_args(argv)
    assert known.spec.startswith("configs/") and os.path.exists(
        os.path.join(REPO, known.spec)), command
    args = runners.expand_preset(
        [a for a in beam_args if not a.startswith("--dataflow_job_file")
         and not a.startswith("--tft_temp_dir")])
    options = beam_options.PipelineOptions(args)
    runner = options.view_as(beam_options.StandardOptions).runner
    runners_seen.add(runner)
    if runner == "DataflowRunner":
      assert known.output.startswith("gs://")
      env = spec_lib.parse_env_flags(known.env)
      # Paths the workers read must be on Cloud Storage; other values (a
      # BigQuery dataset) are not paths.
      assert all(v.startswith("gs://") for _, v in env if "/" in v), command
      spec = loader.load_spec(os.path.join(REPO, known.spec), dict(env))
      inputs.check_bigquery_options(spec, options)
  assert runners_seen == {"DataflowRunner", "FlinkRunner"}


# --- trainer manifests and TF_CONFIG ------------------------------------------

def _train_flags(args):
  from trainer import task
  parsed, unknown = task.flag_parser().parse_known_args(args)
  assert not unknown, unknown
  return parsed


def _check_pod(tf_config, strategy, monkeypatch):
  """Runs one pod's TF_CONFIG through the trainer and TensorFlow."""
  import tensorflow as tf
  from trainer import distribute
  info = distribute.task_info(tf_config)
  cluster = tf_config["cluster"]
  assert info.task_type == tf_config["task"]["type"]
  assert info.task_id == tf_config["task"]["index"]
  assert info.num_workers == len(cluster.get("chief", [])) + len(
      cluster.get("worker", []))
  assert info.num_ps == len(cluster.get("ps", []))
  # The strategy the manifest names is the one `auto` infers from the pod.
  assert distribute.resolve_strategy_name(strategy, info) == strategy
  assert distribute.resolve_strategy_name("auto", info, num_gpus=0) == strategy
  serves = distribute.is_server_task(strategy, info)
  assert serves == (strategy == "parameter_server"
                    and info.task_type in ("worker", "ps"))
  monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  assert resolver.task_type == tf_config["task"]["type"]
  assert resolver.task_id == tf_config["task"]["index"]
  assert resolver.cluster_spec().as_dict() == cluster
  return serves


def _tfjob_tf_configs(tfjob, namespace="default"):
  """TF_CONFIG per pod as the Kubeflow training operator builds it."""
  name = tfjob["metadata"]["name"]
  cluster, pods = {}, []
  for replica_type, replica in tfjob["spec"]["tfReplicaSpecs"].items():
    container = [c for c in _containers(replica["template"])
                 if c["name"] == "tensorflow"][0]
    port = [p["containerPort"] for p in container["ports"]
            if p["name"] == "tfjob-port"][0]
    task_type = replica_type.lower()
    cluster[task_type] = [
        f"{name}-{task_type}-{i}.{namespace}.svc:{port}"
        for i in range(replica["replicas"])]
    pods.extend((task_type, i, container) for i in range(replica["replicas"]))
  return [({"cluster": cluster, "task": {"type": t, "index": i},
            "environment": "cloud"}, container) for t, i, container in pods]


@pytest.mark.parametrize("manifest,strategy,counts", [
    ("trainer-tfjob.yaml", "multi_worker", {"worker": 2}),
    ("trainer-ps-tfjob.yaml", "parameter_server",
     {"chief": 1, "worker": 4, "ps": 2}),
])
def test_tfjob_tf_config_matches_trainer(manifest, strategy, counts,
                                         monkeypatch):
  tfjob = _load_all("k8s", manifest)[0]
  pods = _tfjob_tf_configs(tfjob)
  assert {t: len(h) for t, h in pods[0][0]["cluster"].items()} == counts
  servers = 0
  for tf_config, container in pods:
    assert container["command"] == ["embeddings", "train"]
    assert _train_flags(container["args"]).strategy == strategy
    servers += _check_pod(tf_config, strategy, monkeypatch)
  assert servers == (counts.get("worker", 0) + counts.get("ps", 0)
                     if strategy == "parameter_server" else 0)


@pytest.mark.parametrize("manifest,strategy,counts", [
    ("custom_job.yaml", "multi_worker", {"chief": 1, "worker": 3}),
    ("custom_job_ps.yaml", "parameter_server",
     {"chief": 1, "worker": 4, "ps": 2}),
])
def test_vertex_tf_config_matches_trainer(manifest, strategy, counts,
                                          monkeypatch):
  spec = _load_all("vertex", manifest)[0]
  pools = spec["workerPoolSpecs"]
  # Vertex names pool 0 chief, 1 worker, 2 ps, 3 evaluator in TF_CONFIG.
  types = ["chief", "worker", "ps", "evaluator"][:len(pools)]
  cluster = {t: [f"workerpool{p}-{i}:2222"
                 for i in range(pools[p]["replicaCount"])]
             for p, t in enumerate(types)}
  assert {t: len(h) for t, h in cluster.items()} == counts
  images = {pool["containerSpec"]["imageUri"] for pool in pools}
  assert len(images) == 1
  for pool_index, task_type in enumerate(types):
    container = pools[pool_index]["containerSpec"]
    assert container["command"] == ["embeddings", "train"]
    assert _train_flags(container["args"]).strategy == strategy
    for index in range(pools[pool_index]["replicaCount"]):
      _check_pod({"cluster": cluster,
                  "task": {"type": task_type, "index": index},
                  "environment": "cloud", "job": {}}, strategy, monkeypatch)


def test_indexed_job_tf_config_from_deploy_tf_config(monkeypatch):
  from deploy import tf_config as tf_config_lib
  docs = _load_all("k8s", "trainer-multiworker.yaml")
  service = _by_kind(docs, "Service")
  job = _by_kind(docs, "Job")
  spec = job["spec"]
  template = spec["template"]
  assert service["spec"]["clusterIP"] == "None"
  assert template["spec"]["subdomain"] == service["metadata"]["name"]
  assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
  assert spec["completionMode"] == "Indexed"
  container = _containers(template)[0]
  env = {e["name"]: e["value"] for e in container["env"]}
  cluster = json.loads(env["TF_CLUSTER"])
  count = spec["completions"]
  assert spec["parallelism"] == count
  port = container["ports"][0]["containerPort"]
  assert port == service["spec"]["ports"][0]["port"]
  # Pod i of an Indexed Job is <job>-i, reachable as <job>-i.<subdomain>.
  assert cluster == {"worker": tf_config_lib.indexed_hosts(
      job["metadata"]["name"], service["metadata"]["name"], count, port)}
  command = container["command"]
  assert command[:3] == ["python", "-m", "deploy.tf_config"]
  wrapper_args = command[3:command.index("--")]
  train_command = command[command.index("--") + 1:] + container["args"]
  assert train_command[:2] == ["embeddings", "train"]
  strategy = _train_flags(train_command[2:]).strategy
  assert strategy == "multi_worker"
  for index in range(count):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
    monkeypatch.setenv("TF_CLUSTER", env["TF_CLUSTER"])
    config = tf_config_lib.tf_config(
        cluster, _flags(wrapper_args)["task_type"],
        tf_config_lib.pod_index(os.environ, "ignored"))
    assert config["task"] == {"type": "worker", "index": index}
    _check_pod(config, strategy, monkeypatch)


def test_tf_config_wrapper_sets_env_and_execs_the_command(tmp_path):
  cluster = json.dumps({"worker": ["t-0.t:2222", "t-1.t:2222"]})
  env = dict(os.environ, JOB_COMPLETION_INDEX="1", TF_CLUSTER=cluster)
  env.pop("TF_CONFIG", None)
  out = subprocess.run(
      [sys.executable, "-m", "deploy.tf_config", "--task_type", "worker",
       "--", sys.executable, "-c",
       "import os; print(os.environ['TF_CONFIG'])"],
      cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert json.loads(out.stdout) == {
      "cluster": {"worker": ["t-0.t:2222", "t-1.t:2222"]},
      "task": {"type": "worker", "index": 1}}


def test_tf_config_pod_index_and_errors():
  from deploy import tf_config as tf_config_lib
  assert tf_config_lib.pod_index({"JOB_COMPLETION_INDEX": "3"}, "x") == 3
  assert tf_config_lib.pod_index({}, "trainer-ps-2.trainer.ns.svc") == 2
  with pytest.raises(tf_config_lib.TFConfigError, match="no pod index"):
    tf_config_lib.pod_index({}, "trainer")
  with pytest.raises(tf_config_lib.TFConfigError, match="outside 0...1"):
    tf_config_lib.tf_config({"worker": ["a:1", "b:1"]}, "worker", 2)
  with pytest.raises(tf_config_lib.TFConfigError, match="not in the cluster"):
    tf_config_lib.tf_config({"worker": ["a:1"]}, "ps", 0)
  with pytest.raises(tf_config_lib.TFConfigError, match="not host:port"):
    tf_config_lib.cluster_spec({"worker": ["a"]})
  with pytest.raises(tf_config_lib.TFConfigError, match="at most one chief"):
    tf_config_lib.cluster_spec({"chief": ["a:1", "b:1"]})
  with pytest.raises(tf_config_lib.TFConfigError, match="unknown task type"):
    tf_config_lib.cluster_spec({"master": ["a:1"]})
  assert tf_config_lib.indexed_hosts("j", "s", 2, 2222, "ns") == [
      "j-0.s.ns.svc:2222", "j-1.s.ns.svc:2222"]


# --- schedules -----------------------------------------------------------------

def _cronjob_command():
  cron = _by_kind(_load_all("k8s", "retrain-cronjob.yaml"), "CronJob")
  spec = cron["spec"]
  assert spec["concurrencyPolicy"] == "Forbid"
  assert len(spec["schedule"].split()) == 5
  container = _containers(spec["jobTemplate"]["spec"]["template"])[0]
  return container["command"] + container["args"]


def _airflow_command():
  with open(_path("airflow", "embeddings_retrain_dag.py"),
            encoding="utf-8") as handle:
    tree = ast.parse(handle.read())
  strings = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      try:
        strings[node.targets[0].id] = ast.literal_eval(node.value)
      except ValueError:
        pass
  operators = [node for node in ast.walk(tree)
               if isinstance(node, ast.Call)
               and getattr(node.func, "id", None) == "BashOperator"]
  assert len(operators) == 1
  keywords = {k.arg: k.value for k in operators[0].keywords}
  assert ast.literal_eval(keywords["task_id"]) == "retrain"
  command = keywords["bash_command"]
  command = (strings[command.id] if isinstance(command, ast.Name)
             else ast.literal_eval(command))
  dags = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
          and getattr(node.func, "id", None) == "DAG"]
  assert len(dags) == 1
  dag = {k.arg: k.value for k in dags[0].keywords}
  assert ast.literal_eval(dag["dag_id"]) == "embeddings_retrain"
  assert ast.literal_eval(dag["max_active_runs"]) == 1
  assert len(ast.literal_eval(dag["schedule"]).split()) == 5
  return shlex.split(command)


def _systemd_command():
  parser = configparser.ConfigParser(strict=False, interpolation=None)
  parser.optionxform = str
  parser.read(_path("systemd", "embeddings-retrain.service"))
  assert parser["Service"]["Type"] == "oneshot"
  timer = configparser.ConfigParser(strict=False, interpolation=None)
  timer.optionxform = str
  timer.read(_path("systemd", "embeddings-retrain.timer"))
  assert timer["Timer"]["OnCalendar"]
  assert timer["Install"]["WantedBy"] == "timers.target"
  command = shlex.split(parser["Service"]["ExecStart"])
  command[0] = os.path.basename(command[0])
  return command


def _crontab_command():
  with open(_path("systemd", "crontab.example"), encoding="utf-8") as handle:
    lines = [l for l in handle if l.strip() and not l.startswith("#")]
  assert len(lines) == 1
  fields = lines[0].split(None, 5)
  words = shlex.split(fields[5].split(">>")[0])
  start = [i for i, w in enumerate(words) if w.endswith("embeddings")][-1]
  words[start] = "embeddings"
  return words[start:]


def test_every_schedule_runs_the_same_retrain_command():
  commands = {"cronjob": _cronjob_command(), "airflow": _airflow_command(),
              "systemd": _systemd_command(), "cron": _crontab_command()}
  # Airflow passes the run's date as the window; the others take the newest.
  airflow = commands["airflow"]
  assert "--window={{ds}}" in airflow
  commands["airflow"] = [a for a in airflow if not a.startswith("--window")]
  reference = commands["cronjob"]
  assert reference[:2] == ["embeddings", "retrain"]
  for name, command in commands.items():
    assert command == reference, name
  from workflows import retrain
  from workflows import windows
  options = retrain.options_from_args(reference[2:] + ["--window",
                                                       "2024-01-07"])
  assert options.data_pattern.count("{date}") == 1
  assert windows.window_path(options.data_pattern, options.window) == (
      "/data/ratings/2024-01-07")


# --- Dockerfile and Flex Template ----------------------------------------------

def test_dockerfile_uses_the_pinned_sdk_and_ships_every_package():
  import apache_beam
  from pipelines import runners
  with open(_path("dataflow", "Dockerfile"), encoding="utf-8") as handle:
    dockerfile = handle.read()
  froms = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
  assert runners.DEFAULT_SDK_IMAGE in froms
  assert runners.DEFAULT_SDK_IMAGE.endswith(":" + apache_beam.__version__)
  assert f"python{sys.version_info.major}.{sys.version_info.minor}_sdk" in (
      runners.DEFAULT_SDK_IMAGE)
  copied = set(re.findall(r"^COPY (\S+) \S+$", dockerfile, re.MULTILINE))
  with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as handle:
    setup_source = handle.read()
  include = re.search(r"include=\[(.*?)\]", setup_source, re.DOTALL).group(1)
  packages = {p for p in re.findall(r'"([a-z_]+)"', include)}
  assert packages <= copied, packages - copied
  assert "configs" in copied
  flex_main = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)",
                        dockerfile).group(1)
  assert flex_main == "/opt/embeddings/deploy/dataflow/flex_main.py"
  assert os.path.exists(_path("dataflow", "flex_main.py"))


def test_flex_template_parameters_are_preprocess_flags():
  with open(_path("dataflow", "metadata.json"), encoding="utf-8") as handle:
    metadata = json.load(handle)
  assert metadata["sdkInfo"]["language"] == "PYTHON"
  known = {a.dest for a in options_lib.preprocess_parser()._actions}
  for parameter in metadata["parameters"]:
    for regex in parameter.get("regexes", []):
      re.compile(regex)
    if parameter["name"] not in ("job", "sdk_container_image"):
      assert parameter["name"] in known, parameter["name"]


def test_flex_main_dispatches_to_the_beam_job(tmp_path, capsys):
  sys.path.insert(0, _path("dataflow"))
  try:
    import flex_main
  finally:
    sys.path.pop(0)
  missing = str(tmp_path / "missing.yaml")
  # The preprocess job's own error line proves the launch reached it.
  status = flex_main.main(["--spec", missing, "--output", str(tmp_path / "out")])
  assert status == 1
  assert re.search(r"embeddings preprocess: error: spec file .*missing\.yaml.* "
                   r"does not exist", capsys.readouterr().err)
  with pytest.raises(SystemExit):
    flex_main.main(["--job", "train"])


# --- the Dataflow job, built offline -------------------------------------------

@pytest.fixture(scope="module")
def dataflow_job(tmp_path_factory):
  if not os.path.exists(os.path.join(ML100K_DIR, "u1.base")):
    pytest.skip(f"MovieLens 100K not found in {ML100K_DIR}")
  from deploy import dataflow_job as dataflow_job_lib
  from pipelines import preprocess
  job_file = str(tmp_path_factory.mktemp("dataflow") / "job.json")
  # The typed entry point; tests/test_bigquery_input.py builds its job from
  # a command line.
  built = dataflow_job_lib.build_job(preprocess.PreprocessOptions(
      spec=os.path.join(REPO, "configs", "movielens100k.yaml"),
      output="gs://my-bucket/ml100k/preprocessed",
      env=(("ML100K_DIR", ML100K_DIR),)), [
          "--preset", "dataflow", "--project", "my-project",
          "--region", "us-central1", "--temp_location", "gs://my-bucket/tmp",
          "--no_auth", "--dataflow_job_file", job_file])
  return built, job_file


def test_dataflow_job_graph_has_every_stage(dataflow_job):
  built, _ = dataflow_job
  steps = built.steps
  expected = ["ReadMainTrain", "ReadMainEval", "ReadSideUsers",
              "ReadSideItems", "JoinUsers", "JoinItems", "SplitAndConvert",
              "Analyze", "WriteTransformFn", "TransformTrain",
              "TransformEval", "WriteTrain", "WriteEval",
              "WriteDeadLetters"]
  assert set(expected) <= set(steps), set(expected) - set(steps)
  position = {step: i for i, step in enumerate(steps)}
  for before, after in [("ReadSideUsers", "JoinUsers"),
                        ("ReadSideItems", "JoinItems"),
                        ("JoinItems", "SplitAndConvert"),
                        ("SplitAndConvert", "Analyze"),
                        ("Analyze", "TransformTrain"),
                        ("Analyze", "TransformEval"),
                        ("TransformTrain", "WriteTrain"),
                        ("TransformEval", "WriteEval")]:
    assert position[before] < position[after], (before, after)
  transforms = built.pipeline["components"]["transforms"]
  names = {t["uniqueName"] for t in transforms.values()}
  # tf.Transform's analyzers and the file sinks are real subgraphs.
  assert any(n.startswith("Analyze/") for n in names)
  assert any(n.startswith("WriteTrain/") for n in names)
  assert any(n.startswith("WriteDeadLetters/") for n in names)


def test_dataflow_job_file_describes_a_runner_v2_job(dataflow_job):
  from apache_beam.runners.internal import names
  built, job_file = dataflow_job
  with open(job_file, encoding="utf-8") as handle:
    job = json.load(handle)
  assert job == built.job
  assert job["type"] == "JOB_TYPE_BATCH"
  environment = job["environment"]
  assert "use_runner_v2" in environment["experiments"]
  assert environment["tempStoragePrefix"].startswith(
      "storage.googleapis.com/my-bucket/tmp/")
  options = environment["sdkPipelineOptions"]["options"]
  assert options["project"] == "my-project"
  assert options["region"] == "us-central1"
  assert options["setup_file"].endswith("setup.py")
  image = environment["workerPools"][0]["workerHarnessContainerImage"]
  assert image.endswith("beam_python3.11_sdk:2.77.0")
  with open(job_file + ".pipeline.json", encoding="utf-8") as handle:
    pipeline = json.load(handle)
  environments = list(pipeline["components"]["environments"].values())
  assert len(environments) == 1
  import base64
  from apache_beam.portability.api import beam_runner_api_pb2
  staged = set()
  for dependency in environments[0]["dependencies"]:
    role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
        base64.b64decode(dependency["rolePayload"]))
    staged.add(role.staged_name)
  # setup.py's sdist goes to the workers as the workflow tarball.
  assert "workflow.tar.gz" in staged
  assert environment["sdkPipelineOptions"]["options"]["pipelineUrl"] == (
      f"{options['staging_location']}/{names.STAGED_PIPELINE_FILENAME}")


def test_dataflow_job_needs_dataflow_options(tmp_path):
  from deploy import dataflow_job as dataflow_job_lib
  from pipelines import runners
  with pytest.raises(runners.PresetError, match="--temp_location"):
    dataflow_job_lib.build_preprocess_job([
        "--spec", "configs/movielens100k.yaml", "--output", str(tmp_path),
        "--preset", "dataflow", "--project", "my-project",
        "--region", "us-central1"])
  with pytest.raises(runners.PresetError, match="DataflowRunner"):
    dataflow_job_lib.build_preprocess_job([
        "--spec", "configs/movielens100k.yaml", "--output", str(tmp_path),
        "--preset", "direct"])


# --- the portable path: multi-process DirectRunner ----------------------------

def _records(directory, split):
  """A split's examples as sorted (feature, values) tuples.

  Compared parsed: tf.Example's feature map may serialize in either order.
  """
  import tensorflow as tf
  records = []
  for path in sorted(glob.glob(os.path.join(directory, split, "*.gz"))):
    for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
      example = tf.train.Example.FromString(record.numpy())
      row = []
      for name in sorted(example.features.feature):
        feature = example.features.feature[name]
        row.append((name, tuple(getattr(feature,
                                        feature.WhichOneof("kind")).value)))
      records.append(tuple(row))
  return sorted(records)


def beam_options_of(args):
  """The DirectRunner options a run report's beam_options set."""
  from apache_beam.options import pipeline_options as beam_options
  options = beam_options.PipelineOptions(args)
  direct = options.view_as(beam_options.DirectOptions)
  return {"runner": options.view_as(beam_options.StandardOptions).runner,
          "direct_running_mode": direct.direct_running_mode,
          "direct_num_workers": direct.direct_num_workers}


def test_multiprocess_direct_runner_matches_in_process(
    synthetic_data, synthetic_preprocessed, tmp_path):
  from pipelines import preprocess
  in_process = synthetic_preprocessed
  multi = str(tmp_path / "multi")
  # The preset is expanded by the job itself, as on the command line.
  report = preprocess.run([
      "--spec", os.path.join(REPO, "configs", "synthetic.yaml"),
      "--env", f"DATA_DIR={synthetic_data}", "--output", multi,
      "--preset", "direct_multiprocess", "--direct_num_workers", "2"])
  with open(os.path.join(multi, "run_report.json")) as handle:
    assert json.load(handle) == report
  options = beam_options_of(report["beam_options"])
  assert options == {"runner": "DirectRunner",
                     "direct_running_mode": "multi_processing",
                     "direct_num_workers": 2}
  for name in ("user", "movie", "gender", "occupation", "genres"):
    with open(os.path.join(in_process, "transform_fn", "assets", name),
              "rb") as a, open(os.path.join(multi, "transform_fn", "assets",
                                            name), "rb") as b:
      assert a.read() == b.read(), name
  with open(os.path.join(in_process, "feature_info.json")) as a, open(
      os.path.join(multi, "feature_info.json")) as b:
    assert json.load(a) == json.load(b)
  reports = []
  for directory in (in_process, multi):
    with open(os.path.join(directory, "run_report.json")) as handle:
      reports.append(json.load(handle))
  for key in ("rows_read", "rows_written", "rows_rejected",
              "vocabulary_sizes"):
    assert reports[0][key] == reports[1][key], key
  read = reports[1]["rows_read"]["ratings"]
  assert read > 0
  assert sum(reports[1]["rows_written"].values()) + sum(
      reports[1]["rows_rejected"]["ratings"].values()) == read
  for split in ("train", "eval"):
    records = _records(multi, split)
    assert records and records == _records(in_process, split), split
