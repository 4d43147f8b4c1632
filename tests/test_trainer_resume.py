"""Fault tolerance: a trainer killed mid-epoch resumes from its checkpoint."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from trainer import task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(preprocessed, ml100k_dir, model_dir):
  return [sys.executable, "-m", "trainer.task",
          "--spec", os.path.join(REPO, "configs", "movielens100k.yaml"),
          "--preprocessed", preprocessed, "--model_dir", model_dir,
          "--env", f"ML100K_DIR={ml100k_dir}",
          "--model_type", "mf", "--batch_size", "64", "--epochs", "2",
          "--steps_per_epoch", "150", "--checkpoint_every", "40",
          "--no-export"]


def test_killed_trainer_resumes_from_the_last_checkpoint(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  command = _command(ml100k_preprocessed, ml100k_dir, model_dir)
  chief = os.path.join(model_dir, task.BACKUP_SUBDIR, "chief")
  checkpoints = os.path.join(chief, "ckpt-*.index")
  # The CheckpointManager's state file is renamed into place after a
  # checkpoint is complete: from then on a restart has one to restore.
  state = os.path.join(chief, "checkpoint")
  with open(tmp_path / "first.log", "w") as log:
    first = subprocess.Popen(command, cwd=REPO, stdout=log,
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
      + (tmp_path / "first.log").read_text()[-2000:])
  assert glob.glob(checkpoints)
  assert not os.path.exists(os.path.join(model_dir, task.REPORT_FILE))

  second = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  with open(os.path.join(model_dir, task.REPORT_FILE)) as handle:
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
