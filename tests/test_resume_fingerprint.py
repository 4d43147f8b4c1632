"""Resume only what matches (trainer/backup.py).

A killed run's backup records the settings, data and spec it was made with;
a new run resumes it only when they are the same, and otherwise stops with
one line that says what differs and how to start over (--restart).
"""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from core import layout
from test_trainer_resume import _command, _kill_after_first_checkpoint
from trainer import backup
from trainer import config as config_lib
from trainer import task


def _plain(**fields):
  return config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                                  spec_path="s", **fields)


def test_the_fingerprint_holds_what_changes_training_and_not_the_rest():
  fields = _plain().training_fields()
  assert {"learning_rate", "batch_size", "model_type", "seed",
          "validation_fraction", "hidden_units"} <= set(fields)
  assert not {"model_dir", "preprocessed_dir", "spec_path", "verbose",
              "checkpoint_every", "export", "restart"} & set(fields)
  assert fields["hidden_units"] == [64, 32]  # as JSON holds it
  assert _plain(verbose=2, checkpoint_every=5).training_fields() == fields


def test_differences_name_each_setting_old_to_new():
  old = {"config": _plain().training_fields(), "data": {"a": "1"},
         "spec": "x"}
  new = {"config": _plain(learning_rate=0.01, hidden_units=(8,),
                          mf_dim=4).training_fields(),
         "data": {"a": "2"}, "spec": "x"}
  assert backup.differences(old, new) == [
      "mf_dim unset -> 4", "hidden_units 64,32 -> 8",
      "learning_rate 0.003 -> 0.01",
      "the preprocessed data (its run_report.json or feature_info.json)"]
  assert backup.differences(old, old) == []


@pytest.fixture(scope="module")
def killed(ml100k_preprocessed, ml100k_dir, tmp_path_factory):
  """A model_dir holding the backup of a run killed after a checkpoint."""
  root = tmp_path_factory.mktemp("killed")
  model_dir = str(root / "model")
  command = _command(ml100k_preprocessed, ml100k_dir, model_dir)
  _kill_after_first_checkpoint(
      command, os.path.join(layout.ModelLayout(model_dir).backup, "chief",
                            "checkpoint"), root / "first.log")
  return command, model_dir


def _argv(command, flag=None, value=None):
  """The killed run's flags (without `python -m trainer.task`), one set."""
  argv = list(command[3:])
  if flag in argv:
    argv[argv.index(flag) + 1] = value
  elif flag is not None:
    argv += [flag, value]
  return argv


@pytest.mark.parametrize("changes, differs", [
    (("--learning_rate", "0.01"), "learning_rate 0.003 -> 0.01"),
    (("--batch_size", "32"), "batch_size 64 -> 32"),
    (("--model_type", "dnn"), "model_type mf -> dnn"),
])
def test_a_backup_of_other_settings_stops_the_run_with_one_line(
    killed, changes, differs, capsys):
  command, model_dir = killed
  assert task.run(_argv(command, *changes)) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  backup_dir = layout.ModelLayout(model_dir).backup
  assert err.startswith(f"embeddings train: {backup_dir} is a killed run "
                        f"with other settings (")
  assert differs in err
  assert err.rstrip().endswith(
      "; pass --restart to discard it and start over")
  # Nothing was trained, nothing was removed.
  assert not os.path.exists(layout.ModelLayout(model_dir).report)
  assert os.path.exists(os.path.join(backup_dir, "chief", "checkpoint"))


def test_a_backup_without_a_fingerprint_counts_as_different(tmp_path):
  paths = layout.ModelLayout(str(tmp_path / "model"))
  chief = os.path.join(paths.backup, "chief")
  tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(3)),
                             chief, max_to_keep=1).save()
  config = dataclasses.replace(_plain(), model_dir=paths.root)
  with pytest.raises(backup.BackupMismatchError,
                     match="settings were not recorded .*--restart"):
    backup.prepare(config)
  # --restart discards it.
  assert backup.prepare(dataclasses.replace(config, restart=True)) is None
  assert not os.path.exists(paths.backup)


def test_the_same_settings_resume_and_restart_starts_over(killed, capfd):
  command, model_dir = killed
  argv = _argv(command)
  # The same settings, and flags that do not change training, resume.
  assert task.run(argv + ["--keras_verbose", "0",
                          "--checkpoint_every", "50"]) == 0
  out = capfd.readouterr().out
  backup_dir = layout.ModelLayout(model_dir).backup
  assert f"resuming from the backup in {backup_dir} (epoch 1)" in out
  with open(layout.ModelLayout(model_dir).report) as handle:
    report = json.load(handle)
  assert report["resumed_from_step"] > 0
  assert not os.path.exists(backup_dir)


def test_restart_discards_a_backup_of_other_settings(
    ml100k_preprocessed, ml100k_dir, tmp_path, capfd):
  model_dir = str(tmp_path / "model")
  command = _command(ml100k_preprocessed, ml100k_dir, model_dir)
  paths = layout.ModelLayout(model_dir)
  _kill_after_first_checkpoint(
      command, os.path.join(paths.backup, "chief", "checkpoint"),
      tmp_path / "first.log")
  argv = _argv(command, "--learning_rate", "0.01") + ["--restart"]
  assert task.run(argv) == 0
  assert "resuming" not in capfd.readouterr().out
  with open(paths.report) as handle:
    report = json.load(handle)
  # Trained from scratch, with the settings the report claims.
  assert report["resumed_from_step"] == 0
  assert report["config"]["learning_rate"] == 0.01
  assert report["steps"] == report["planned_steps"]
