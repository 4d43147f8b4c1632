"""trainer/report.py: the model card, the training curve and the summary
line, all drawn from a run's report alone (a small hand-made one here)."""

import io

from matplotlib import image as image_lib
import pytest

from core import layout
from trainer import report as report_lib

CONFIG = {"preprocessed_dir": "out/pre", "model_dir": "out/model",
          "spec_path": "configs/movielens100k.yaml", "spec_env": [],
          "model_type": "dnn", "hybrid": True, "hidden_units": [64, 32],
          "learning_rate": 0.01, "epochs": 4, "verbose": 2,
          "validation_fraction": 0.1, "early_stopping_patience": 2}


def _report(**changes):
  report = {
      "model_type": "dnn", "task": "regression", "metric": "rmse",
      "model_dir": "out/model", "export_dir": None,
      "metrics": {"rmse": 0.921, "mae": 0.72, "mse": 0.848,
                  "examples": 20000},
      "validation_metrics": {"rmse": 0.912, "mae": 0.71, "mse": 0.832,
                             "examples": 8000},
      "baseline": {"validation": {"rmse": 1.12, "mae": 0.94, "mse": 1.2544,
                                  "examples": 8000},
                   "test": {"rmse": 1.154, "mae": 0.96, "mse": 1.3317,
                            "examples": 20000}},
      "eval_split": "eval", "validation_fraction": 0.1,
      "validation_examples": 8000, "train_examples": 72000,
      "label_mean": 3.5281, "epochs": 4, "epochs_run": 4, "best_epoch": 2,
      "early_stopping": {"patience": 2, "monitor": "val_rmse",
                         "stopped_at_epoch": 4},
      "steps": 1128, "batch_size": 256, "fit_seconds": 12.4,
      "features": {"user": {"size": 944, "dim": 8},
                   "movie": {"size": 1651, "dim": 8},
                   "age": {"size": 0, "dim": None}},
      "train_history": [
          {"epoch": e, "rmse": r, "val_rmse": v}
          for e, r, v in ((1, 1.0, 0.95), (2, 0.9, 0.912), (3, 0.85, 0.93),
                          (4, 0.8, 0.94))],
      "config": CONFIG,
  }
  report.update(changes)
  return report


def test_changed_settings_are_the_training_fields_off_their_defaults():
  # verbose, model_dir and the paths change nothing the model learns.
  assert report_lib.changed_settings(CONFIG) == {
      "model_type": "dnn", "hybrid": True, "learning_rate": 0.01,
      "epochs": 4, "validation_fraction": 0.1, "early_stopping_patience": 2}


def test_model_card_states_data_features_settings_metrics_and_epoch():
  card = report_lib.model_card(_report())
  lines = card.splitlines()
  assert lines[0] == "# Model card: dnn (regression)"
  assert "- training rows: 72,000" in lines
  assert ("- validation rows: 8,000 (a 0.1 hash-selected share of the "
          "training split, held out)") in lines
  assert ("- test rows: 20,000 (the `eval` split, evaluated once after "
          "training)") in lines
  assert "| user | 944 | 8 |" in lines
  assert "| age | 0 | numeric |" in lines
  assert "- learning_rate: 0.01" in lines and "- hybrid: True" in lines
  assert not any(line.startswith("- verbose") for line in lines)
  assert ("| rows | examples | RMSE | global mean RMSE | MAE | global mean "
          "MAE |") in lines
  assert "| validation | 8,000 | 0.9120 | 1.1200 | 0.7100 | 0.9400 |" in lines
  assert ("| test (eval split) | 20,000 | 0.9210 | 1.1540 | 0.7200 | 0.9600 "
          "|") in lines
  assert ("- early stopping on validation RMSE (patience 2): the model "
          "holds epoch 2's weights") in lines


def test_model_card_without_validation_rows_or_early_stopping():
  card = report_lib.model_card(_report(
      validation_metrics=None, validation_examples=0, early_stopping=None,
      best_epoch=4, baseline={"validation": None, "test": _report()[
          "baseline"]["test"]}))
  assert "validation rows" not in card and "| validation |" not in card
  assert "- the model is the last epoch's (4)" in card.splitlines()


def test_summary_line_names_the_scores_and_where_everything_is():
  assert report_lib.summary_line(_report()) == (
      "embeddings train: dnn on 72,000 rows, 4 epochs (best 2): validation "
      "RMSE 0.912, test RMSE 0.921 (global mean 1.154) -> out/model "
      "(report.json, model_card.md, training_curve.png; tensorboard "
      "--logdir out/model/logs)")
  assert report_lib.summary_line(_report(
      validation_metrics=None, early_stopping=None,
      export_dir="out/model/export")) == (
          "embeddings train: dnn on 72,000 rows, 4 epochs: test RMSE 0.921 "
          "(global mean 1.154) -> out/model (report.json, model_card.md, "
          "training_curve.png, export; tensorboard --logdir out/model/logs)")


def test_training_curve_is_a_png_of_the_figure_size(tmp_path):
  report = _report()
  out = layout.ModelLayout(str(tmp_path / "model"))
  report_lib.write_people_files(report, out)
  with open(out.training_curve, "rb") as handle:
    picture = image_lib.imread(io.BytesIO(handle.read()), format="png")
  assert picture.shape[:2] == (450, 700)
  with open(out.model_card) as handle:
    assert handle.read() == report_lib.model_card(report)


@pytest.mark.parametrize("metric, name", [("rmse", "RMSE"), ("auc", "AUC"),
                                          ("log_loss", "log loss")])
def test_metric_names_for_people(metric, name):
  assert report_lib.metric_name(metric) == name
