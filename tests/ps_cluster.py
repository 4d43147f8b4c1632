"""An in-process parameter-server cluster for the distributed tests.

`start()` runs worker and ps tf.distribute Servers inside the calling
process (as tensorflow/python/distribute/multi_worker_test_base.py does)
plus the trainer's tf.data service: the dispatcher, which the coordinator
(this process, the chief) runs in a real cluster, and one tf.data worker
per worker task, which `embeddings train` runs beside each worker's Server.
A test then trains as the chief through trainer.task.train with the
returned resolver and data_service_port.

In-process servers can never be stopped: call this only in a subprocess
that exits when it is done. The test files run their cluster scripts with
this folder on PYTHONPATH.
"""

import dataclasses
import socket
from typing import Any, List

import tensorflow as tf

from trainer import distribute


def free_ports(count: int) -> List[int]:
  """Ports nothing listens on right now (bound once, then released)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for sock in sockets:
      sock.bind(("localhost", 0))
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


@dataclasses.dataclass
class LocalCluster:
  """A running in-process cluster.

  Attributes:
    resolver: the chief's (coordinator's) cluster resolver.
    data_service_port: the port the tf.data dispatcher listens on.
    dispatcher: its "host:port".
    data_workers: the tf.data workers (kept referenced: collected ones stop).
  """
  resolver: Any
  data_service_port: int
  dispatcher: str
  data_workers: List[Any]


def start(num_workers: int = 2, num_ps: int = 2) -> LocalCluster:
  """Starts the workers, parameter servers and tf.data service.

  Args:
    num_workers: worker tasks (each with a tf.data worker).
    num_ps: parameter server tasks.

  Returns:
    The LocalCluster.
  """
  ports = free_ports(num_workers + num_ps + 2)
  cluster = tf.train.ClusterSpec({
      "worker": [f"localhost:{p}" for p in ports[:num_workers]],
      "ps": [f"localhost:{p}" for p in
             ports[num_workers:num_workers + num_ps]],
      "chief": [f"localhost:{ports[-2]}"]})
  # A worker needs an inter-op thread per concurrent function or it can
  # deadlock (b/172296720 in TensorFlow's own PS test helpers).
  worker_config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=3)
  for index in range(num_workers):
    tf.distribute.Server(cluster, job_name="worker", task_index=index,
                         config=worker_config, protocol="grpc", start=True)
  for index in range(num_ps):
    tf.distribute.Server(cluster, job_name="ps", task_index=index,
                         protocol="grpc", start=True)
  data_service_port = ports[-1]
  # The dispatcher first: a tf.data worker blocks until it can register.
  # trainer.task.train finds this one already running on the port.
  dispatcher = distribute.start_dispatcher(cluster, data_service_port)
  data_workers = [distribute.start_data_worker(dispatcher, "localhost")
                  for _ in range(num_workers)]
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      cluster, rpc_layer="grpc", task_type="chief", task_id=0)
  return LocalCluster(resolver=resolver, data_service_port=data_service_port,
                      dispatcher=dispatcher, data_workers=data_workers)
