"""The distribution strategy of a run, from the config and TF_CONFIG.

`auto` picks: ParameterServerStrategy when TF_CONFIG's cluster has `ps`
tasks, MultiWorkerMirroredStrategy when it has several workers, a
MirroredStrategy over local GPUs when there are several, else the default
(one-device) strategy. Under parameter servers every variable is split by a
MinSizePartitioner, so an embedding table larger than one machine's memory
is spread over the ps tasks (the tables are the only variables big enough
to be split).

Parameter-server input goes through the tf.data service. Keras builds one
dataset per worker from a function traced once on the coordinator, and
every worker is handed the same InputContext (input_pipeline_id 0 of 1),
so without it each worker would read the whole split, and with a fixed
seed the very same batches. Instead the coordinator runs a tf.data
dispatcher (on the chief's host, port `data_service_port`), each worker
task runs a tf.data worker beside its tf.distribute Server, and each pass
over the training split is one shared `distributed_epoch` job: the
dispatcher hands the split's shards out one at a time and the workers'
iterators draw batches from the same job, so between them they read every
example of a pass exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Optional

import tensorflow as tf

from core import layout
from trainer import config as config_lib

DEFAULT = "default"
MIRRORED = "mirrored"
MULTI_WORKER = "multi_worker"
PARAMETER_SERVER = "parameter_server"


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """This process's place in the cluster (from TF_CONFIG).

  Attributes:
    task_type: "chief", "worker", "ps", "evaluator", or None alone.
    task_id: the index within task_type.
    num_workers: chief + worker tasks.
    num_ps: parameter server tasks.
  """
  task_type: Optional[str] = None
  task_id: int = 0
  num_workers: int = 1
  num_ps: int = 0


def _resolver(given=None) -> tf.distribute.cluster_resolver.ClusterResolver:
  """`given` (an in-process test cluster's), else TF_CONFIG's resolver."""
  return given or tf.distribute.cluster_resolver.TFConfigClusterResolver()


def task_info(tf_config: Optional[Mapping[str, Any]] = None) -> TaskInfo:
  """This process's place in the cluster, from TF_CONFIG (or the given dict).

  Args:
    tf_config: the parsed TF_CONFIG; None reads the environment through
      TensorFlow's TFConfigClusterResolver.

  Returns:
    The TaskInfo (one worker, no ps when TF_CONFIG is unset).

  Raises:
    config.ConfigError: TF_CONFIG is not valid JSON.
  """
  if tf_config is None:
    resolver = _resolver()
    try:
      cluster = resolver.cluster_spec()
      task_type, task_id = resolver.task_type, resolver.task_id
    except json.JSONDecodeError as error:
      raise config_lib.ConfigError(
          f"TF_CONFIG is not valid JSON: {error}") from None
  else:
    cluster = tf.train.ClusterSpec(tf_config.get("cluster") or {})
    task = tf_config.get("task") or {}
    task_type, task_id = task.get("type"), task.get("index")
  jobs = cluster.as_dict()
  workers = sum(len(jobs.get(job, ())) for job in ("chief", "worker"))
  return TaskInfo(task_type=task_type, task_id=int(task_id or 0),
                  num_workers=max(workers, 1), num_ps=len(jobs.get("ps", ())))


def resolve_strategy_name(name: str, info: Optional[TaskInfo] = None,
                          num_gpus: Optional[int] = None) -> str:
  """Turns `auto` into a concrete strategy name.

  Args:
    name: one of config.STRATEGIES.
    info: the cluster (default: from TF_CONFIG).
    num_gpus: local GPUs (default: counted).

  Returns:
    default, mirrored, multi_worker or parameter_server.
  """
  if name != "auto":
    return name
  info = info or task_info()
  if info.num_ps > 0:
    return PARAMETER_SERVER
  if info.num_workers > 1:
    return MULTI_WORKER
  if num_gpus is None:
    num_gpus = len(tf.config.list_physical_devices("GPU"))
  return MIRRORED if num_gpus > 1 else DEFAULT


def is_server_task(name: str, info: Optional[TaskInfo] = None) -> bool:
  """True for a parameter-server cluster's worker and ps tasks.

  Under ParameterServerStrategy only the coordinator (chief) runs the
  training program; workers and parameter servers run a tf.distribute
  Server that the coordinator drives.
  """
  info = info or task_info()
  return (resolve_strategy_name(name, info) == PARAMETER_SERVER
          and info.task_type in ("worker", "ps"))


def run_server(cluster_resolver=None,
               data_service_port: Optional[int] = None) -> None:
  """Runs this worker/ps task's server until the process is killed.

  A worker task also runs a tf.data service worker for the coordinator's
  dispatcher (see the module docstring).

  Args:
    cluster_resolver: default: TFConfigClusterResolver.
    data_service_port: the dispatcher's port on the chief's host; None
      runs no tf.data worker.
  """
  resolver = _resolver(cluster_resolver)
  if resolver.task_type == "ps":
    # A ps has no GPU work; keep it from grabbing devices.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=resolver.task_type,
      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
      start=True)
  data_worker = None  # pylint: disable=unused-variable
  if resolver.task_type == "worker" and data_service_port:
    # Blocks until the dispatcher answers (the coordinator starts it after
    # connecting to this already-running server), then serves beside it;
    # the local reference keeps it alive while server.join() blocks.
    own = resolver.cluster_spec().task_address("worker", resolver.task_id)
    data_worker = start_data_worker(
        dispatcher_address(resolver.cluster_spec(), data_service_port),
        _host(own))
  server.join()


def resolve_cluster_spec(cluster_resolver=None) -> tf.train.ClusterSpec:
  """The cluster of a multi-process run.

  Args:
    cluster_resolver: default: TFConfigClusterResolver (TF_CONFIG).

  Returns:
    Its ClusterSpec.
  """
  return _resolver(cluster_resolver).cluster_spec()


def _host(address: str) -> str:
  return address.rpartition(":")[0]


def dispatcher_address(cluster_spec: tf.train.ClusterSpec, port: int) -> str:
  """Where the run's tf.data dispatcher listens: the chief's host, `port`.

  Args:
    cluster_spec: the parameter-server cluster.
    port: the data service port (config.data_service_port).

  Returns:
    "host:port".

  Raises:
    config.ConfigError: the cluster has no chief (the coordinator).
  """
  if "chief" not in cluster_spec.jobs:
    raise config_lib.ConfigError(
        "strategy parameter_server: the cluster (TF_CONFIG) has no 'chief' "
        "task to run the coordinator and the tf.data dispatcher")
  return f"{_host(cluster_spec.task_address('chief', 0))}:{port}"


# A dispatcher holds its port until the process exits; a second training run
# in the same process (tuning, tests) reuses it under new job names.
_DISPATCHERS: Dict[int, Any] = {}


def start_dispatcher(cluster_spec: tf.train.ClusterSpec, port: int) -> str:
  """Starts the tf.data dispatcher in this (the coordinator's) process.

  Args:
    cluster_spec: the parameter-server cluster.
    port: the data service port.

  Returns:
    The dispatcher's "host:port", for the workers' datasets.

  Raises:
    config.ConfigError: the port is taken.
  """
  address = dispatcher_address(cluster_spec, port)
  if port not in _DISPATCHERS:
    try:
      _DISPATCHERS[port] = tf.data.experimental.service.DispatchServer(
          tf.data.experimental.service.DispatcherConfig(port=port))
    except RuntimeError as error:
      raise config_lib.ConfigError(
          f"data_service_port: cannot start the tf.data dispatcher on port "
          f"{port} ({error}); choose a free port with --data_service_port, "
          f"the same for every task of the cluster") from None
  return address


def start_data_worker(dispatcher: str, host: str):
  """Starts a tf.data service worker that registers with `dispatcher`.

  Blocks (retrying) until the dispatcher is reachable. The worker serves on
  a free port of `host`, which the dispatcher passes on to the consumers.

  Args:
    dispatcher: "host:port" of the dispatcher.
    host: this machine's address as the cluster knows it.

  Returns:
    The tf.data.experimental.service.WorkerServer; it stops when collected.
  """
  return tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(
          dispatcher_address=dispatcher, worker_address=f"{host}:%port%"))


def distributed_epoch(dataset: tf.data.Dataset, dispatcher: str,
                      job_name: str) -> tf.data.Dataset:
  """One pass of `dataset`, processed by the tf.data service and shared.

  Every iterator created with the same job_name (one per worker) draws from
  the same job, whose `distributed_epoch` (dynamic sharding) hands each of
  the dataset's source shards to one tf.data worker: between them the
  iterators receive every element once. Iterating again (a repeat after
  this) starts a new job, i.e. a new pass.

  Args:
    dataset: a finite dataset starting from a list of files.
    dispatcher: "host:port" of the dispatcher.
    job_name: shared by the iterators that split this pass.

  Returns:
    The distributed dataset.
  """
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
      service=f"grpc://{dispatcher}", job_name=job_name))


def build_strategy(config: config_lib.TrainerConfig,
                   cluster_resolver=None) -> tf.distribute.Strategy:
  """Creates the run's strategy.

  Args:
    config: uses strategy, min_shard_bytes, max_shards.
    cluster_resolver: for multi_worker / parameter_server, a resolver to use
      instead of TF_CONFIG (tests build in-process clusters this way).

  Returns:
    The strategy; build the model and optimizer inside its scope().
  """
  info = task_info()
  name = resolve_strategy_name(config.strategy, info)
  if name == DEFAULT:
    return tf.distribute.get_strategy()
  if name == MIRRORED:
    return tf.distribute.MirroredStrategy()
  if name == MULTI_WORKER:
    if cluster_resolver is not None:
      return tf.distribute.MultiWorkerMirroredStrategy(
          cluster_resolver=cluster_resolver)
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = _resolver(cluster_resolver)
  num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
  if not num_ps:
    raise config_lib.ConfigError(
        "strategy parameter_server: the cluster (TF_CONFIG) has no 'ps' tasks")
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=config.min_shard_bytes,
      max_shards=config.max_shards or num_ps)
  return tf.distribute.experimental.ParameterServerStrategy(
      resolver, variable_partitioner=partitioner)


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` is a ParameterServerStrategy (either API)."""
  return isinstance(strategy,
                    (tf.distribute.ParameterServerStrategy,
                     tf.distribute.experimental.ParameterServerStrategy))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's outputs.

  Under MultiWorkerMirroredStrategy that is the chief, or worker 0 when the
  cluster has no chief; every other kind of strategy runs in one program.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
      resolver is None):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "chief" or (not has_chief and task_type == "worker"
                                  and task_id == 0)


def worker_layout(model_dir: str, strategy: tf.distribute.Strategy
                 ) -> layout.ModelLayout:
  """Where this process writes its report, logs and SavedModel.

  Multi-worker saving is collective (every worker must save), so non-chief
  workers save too, each into its own ModelLayout.worker folder, which also
  lets a test compare the workers' weights.

  Args:
    model_dir: the run's --model_dir.
    strategy: the run's strategy.

  Returns:
    model_dir's layout for the chief, else this worker's.
  """
  model = layout.ModelLayout(model_dir)
  if is_chief(strategy):
    return model
  resolver = strategy.cluster_resolver
  return model.worker(resolver.task_type, resolver.task_id)
