"""Fault tolerance: a trainer killed mid-epoch resumes from its checkpoint.

Under the default strategy (Keras BackupAndRestore) and under parameter
servers (the trainer's own step checkpoints:
trainer.callbacks.StepCheckpoint),
where the killed process is a chief that runs an in-process cluster
(tests/ps_cluster.py) and the restart brings up a fresh one, as a whole-job
restart does.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from core import layout
from trainer import callbacks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(preprocessed, ml100k_dir, model_dir):
  return [sys.executable, "-m", "trainer.task",
          "--spec", os.path.join(REPO, "configs", "movielens100k.yaml"),
          "--preprocessed", preprocessed, "--model_dir", model_dir,
          "--env", f"ML100K_DIR={ml100k_dir}",
          "--model_type", "mf", "--batch_size", "64", "--epochs", "2",
          "--steps_per_epoch", "150", "--checkpoint_every", "40",
          "--no-export"]


def _kill_after_first_checkpoint(command, state, log_path, env=None):
  """Starts the trainer, SIGKILLs it once `state` exists, checks it died.

  The CheckpointManager's state file is renamed into place after a
  checkpoint is complete: from then on a restart has one to restore.
  """
  with open(log_path, "w") as log:
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 240
      while not os.path.exists(state) and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
      first.send_signal(signal.SIGKILL)
    finally:
      first.wait()
  assert first.returncode == -signal.SIGKILL, (
      "the first run ended before it could be killed:\n"
      + open(log_path).read()[-2000:])


def test_killed_trainer_resumes_from_the_last_checkpoint(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  command = _command(ml100k_preprocessed, ml100k_dir, model_dir)
  paths = layout.ModelLayout(model_dir)
  # BackupAndRestore keeps the chief's checkpoints in a folder of its own.
  chief = os.path.join(paths.backup, "chief")
  checkpoints = os.path.join(chief, "ckpt-*.index")
  _kill_after_first_checkpoint(command, os.path.join(chief, "checkpoint"),
                               tmp_path / "first.log")
  assert glob.glob(checkpoints)
  assert not os.path.exists(paths.report)

  second = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  with open(paths.report) as handle:
    report = json.load(handle)
  resumed = report["resumed_from_step"]
  # It restarted from a checkpoint (every 40 steps), not from step 0...
  assert resumed > 0 and resumed % 40 == 0 and resumed < 300
  # ...and trained exactly the planned number of steps in total.
  assert report["steps"] == report["planned_steps"] == 2 * 150
  # Only the epochs from the restored one on ran again, and together they
  # made up the steps the first run had left.
  assert len(report["train_history"]) == 2 - resumed // 150
  assert sum(e["steps"] for e in report["train_history"]) == 300 - resumed
  # A finished run removes its backup, so a new run starts afresh.
  assert not glob.glob(checkpoints)


@pytest.mark.parametrize("done, segments", [
    (0, [(0, 3, 100)]),
    (100, [(1, 3, 100)]),
    (130, [(1, 2, 70), (2, 3, 100)]),
    (250, [(2, 3, 50)]),
    (300, []),
])
def test_fit_segments_finish_the_interrupted_epoch_first(done, segments):
  assert callbacks.fit_segments(done, 100, 3) == segments
  assert sum(steps * (last - first) for first, last, steps in segments) == (
      300 - done)


_PS_SCRIPT = textwrap.dedent("""
    import sys
    import ps_cluster
    from trainer import config as config_lib, task
    from transforms import loader

    spec_path, ml100k_dir, preprocessed, model_dir = sys.argv[1:5]
    cluster = ps_cluster.start(num_workers=2, num_ps=1)
    env = (("ML100K_DIR", ml100k_dir),)
    spec = loader.load_spec(spec_path, dict(env))
    config = config_lib.build_config(
        spec, {"model_type": "mf", "batch_size": 64, "epochs": 2,
               "steps_per_epoch": 100, "checkpoint_every": 30,
               "min_shard_bytes": 1024, "export": False, "verbose": 0},
        preprocessed_dir=preprocessed, model_dir=model_dir,
        spec_path=spec_path, spec_env=env, strategy="parameter_server",
        data_service_port=cluster.data_service_port)
    task.train(config, spec, cluster_resolver=cluster.resolver)
    """)


def test_killed_parameter_server_chief_resumes_mid_epoch(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  script = tmp_path / "ps_chief.py"
  script.write_text(_PS_SCRIPT)
  command = [sys.executable, str(script),
             os.path.join(REPO, "configs", "movielens100k.yaml"), ml100k_dir,
             ml100k_preprocessed, model_dir]
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["CUDA_VISIBLE_DEVICES"] = "-1"
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO, os.path.join(REPO, "tests")]
      + [p for p in [env.get("PYTHONPATH")] if p])
  paths = layout.ModelLayout(model_dir)
  backup = paths.backup
  _kill_after_first_checkpoint(command, os.path.join(backup, "checkpoint"),
                               tmp_path / "first.log", env=env)
  assert not os.path.exists(paths.report)
  # Every checkpoint holds exactly the steps its number says: the pending
  # steps were joined before it was written.
  checkpoints = [path[:-len(".index")]
                 for path in glob.glob(os.path.join(backup, "ckpt-*.index"))]
  assert checkpoints
  for path in checkpoints:
    number = int(path.rsplit("-", 1)[1])
    assert number % 30 == 0
    assert tf.train.load_variable(
        path, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == number

  second = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  with open(paths.report) as handle:
    report = json.load(handle)
  resumed = report["resumed_from_step"]
  # Restored from a step checkpoint (every 30 steps: never an epoch's end
  # here, so the run resumed mid-epoch)...
  assert resumed > 0 and resumed % 30 == 0 and resumed < 200
  assert resumed % 100 != 0
  # ...trained the rest of the interrupted epoch, then the epochs after it,
  # exactly the planned number of steps in all.
  assert report["steps"] == report["planned_steps"] == 2 * 100
  history = report["train_history"]
  assert len(history) == 2 - resumed // 100
  assert history[0]["steps"] == 100 - resumed % 100
  assert sum(e["steps"] for e in history) == 200 - resumed
  # A finished run removes its backup, so a new run starts afresh.
  assert not os.path.exists(backup)
