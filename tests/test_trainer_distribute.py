"""Distribution: strategy choice from flags and TF_CONFIG; training under
MirroredStrategy with two CPU replicas (in a subprocess: devices must be
configured before TensorFlow starts).

Multi-worker and parameter-server clusters on localhost are tested in
tests/test_distributed.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trainer import config as config_lib
from trainer import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,info,gpus,expected", [
    ("auto", distribute.TaskInfo(), 0, "default"),
    ("auto", distribute.TaskInfo(), 1, "default"),
    ("auto", distribute.TaskInfo(), 4, "mirrored"),
    ("auto", distribute.TaskInfo("worker", 0, num_workers=2), 0,
     "multi_worker"),
    ("auto", distribute.TaskInfo("chief", 0, num_workers=3, num_ps=2), 0,
     "parameter_server"),
    ("mirrored", distribute.TaskInfo(), 0, "mirrored"),
])
def test_strategy_resolution(name, info, gpus, expected):
  assert distribute.resolve_strategy_name(name, info, num_gpus=gpus) == expected


def test_task_info_reads_tf_config():
  info = distribute.task_info({
      "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]},
      "task": {"type": "worker", "index": 1}})
  assert info == distribute.TaskInfo("worker", 1, num_workers=3, num_ps=1)
  assert distribute.is_server_task("auto", info)
  assert not distribute.is_server_task(
      "auto", distribute.TaskInfo("chief", 0, num_workers=3, num_ps=1))


def test_task_info_reads_the_environment_through_tensorflows_resolver(
    monkeypatch):
  tf_config = {
      "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]},
      "task": {"type": "ps", "index": 0}}
  monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  assert distribute.task_info() == distribute.TaskInfo(
      "ps", 0, num_workers=3, num_ps=1) == distribute.task_info(tf_config)
  assert distribute.resolve_strategy_name("auto") == "parameter_server"
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["a:1", "b:1"]}}))
  # No task: TensorFlow's resolver gives no type and index.
  assert distribute.task_info() == distribute.TaskInfo(None, 0, num_workers=2)
  monkeypatch.delenv("TF_CONFIG")
  assert distribute.task_info() == distribute.TaskInfo()


def test_bad_tf_config_and_missing_ps_tasks_are_clear_errors(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(config_lib.ConfigError, match="TF_CONFIG is not valid"):
    distribute.task_info()
  monkeypatch.delenv("TF_CONFIG")
  config = config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                                    spec_path="s",
                                    strategy="parameter_server")
  with pytest.raises(config_lib.ConfigError, match="no 'ps' tasks"):
    distribute.build_strategy(config)


_COMMON = """
import json, sys
import tensorflow as tf
from trainer import config as config_lib, task
from transforms import loader

def train(strategy, resolver=None, **flags):
  env = {{"ML100K_DIR": {ml100k_dir!r}}}
  spec = loader.load_spec("configs/movielens100k.yaml", env)
  config = config_lib.build_config(
      spec, dict(epochs=2, steps_per_epoch=15, batch_size=128, shuffle=False,
                 strategy=strategy, verbose=0, **flags),
      preprocessed_dir={preprocessed!r}, model_dir={model_dir!r} + strategy,
      spec_path="configs/movielens100k.yaml", spec_env=tuple(env.items()))
  return task.train(config, spec, cluster_resolver=resolver)
"""

_MIRRORED = """
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
mirrored = train("mirrored", model_type="dnn", hybrid=True, export=False)
single = train("default", model_type="dnn", hybrid=True, export=False)
import numpy as np
diff = max(float(np.abs(a - b).max()) for a, b in zip(
    mirrored.model.get_weights(), single.model.get_weights()))
print("RESULT " + json.dumps({
    "replicas": mirrored.report["num_replicas"],
    "steps": mirrored.report["steps"],
    "rmse": mirrored.report["metrics"]["rmse"],
    "single_rmse": single.report["metrics"]["rmse"],
    "max_weight_diff": diff}))
"""

def _run(script, ml100k_preprocessed, ml100k_dir, tmp_path):
  code = textwrap.dedent(_COMMON).format(
      ml100k_dir=ml100k_dir, preprocessed=ml100k_preprocessed,
      model_dir=str(tmp_path / "model_")) + textwrap.dedent(script)
  env = dict(os.environ)
  env.pop("TF_CONFIG", None)
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-4000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
  return json.loads(line[-1][len("RESULT "):])


def test_mirrored_two_replicas_match_one_device(ml100k_preprocessed,
                                                ml100k_dir, tmp_path):
  result = _run(_MIRRORED, ml100k_preprocessed, ml100k_dir, tmp_path)
  assert result["replicas"] == 2
  assert result["steps"] == 30
  # Same data and global batch: the replicas' averaged gradients are the
  # one-device gradients up to float rounding (LazyAdam on IndexedSlices
  # summed across replicas included).
  assert result["max_weight_diff"] < 1e-3
  assert abs(result["rmse"] - result["single_rmse"]) < 1e-3
