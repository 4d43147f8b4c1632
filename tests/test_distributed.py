"""Distributed training on localhost.

* Two MultiWorkerMirroredStrategy workers, each `python -m trainer.task
  --strategy multi_worker` with its own TF_CONFIG, train one model on the
  MovieLens 100K fold. Both must end with bit-identical weights (their
  updates are all-reduced every step) and match a one-process run with the
  same global batch, seed and data order.
* A parameter-server cluster (two workers, two ps, in-process
  tf.distribute.Server tasks as TensorFlow's own PS tests build them, plus
  the tf.data service: tests/ps_cluster.py) trains through the trainer's
  model.fit / ClusterCoordinator path with every embedding table
  partitioned across both ps.
* On such a cluster, workers that build their own datasets each read the
  whole split (ParameterServerStrategy gives every worker input pipeline 0
  of 1), while the trainer's tf.data service input splits each pass between
  them: every example exactly once.

Every cluster runs in subprocesses with a deadline and is killed on the way
out: an in-process server can never be stopped, and a stuck collective would
hang the test run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Dict, List, Sequence

import numpy as np
import pytest
import tensorflow as tf

import ps_cluster
from core import layout
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")
DEADLINE_S = 480

# Two MWMS workers compute the one-process model's arithmetic: the same
# global batches (DATA sharding splits each global batch between them), the
# same initial weights (seeded) and the same scaled loss. What may differ is
# float32 summation order (each worker sums half a batch; sparse gradients
# are all-gathered and summed per row): float32 rounding, about 1e-7
# relative per step. A real divergence (unsharded input, an unscaled loss,
# another data order or initialisation) moves weights by up to the learning
# rate (3e-3) per step, > 1e-2 after 20.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-3


def _run_together(commands: Dict[str, Sequence[str]],
                  envs: Dict[str, Dict[str, str]], log_dir,
                  timeout: float) -> Dict[str, int]:
  """Runs the commands concurrently; kills every one still alive at the end.

  Returns:
    name -> exit status.

  Raises:
    AssertionError: the deadline passed (with the logs' tails).
  """
  processes, logs = {}, {}
  try:
    for name, command in commands.items():
      logs[name] = open(os.path.join(log_dir, f"{name}.log"), "w")
      processes[name] = subprocess.Popen(
          list(command), cwd=REPO, env=envs[name], stdout=logs[name],
          stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes.values()):
      if time.monotonic() > deadline:
        raise AssertionError(
            f"distributed run exceeded {timeout} s:\n"
            + _tails(log_dir, list(commands)))
      time.sleep(0.2)
    return {name: p.returncode for name, p in processes.items()}
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
      process.wait()
    for handle in logs.values():
      handle.close()


def _tails(log_dir, names) -> str:
  parts = []
  for name in names:
    with open(os.path.join(log_dir, f"{name}.log")) as handle:
      parts.append(f"--- {name} ---\n{handle.read()[-3000:]}")
  return "\n".join(parts)


def _train_command(preprocessed: str, ml100k_dir: str, model_dir: str,
                   strategy: str) -> List[str]:
  return [sys.executable, "-m", "trainer.task", "--spec", SPEC,
          "--preprocessed", preprocessed, "--model_dir", model_dir,
          "--env", f"ML100K_DIR={ml100k_dir}", "--model_type", "dnn",
          "--hybrid", "--hidden_units", "16,4", "--batch_size", "1024",
          "--epochs", "2", "--steps_per_epoch", "10", "--shuffle_buffer",
          "5000", "--seed", "7", "--strategy", strategy, "--keras_verbose", "0"]


def _saved_weights(export_dir: str) -> Dict[str, np.ndarray]:
  """The model weights of a SavedModel, by checkpoint key.

  Metric accumulators are left out: each worker's hold the totals of its
  own share of the last validation pass.
  """
  prefix = os.path.join(export_dir, "variables", "variables")
  return {name: tf.train.load_variable(prefix, name)
          for name, _ in tf.train.list_variables(prefix)
          if name.endswith(".ATTRIBUTES/VARIABLE_VALUE")
          and not name.startswith("keras_api/metrics/")}


def _report(directory: str) -> Dict:
  with open(layout.ModelLayout(directory).report) as handle:
    return json.load(handle)


def test_two_workers_end_identical_and_match_one_process(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  ports = ps_cluster.free_ports(2)
  cluster = {"worker": [f"localhost:{port}" for port in ports]}
  multi_dir, single_dir = str(tmp_path / "multi"), str(tmp_path / "single")
  base_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  base_env["CUDA_VISIBLE_DEVICES"] = "-1"
  commands, envs = {}, {}
  for index in range(2):
    name = f"worker{index}"
    commands[name] = _train_command(ml100k_preprocessed, ml100k_dir,
                                    multi_dir, "multi_worker")
    envs[name] = dict(base_env, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
  commands["single"] = _train_command(ml100k_preprocessed, ml100k_dir,
                                      single_dir, "default")
  envs["single"] = base_env
  codes = _run_together(commands, envs, str(tmp_path), DEADLINE_S)
  assert codes == {"worker0": 0, "worker1": 0, "single": 0}, (
      _tails(str(tmp_path), list(commands)))

  # Worker 0 is the chief (no chief task): it writes model_dir; worker 1
  # writes into its own worker folder.
  worker1_dir = layout.ModelLayout(multi_dir).worker("worker", 1).root
  reports = {"worker0": _report(multi_dir), "worker1": _report(worker1_dir),
             "single": _report(single_dir)}
  for name in ("worker0", "worker1"):
    assert reports[name]["strategy"] == "CollectiveAllReduceStrategy"
    assert reports[name]["num_replicas"] == 2
  assert reports["single"]["num_replicas"] == 1
  for report in reports.values():
    assert report["steps"] == report["planned_steps"] == 20

  chief = _saved_weights(reports["worker0"]["export_dir"])
  worker = _saved_weights(reports["worker1"]["export_dir"])
  single = _saved_weights(reports["single"]["export_dir"])
  assert worker1_dir in reports["worker1"]["export_dir"]
  assert sorted(chief) == sorted(worker) == sorted(single)
  tables = [name for name in chief if chief[name].ndim == 2
            and "embeddings" in name]
  assert len(tables) == 13  # 11 feature tables + the user and item biases
  # The runs did train: the zero-initialised bias rows of the users and
  # movies in the 20 batches (20K ratings, 200+ users) moved.
  with open(os.path.join(ml100k_preprocessed, "feature_info.json")) as handle:
    sizes = {name: info["size"] for name, info in json.load(handle).items()}
  biases = [name for name in tables if chief[name].shape in (
      (sizes["user"], 1), (sizes["movie"], 1))]
  assert len(biases) == 2
  for name in biases:
    assert np.count_nonzero(chief[name]) > 100, name
  for name in chief:
    np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
    np.testing.assert_allclose(chief[name], single[name], rtol=0,
                               atol=WEIGHT_ATOL, err_msg=name)
  for name in tables:
    if chief[name].shape[1] > 1:
      correlation = np.corrcoef(chief[name].ravel(), single[name].ravel())
      assert correlation[0, 1] > 0.9999, name

  # The two processes also report the same training curve as one process.
  multi_loss = [e["loss"] for e in reports["worker0"]["train_history"]]
  single_loss = [e["loss"] for e in reports["single"]["train_history"]]
  np.testing.assert_allclose(multi_loss, single_loss, rtol=LOSS_RTOL)
  assert reports["worker0"]["metrics"] == pytest.approx(
      reports["worker1"]["metrics"], rel=0, abs=0)
  assert reports["worker0"]["metrics"]["rmse"] == pytest.approx(
      reports["single"]["metrics"]["rmse"], rel=LOSS_RTOL)


def _cluster_env() -> Dict[str, str]:
  """The environment of a cluster script: the repo and tests/ importable."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["CUDA_VISIBLE_DEVICES"] = "-1"
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO, os.path.join(REPO, "tests")]
      + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def _run_script(tmp_path, name: str, text: str, *args: str) -> None:
  script = tmp_path / f"{name}.py"
  script.write_text(text)
  codes = _run_together({name: [sys.executable, str(script), *args]},
                        {name: _cluster_env()}, str(tmp_path), DEADLINE_S)
  assert codes == {name: 0}, _tails(str(tmp_path), [name])


def test_data_service_needs_a_chief_and_a_free_port():
  workers_only = tf.train.ClusterSpec({"worker": ["localhost:1"],
                                       "ps": ["localhost:2"]})
  with pytest.raises(config_lib.ConfigError, match="no 'chief' task"):
    distribute.dispatcher_address(workers_only, 2223)
  cluster = tf.train.ClusterSpec({"chief": ["trainer-chief-0:2222"],
                                  "worker": ["trainer-worker-0:2222"]})
  assert distribute.dispatcher_address(cluster, 2223) == "trainer-chief-0:2223"
  taken = socket.socket()
  try:
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(config_lib.ConfigError,
                       match=f"data_service_port: .* port {port}"):
      distribute.start_dispatcher(cluster, port)
  finally:
    taken.close()


# Runs in a subprocess: an in-process cluster (tests/ps_cluster.py: two
# workers with their tf.data workers, two ps, the dispatcher), then trains
# as the chief through trainer.task.train.
_PS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ps_cluster
    from trainer import config as config_lib, task
    from transforms import loader

    spec_path, ml100k_dir, preprocessed, model_dir, out = sys.argv[1:6]
    cluster = ps_cluster.start(num_workers=2, num_ps=2)
    env = (("ML100K_DIR", ml100k_dir),)
    spec = loader.load_spec(spec_path, dict(env))
    config = config_lib.build_config(
        spec, {"model_type": "mf", "batch_size": 64, "epochs": 2,
               "steps_per_epoch": 5, "shuffle": False,
               "min_shard_bytes": 1024, "export": True, "verbose": 0},
        preprocessed_dir=preprocessed, model_dir=model_dir,
        spec_path=spec_path, spec_env=env, strategy="parameter_server",
        data_service_port=cluster.data_service_port)
    result = task.train(config, spec, cluster_resolver=cluster.resolver)
    model = result.model
    tables = {}
    for layer in model.layers:
      weights = getattr(layer, "embeddings", None)
      if weights is None:
        continue
      shards = getattr(weights, "variables", [weights])
      tables[layer.name] = {
          "sharded": type(weights).__name__ == "ShardedVariable",
          "shape": [int(d) for d in weights.shape],
          "shard_rows": [int(s.shape[0]) for s in shards],
          "devices": [s.device for s in shards],
          "values": np.concatenate([s.numpy() for s in shards]).tolist()}
    json.dump({"report": result.report, "tables": tables,
               "iterations": int(model.optimizer.iterations.numpy())},
              open(out, "w"), default=str)
    """)


def test_parameter_server_training_partitions_the_tables(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  model_dir, out = str(tmp_path / "model"), str(tmp_path / "result.json")
  _run_script(tmp_path, "ps", _PS_SCRIPT, SPEC, ml100k_dir,
              ml100k_preprocessed, model_dir, out)
  with open(out) as handle:
    result = json.load(handle)
  report, tables = result["report"], result["tables"]
  assert report["strategy"] == "ParameterServerStrategyV2"
  assert result["iterations"] == report["steps"] == 10

  with open(os.path.join(ml100k_preprocessed, "feature_info.json")) as handle:
    sizes = {name: info["size"] for name, info in json.load(handle).items()}
  expected = {"embedding_user": sizes["user"],
              "embedding_movie": sizes["movie"],
              "bias_user": sizes["user"], "bias_movie": sizes["movie"]}
  assert sorted(tables) == sorted(expected)
  for name, rows in expected.items():
    table = tables[name]
    # Split across both parameter servers, row-wise, nothing lost.
    assert table["sharded"], name
    assert len(table["shard_rows"]) == 2 and sum(table["shard_rows"]) == rows
    assert table["shape"][0] == rows
    assert sorted(d.split("/device")[0] for d in table["devices"]) == [
        "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]

  # The workers drew their 10 batches of 64 from one shared pass over the
  # (unshuffled) split, at its start. Bias rows start at zero and the
  # optimizer updates only looked-up rows, so only movies of the split's
  # first batches moved, and hundreds did. (Which 10 of the first batches
  # depends on timing: each worker's reader buffers batches ahead of its
  # steps, so the first 64 batches bound them with room to spare.)
  movies = data_lib.load_arrays(ml100k_preprocessed, "train",
                                ["movie"]).dense["movie"]
  maybe_seen = set(movies[:64 * 64].tolist())
  movie_bias = np.asarray(tables["bias_movie"]["values"])[:, 0]
  moved = set(np.flatnonzero(movie_bias != 0).tolist())
  assert moved <= maybe_seen
  assert 100 < len(moved) < len(maybe_seen)

  # The exported SavedModel holds each table whole, equal to its shards.
  exported = _saved_weights(report["export_dir"])
  for name, rows in (("bias_movie", sizes["movie"]),
                     ("bias_user", sizes["user"])):
    matches = [key for key, value in exported.items()
               if value.shape == (rows, 1)]
    assert len(matches) == 1, name
    np.testing.assert_array_equal(
        exported[matches[0]][:, 0],
        np.asarray(tables[name]["values"])[:, 0])


# Runs in a subprocess: an in-process cluster of two workers, then reads
# the training split on the workers through ClusterCoordinator, as
# model.fit does (create_per_worker_dataset over
# distribute_datasets_from_function), once with each worker building its
# own dataset (the trainer's input before the tf.data service) and once
# with the trainer's shared pass. Each scheduled step returns one batch's
# example ids ((user, movie) identifies a rating); after the data come
# empty batches, so that surplus steps find something to read.
_SHARED_INPUT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import ps_cluster
    from trainer import config as config_lib, data as data_lib, distribute
    from trainer import fit_input
    from transforms import loader

    spec_path, ml100k_dir, preprocessed, expected, out = sys.argv[1:6]
    expected = int(expected)
    cluster = ps_cluster.start(num_workers=2, num_ps=1)
    env = (("ML100K_DIR", ml100k_dir),)
    spec = loader.load_spec(spec_path, dict(env))
    config = config_lib.build_config(
        spec, {"batch_size": 2000, "shuffle": True, "shuffle_buffer": 5000,
               "seed": 7},
        preprocessed_dir=preprocessed, model_dir="unused",
        spec_path=spec_path, spec_env=env, strategy="parameter_server",
        data_service_port=cluster.data_service_port)
    strategy = distribute.build_strategy(config, cluster.resolver)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
        strategy)
    names = ["user", "movie"]
    contexts = []

    def example_ids(dataset):
      ids = dataset.map(lambda features, label:
                        features["user"] * 10000 + features["movie"])
      return ids.concatenate(
          tf.data.Dataset.from_tensors(tf.zeros([0], tf.int64)).repeat())

    def each_worker_reads(input_context):
      contexts.append([input_context.input_pipeline_id,
                       input_context.num_input_pipelines])
      options = data_lib.InputOptions(
          batch_size=config.batch_size, shuffle=True,
          shuffle_buffer=config.shuffle_buffer, seed=config.seed)
      return example_ids(data_lib.tfrecord_dataset(
          preprocessed, "train", options, names,
          input_context=input_context))

    one_pass = fit_input.shared_passes_fn(config, names, cluster.dispatcher,
                                     "test", passes=1)

    def shared_pass(input_context):
      contexts.append([input_context.input_pipeline_id,
                       input_context.num_input_pipelines])
      return example_ids(one_pass(input_context))

    @tf.function
    def next_batch(iterator):
      return next(iterator)

    def read(dataset_fn, total):
      per_worker = coordinator.create_per_worker_dataset(
          lambda: strategy.distribute_datasets_from_function(dataset_fn))
      iterator = iter(per_worker)
      batches = []
      # Until `total` ids came, then one more round to show nothing follows.
      for _ in range(100):
        done = sum(len(b) for b in batches) >= total
        steps = [coordinator.schedule(next_batch, args=(iterator,))
                 for _ in range(8)]
        coordinator.join()
        batches += [np.asarray(step.fetch()) for step in steps]
        if done:
          break
      return np.concatenate(batches).tolist()

    result = {"each_worker_reads": read(each_worker_reads, 2 * expected),
              "shared_pass": read(shared_pass, expected),
              "contexts": contexts}
    json.dump(result, open(out, "w"))
    """)


def test_parameter_server_workers_share_each_pass(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  out = str(tmp_path / "ids.json")
  arrays = data_lib.load_arrays(ml100k_preprocessed, "train",
                                ["user", "movie"]).dense
  split = arrays["user"].astype(np.int64) * 10000 + arrays["movie"]
  assert len(np.unique(split)) == len(split)
  _run_script(tmp_path, "shared_input", _SHARED_INPUT_SCRIPT, SPEC,
              ml100k_dir, ml100k_preprocessed, str(len(split)), out)
  with open(out) as handle:
    result = json.load(handle)

  # ParameterServerStrategy traces the dataset function once, on the
  # coordinator, and gives it input pipeline 0 of 1 for every worker...
  assert result["contexts"] == [[0, 1], [0, 1]]
  # ...so workers that build their datasets themselves each read the whole
  # split, the same seeded shuffle: between them, every example twice.
  ids, counts = np.unique(result["each_worker_reads"], return_counts=True)
  np.testing.assert_array_equal(ids, np.sort(split))
  assert set(counts.tolist()) == {2}
  # Through the tf.data service the workers split one pass: every example
  # of the training split exactly once.
  shared = np.asarray(result["shared_pass"])
  np.testing.assert_array_equal(np.sort(shared), np.sort(split))
  # Shuffled (the pass does not come in file order).
  assert not np.array_equal(shared, split)
