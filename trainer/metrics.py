"""Metrics of a model: RMSE/MAE (regression) or AUC/log loss (binary).

`metrics_from_predictions` is the one definition of every metric the
project reports; `evaluate_model` scores a Keras model in memory
(`evaluate_with_baseline` also scores the global-mean predictor on the same
rows) and
`evaluate_export` an exported SavedModel through its `serving_transformed`
signature. METRICS says which way each metric improves, for everything
that picks by a metric (tuning, the retraining gate).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from core import outputs
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import serving
from transforms.spec import LABEL_KEY

# Metric -> "minimize" or "maximize" (defined TF-free in trainer/config.py).
METRICS = config_lib.METRICS


def lower_is_better(metric: str) -> bool:
  """Whether a smaller value of `metric` is better (unknown ones: higher)."""
  return METRICS.get(metric) == "minimize"


def default_metric(task: str) -> str:
  """The metric a task is scored by: rmse for regression, auc for binary."""
  return "auc" if task == "binary" else "rmse"


def metrics_from_predictions(labels: np.ndarray, predictions: np.ndarray,
                             task: str) -> Dict[str, float]:
  """Computes the task's metrics.

  Args:
    labels: [n] true labels.
    predictions: [n] predicted ratings (regression) or probabilities.
    task: "regression" or "binary".

  Returns:
    regression: rmse, mae, mse, examples; binary: auc, log_loss, examples.
  """
  labels = np.asarray(labels, np.float64).reshape(-1)
  predictions = np.asarray(predictions, np.float64).reshape(-1)
  if labels.shape != predictions.shape:
    raise ValueError(f"{labels.shape[0]} labels but {predictions.shape[0]} "
                     f"predictions")
  result: Dict[str, float] = {"examples": int(labels.size)}
  if task == "binary":
    # Imported here: importing scikit-learn is a noticeable share of the
    # trainer's start-up, and only binary tasks need it.
    from sklearn import metrics as sk_metrics
    probabilities = np.clip(predictions, 1e-7, 1 - 1e-7)
    result["log_loss"] = float(-np.mean(
        labels * np.log(probabilities)
        + (1 - labels) * np.log(1 - probabilities)))
    result["auc"] = (float(sk_metrics.roc_auc_score(labels, predictions))
                     if len(np.unique(labels)) > 1 else float("nan"))
    return result
  errors = predictions - labels
  result["mse"] = float(np.mean(errors ** 2))
  result["rmse"] = float(np.sqrt(result["mse"]))
  result["mae"] = float(np.mean(np.abs(errors)))
  return result


def _labels_and_predictions(model, dataset: tf.data.Dataset
                           ) -> Tuple[np.ndarray, np.ndarray]:
  @tf.function(reduce_retracing=True)
  def predict(features):
    return model(features, training=False)

  labels, predictions = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
  for features, label in dataset:
    predictions.append(predict(features).numpy().reshape(-1))
    labels.append(label.numpy().reshape(-1))
  return np.concatenate(labels), np.concatenate(predictions)


def evaluate_model(model, dataset: tf.data.Dataset, task: str
                  ) -> Dict[str, float]:
  """Metrics of a Keras model (inference mode) on (features, label) batches.

  Args:
    model: a model from trainer.models.build_model.
    dataset: finite batches of (features dict, label).
    task: "regression" or "binary".

  Returns:
    See metrics_from_predictions.
  """
  return metrics_from_predictions(*_labels_and_predictions(model, dataset),
                                  task)


def evaluate_with_baseline(model, dataset: tf.data.Dataset, task: str,
                           label_mean: float
                          ) -> Tuple[Dict[str, float], Dict[str, float]]:
  """A model's metrics and the global-mean predictor's, on the same rows.

  Args:
    model: a model from trainer.models.build_model.
    dataset: finite batches of (features dict, label).
    task: "regression" or "binary".
    label_mean: the training rows' mean label, the baseline's prediction
      for every row.

  Returns:
    (the model's metrics, the baseline's), see metrics_from_predictions.
  """
  labels, predictions = _labels_and_predictions(model, dataset)
  baseline = np.full(labels.shape, label_mean, np.float64)
  return (metrics_from_predictions(labels, predictions, task),
          metrics_from_predictions(labels, baseline, task))


def evaluate_export(export_dir: str, preprocessed_dir: str, split: str,
                    task: str, batch_size: int = 4096) -> Dict[str, float]:
  """Metrics of an exported SavedModel on a split's transformed TFRecords.

  Args:
    export_dir: a SavedModel from trainer.serving.export_saved_model.
    preprocessed_dir: a finished preprocessing output.
    split: the split to read (e.g. "eval").
    task: "regression" or "binary".
    batch_size: examples per call.

  Returns:
    See metrics_from_predictions.
  """
  outputs.require_finished_output(preprocessed_dir)
  files = data_lib.list_shards(preprocessed_dir, split)
  loaded = tf.saved_model.load(export_dir)
  if serving.SERVING_TRANSFORMED not in loaded.signatures:
    raise ValueError(f"{export_dir!r} has no {serving.SERVING_TRANSFORMED!r} "
                     f"signature; was it exported by `embeddings train`?")
  signature = loaded.signatures[serving.SERVING_TRANSFORMED]
  label_spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.float32)}
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(
      batch_size)
  labels, predictions = [], []
  for records in dataset:
    labels.append(tf.io.parse_example(records, label_spec)[LABEL_KEY].numpy())
    output = signature(examples=records)[serving.PREDICTIONS]
    predictions.append(output.numpy().reshape(-1))
  return metrics_from_predictions(np.concatenate(labels),
                                  np.concatenate(predictions), task)


def evaluate_raw(export_dir: str, examples: np.ndarray, labels: np.ndarray,
                 task: str, batch_size: int = 4096) -> Dict[str, float]:
  """Metrics of an exported model on raw examples (its serving signature).

  Each model sees the rows through its own transform graph, so models with
  different vocabularies are compared on the same rows.

  Args:
    export_dir: a SavedModel written by `embeddings train`.
    examples: serialized raw tf.Examples.
    labels: their labels.
    task: regression or binary.
    batch_size: examples per call.

  Returns:
    See metrics_from_predictions.
  """
  serve = tf.saved_model.load(export_dir).signatures[serving.SERVING_DEFAULT]
  predictions = []
  for start in range(0, len(examples), batch_size):
    chunk = tf.constant(list(examples[start:start + batch_size]),
                        dtype=tf.string)
    predictions.append(
        serve(examples=chunk)[serving.PREDICTIONS].numpy().reshape(-1))
  return metrics_from_predictions(labels, np.concatenate(predictions), task)
