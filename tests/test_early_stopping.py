"""Early stopping with restore-best (trainer/callbacks.py) and the epoch
line that spells the loss out as data loss + L2 penalty."""

import io
import json
import os

import numpy as np
import pytest
import tf_keras as keras

from core import layout
from trainer import callbacks
from trainer import config as config_lib
from trainer import task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")


def _tiny_model():
  model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
  model.compile(optimizer="sgd", loss="mse")
  return model


def _epochs(stopper, model, values):
  """Feeds `values` as epochs' val_rmse; epoch k's weights are all k."""
  for epoch, value in enumerate(values):
    model.set_weights([np.full_like(w, epoch + 1) for w in
                       model.get_weights()])
    stopper.on_epoch_end(epoch, {"val_rmse": value, "rmse": 1.0})
    if model.stop_training:
      return epoch + 1
  return None


def test_stops_after_patience_epochs_and_restores_the_best(tmp_path):
  model = _tiny_model()
  out = layout.ModelLayout(str(tmp_path / "model"))
  stopper = callbacks.EarlyStopping("rmse", 2, out, writes=True)
  stopper.set_model(model)
  stopped = _epochs(stopper, model, [1.0, 0.9, 0.95, 0.97, 0.5])
  assert stopped == stopper.stopped_epoch == 4
  assert stopper.best_epoch == 2
  assert stopper.restore_best() == 2
  assert all(np.all(w == 2) for w in model.get_weights())


def test_a_higher_is_better_metric_and_ties_keep_the_earliest(tmp_path):
  stopper = callbacks.EarlyStopping(
      "auc", 3, layout.ModelLayout(str(tmp_path)), writes=False)
  stopper.values = {1: 0.7, 2: 0.8, 3: 0.8, 4: float("nan"), 5: 0.75}
  assert stopper.best_epoch == 2


def test_a_resumed_run_knows_the_epochs_before_the_kill(tmp_path):
  out = layout.ModelLayout(str(tmp_path / "model"))
  model = _tiny_model()
  first = callbacks.EarlyStopping("rmse", 2, out, writes=True)
  first.set_model(model)
  _epochs(first, model, [1.0, 0.8, 0.9])
  with open(out.backup_best_state) as handle:
    assert json.load(handle)["values"] == {"1": 1.0, "2": 0.8, "3": 0.9}

  # The killed run's checkpoint was from epoch 3's start: epoch 3 runs
  # again, with another value, then epoch 4 makes the patience run out.
  resumed = callbacks.EarlyStopping("rmse", 2, out, writes=True)
  resumed.resume()
  assert resumed.values == {1: 1.0, 2: 0.8, 3: 0.9}
  other = _tiny_model()
  resumed.set_model(other)
  for epoch, value in ((2, 0.85), (3, 0.95)):
    other.set_weights([np.full_like(w, 10 + epoch) for w in
                       other.get_weights()])
    resumed.on_epoch_end(epoch, {"val_rmse": value})
  assert resumed.values == {1: 1.0, 2: 0.8, 3: 0.85, 4: 0.95}
  assert other.stop_training and resumed.stopped_epoch == 4
  assert resumed.restore_best() == 2
  # Epoch 2's weights, from the backup the first run wrote.
  assert all(np.all(w == 2) for w in other.get_weights())


def test_epoch_line_spells_the_loss_out_and_names_the_validation_rows():
  stream = io.StringIO()
  logger = callbacks.EpochLogger(10, 256, "mse", "validation",
                                 stream=stream)
  logger.set_model(_tiny_model())
  logger.on_epoch_begin(2)
  logger.on_epoch_end(2, {"loss": 0.83, "mse": 0.8, "rmse": 0.894,
                          "val_loss": 0.95, "val_mse": 0.92,
                          "val_rmse": 0.959})
  line = stream.getvalue()
  assert line.startswith(
      "epoch 3/10: train loss 0.8300 = mse 0.8000 + L2 0.0300, rmse 0.8940 "
      "| validation loss 0.9500 = mse 0.9200 + L2 0.0300, rmse 0.9590 | ")
  assert logger.history[0]["l2"] == pytest.approx(0.03)
  assert logger.history[0]["val_l2"] == pytest.approx(0.03)
  assert logger.history[0]["epoch"] == 3


def test_early_stopping_without_held_out_rows_is_a_usage_error(
    tmp_path, capsys):
  with pytest.raises(config_lib.ConfigError, match="validation_fraction"):
    config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                             spec_path="s", early_stopping_patience=2)
  assert task.run(["--spec", SPEC, "--preprocessed", str(tmp_path),
                   "--model_dir", str(tmp_path / "m"),
                   "--early_stopping_patience", "2"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "the test set" in err


def test_train_stops_early_keeps_the_best_epoch_and_tests_once(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  # A learning rate this high overfits u1 within a few epochs.
  args = config_lib.flag_parser().parse_args([
      "--spec", SPEC, "--preprocessed", ml100k_preprocessed,
      "--model_dir", model_dir, "--env", f"ML100K_DIR={ml100k_dir}",
      "--model_type", "mf", "--mf_dim", "32", "--l2_user", "0",
      "--l2_item", "0", "--learning_rate", "0.03", "--batch_size", "1024",
      "--epochs", "8", "--validation_fraction", "0.1",
      "--early_stopping_patience", "1", "--no-export"])
  result = task.train(task.config_from_args(args))
  report = result.report
  history = report["train_history"]
  values = [epoch["val_rmse"] for epoch in history]
  best = int(np.argmin(values)) + 1
  assert report["best_epoch"] == best
  assert report["epochs_run"] == len(history) == best + 1 < 8
  assert report["early_stopping"]["stopped_at_epoch"] == best + 1
  # The model holds the best epoch's weights: evaluated again after
  # training, the held-out rows score what that epoch's validation did.
  assert report["validation_metrics"]["rmse"] == pytest.approx(
      values[best - 1], abs=1e-4)
  assert report["validation_metrics"]["examples"] + report[
      "train_examples"] == 80000
  assert report["metrics"]["examples"] == 20000  # u1.test, once
  assert report["baseline"]["test"]["rmse"] > report["metrics"]["rmse"]
  paths = layout.ModelLayout(model_dir)
  for path in (paths.report, paths.model_card, paths.training_curve):
    assert os.path.exists(path), path
  assert not os.path.exists(paths.backup_fingerprint)
