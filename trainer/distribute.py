"""The distribution strategy of a run, from the config and TF_CONFIG.

`auto` picks: ParameterServerStrategy when TF_CONFIG's cluster has `ps`
tasks, MultiWorkerMirroredStrategy when it has several workers, a
MirroredStrategy over local GPUs when there are several, else the default
(one-device) strategy. Under parameter servers every variable is split by a
MinSizePartitioner, so an embedding table larger than one machine's memory
is spread over the ps tasks (the tables are the only variables big enough
to be split).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import tensorflow as tf

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


def task_info(tf_config: Optional[Mapping[str, Any]] = None) -> TaskInfo:
  """Parses TF_CONFIG (or the given dict).

  Args:
    tf_config: the parsed TF_CONFIG; None reads the environment.

  Returns:
    The TaskInfo (one worker, no ps when TF_CONFIG is unset).

  Raises:
    config.ConfigError: TF_CONFIG is not valid JSON.
  """
  if tf_config is None:
    raw = os.environ.get("TF_CONFIG", "")
    try:
      tf_config = json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
      raise config_lib.ConfigError(f"TF_CONFIG is not valid JSON: {error}") \
          from None
  cluster = tf_config.get("cluster", {}) or {}
  task = tf_config.get("task", {}) or {}
  workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
  return TaskInfo(task_type=task.get("type"), task_id=int(task.get("index", 0)),
                  num_workers=max(workers, 1), num_ps=len(cluster.get("ps", [])))


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


def run_server(cluster_resolver=None) -> None:
  """Runs this worker/ps task's server until the process is killed.

  Args:
    cluster_resolver: default: TFConfigClusterResolver.
  """
  resolver = (cluster_resolver
              or tf.distribute.cluster_resolver.TFConfigClusterResolver())
  if resolver.task_type == "ps":
    # A ps has no GPU work; keep it from grabbing devices.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=resolver.task_type,
      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
      start=True)
  server.join()


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
  resolver = (cluster_resolver
              or tf.distribute.cluster_resolver.TFConfigClusterResolver())
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


def worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes: model_dir for the chief, else a subfolder.

  Multi-worker saving is collective (every worker must save), so non-chief
  workers save too, under model_dir/workers/<type>_<id>, which also lets a
  test compare the workers' weights.
  """
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, "workers",
                      f"{resolver.task_type}_{resolver.task_id}")
