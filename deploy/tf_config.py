"""TF_CONFIG for trainer pods that no training operator configures.

A TFJob (Kubeflow training operator) and Vertex AI set TF_CONFIG for every
replica themselves. Plain Kubernetes does not: an Indexed Job (or a
StatefulSet) behind a headless Service gives each pod a stable DNS name and
an index, and this module turns those into the pod's TF_CONFIG before it
starts the trainer:

  python -m deploy.tf_config --cluster "$TF_CLUSTER" --task_type worker \
      -- embeddings train ...

The pod's index comes from JOB_COMPLETION_INDEX (Indexed Jobs) or from the
ordinal suffix of its hostname (StatefulSets, `name-3`).
"""

import argparse
import json
import os
import re
import socket
import sys
from typing import Dict, List, Mapping, Optional, Sequence

TASK_TYPES = ("chief", "worker", "ps", "evaluator")


class TFConfigError(ValueError):
  """A cluster description or pod identity that gives no valid TF_CONFIG."""


def cluster_spec(hosts: Mapping[str, Sequence[str]]) -> Dict[str, List[str]]:
  """Checks a cluster description: task type -> list of host:port.

  Args:
    hosts: e.g. {"worker": ["t-0.t:2222", "t-1.t:2222"]}.

  Returns:
    The cluster as a plain dict of lists.

  Raises:
    TFConfigError: unknown task types, empty lists, addresses without a
      port, more than one chief, or no task at all.
  """
  if not isinstance(hosts, Mapping) or not hosts:
    raise TFConfigError("cluster: must map task types to host:port lists")
  cluster = {}
  for task_type, addresses in hosts.items():
    if task_type not in TASK_TYPES:
      raise TFConfigError(f"cluster: unknown task type {task_type!r}; "
                          f"allowed: {TASK_TYPES}")
    addresses = list(addresses)
    if not addresses:
      raise TFConfigError(f"cluster: task type {task_type!r} has no hosts")
    for address in addresses:
      host, _, port = str(address).rpartition(":")
      if not host or not port.isdigit():
        raise TFConfigError(f"cluster: {task_type} address {address!r} is "
                            f"not host:port")
    if len(set(addresses)) != len(addresses):
      raise TFConfigError(f"cluster: task type {task_type!r} repeats a host")
    cluster[task_type] = addresses
  if len(cluster.get("chief", [])) > 1:
    raise TFConfigError("cluster: at most one chief")
  return cluster


def indexed_hosts(name: str, service: str, count: int, port: int,
                  namespace: Optional[str] = None) -> List[str]:
  """DNS names of the pods of an Indexed Job or StatefulSet.

  Args:
    name: the Job or StatefulSet name (pods are `name-0`, `name-1`, ...).
    service: the headless Service (the pods' subdomain).
    count: number of pods.
    port: the gRPC port the trainer servers listen on.
    namespace: adds `.namespace.svc` when given.

  Returns:
    ["name-0.service[.namespace.svc]:port", ...].
  """
  suffix = f".{namespace}.svc" if namespace else ""
  return [f"{name}-{i}.{service}{suffix}:{port}" for i in range(count)]


def tf_config(cluster: Mapping[str, Sequence[str]], task_type: str,
              index: int) -> Dict[str, object]:
  """The TF_CONFIG of one task.

  Args:
    cluster: task type -> host:port list (checked with cluster_spec).
    task_type: this task's type.
    index: this task's index within its type.

  Returns:
    {"cluster": ..., "task": {"type": ..., "index": ...}}.

  Raises:
    TFConfigError: the task is not in the cluster.
  """
  cluster = cluster_spec(cluster)
  if task_type not in cluster:
    raise TFConfigError(f"task type {task_type!r} is not in the cluster "
                        f"({sorted(cluster)})")
  if not 0 <= index < len(cluster[task_type]):
    raise TFConfigError(f"task index {index} is outside 0..."
                        f"{len(cluster[task_type]) - 1} for {task_type!r}")
  return {"cluster": cluster, "task": {"type": task_type, "index": index}}


def pod_index(environ: Mapping[str, str], hostname: str) -> int:
  """This pod's index: JOB_COMPLETION_INDEX, else the hostname's ordinal.

  Args:
    environ: the process environment.
    hostname: the pod's hostname.

  Returns:
    The index.

  Raises:
    TFConfigError: neither source gives an index.
  """
  if environ.get("JOB_COMPLETION_INDEX", "").isdigit():
    return int(environ["JOB_COMPLETION_INDEX"])
  match = re.search(r"-(\d+)$", hostname.split(".")[0])
  if match:
    return int(match.group(1))
  raise TFConfigError(f"no pod index: JOB_COMPLETION_INDEX is unset and "
                      f"hostname {hostname!r} has no -N ordinal suffix")


def run(argv: Optional[List[str]] = None) -> int:
  """Sets TF_CONFIG for this pod, then replaces itself with the command.

  Args:
    argv: `--cluster JSON --task_type TYPE [--index N] -- COMMAND ...`.

  Returns:
    Only on --print (0); otherwise the process becomes COMMAND.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  command = []
  if "--" in argv:
    split = argv.index("--")
    argv, command = argv[:split], argv[split + 1:]
  parser = argparse.ArgumentParser(prog="python -m deploy.tf_config")
  parser.add_argument("--cluster", default=os.environ.get("TF_CLUSTER"),
                      help="JSON task type -> [host:port] (default: "
                      "$TF_CLUSTER)")
  parser.add_argument("--task_type", default=os.environ.get("TF_TASK_TYPE"),
                      choices=TASK_TYPES)
  parser.add_argument("--index", type=int, default=None,
                      help="default: JOB_COMPLETION_INDEX or the hostname's "
                      "ordinal")
  parser.add_argument("--print", action="store_true",
                      help="print TF_CONFIG instead of running a command")
  args = parser.parse_args(argv)
  if not args.cluster or not args.task_type:
    parser.error("--cluster (or $TF_CLUSTER) and --task_type are required")
  index = args.index if args.index is not None else pod_index(
      os.environ, socket.gethostname())
  config = json.dumps(tf_config(json.loads(args.cluster), args.task_type,
                                index))
  if args.print or not command:
    print(config)
    return 0
  os.environ["TF_CONFIG"] = config
  os.execvp(command[0], command)
  return 0


if __name__ == "__main__":
  sys.exit(run())
