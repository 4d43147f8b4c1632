"""The trainer end to end on MovieLens 100K fold u1 (the pipeline's output).

Shares one trained model (the `trained_ml100k` session fixture in
conftest.py): a dnn with every side feature and the hybrid MF term.
"""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from core import layout
from core import outputs
from trainer import data as data_lib
from trainer import metrics as metrics_lib
from trainer import serving
from trainer import task
from workflows import folds


def _eval_labels(preprocessed):
  dataset = data_lib.tfrecord_dataset(
      preprocessed, "eval", data_lib.InputOptions(batch_size=4096), [])
  return np.concatenate([label.numpy() for _, label in dataset])


def test_model_beats_the_global_mean_predictor(trained_ml100k,
                                               ml100k_preprocessed):
  report = trained_ml100k.report
  labels = _eval_labels(ml100k_preprocessed)
  baseline = float(np.sqrt(np.mean((labels - report["label_mean"]) ** 2)))
  assert baseline > 1.1
  assert report["metrics"]["examples"] == labels.size
  assert report["metrics"]["rmse"] < 1.0
  assert report["metrics"]["rmse"] < baseline - 0.12


def test_report_steps_and_tensorboard_logs(trained_ml100k):
  report = trained_ml100k.report
  paths = layout.ModelLayout(report["model_dir"])
  with open(paths.report) as handle:
    on_disk = json.load(handle)
  assert on_disk["metrics"] == report["metrics"]
  assert report["steps"] == report["planned_steps"] == (
      report["epochs"] * report["steps_per_epoch"])
  assert report["examples_per_sec"] > 0
  assert len(report["train_history"]) == report["epochs"]
  assert all(epoch["examples_per_sec"] > 0
             for epoch in report["train_history"])
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(paths.logs, "*", "events.out.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  assert {"epoch_loss", "epoch_rmse", "epoch_mae"} <= tags


def _eval_records(preprocessed, limit=None):
  files = data_lib.list_shards(preprocessed, "eval")
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
  if limit:
    dataset = dataset.take(limit)
  return np.array([r.numpy() for r in dataset], dtype=object)


def _keras_predictions(model, preprocessed, records):
  spec = tft.TFTransformOutput(preprocessed).transformed_feature_spec()
  features = tf.io.parse_example(records, {
      name: spec[name] for name in model.input_names})
  return model(features, training=False).numpy()


def test_saved_model_reloads_with_equal_predictions(trained_ml100k,
                                                    ml100k_preprocessed):
  records = _eval_records(ml100k_preprocessed, limit=500)
  expected = _keras_predictions(trained_ml100k.model, ml100k_preprocessed,
                                records)
  loaded = tf.saved_model.load(trained_ml100k.report["export_dir"])
  served = loaded.signatures[serving.SERVING_TRANSFORMED](
      examples=tf.constant(records))[serving.PREDICTIONS].numpy()
  np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)
  # The trainer's Keras classes are registered: no custom_objects needed.
  revived = keras.models.load_model(trained_ml100k.report["export_dir"])
  np.testing.assert_allclose(
      _keras_predictions(revived, ml100k_preprocessed, records), expected,
      rtol=1e-6, atol=1e-6)


def _read_table(path, delimiter, columns, encoding="utf-8"):
  with open(path, encoding=encoding, newline="") as handle:
    return [dict(zip(columns, row))
            for row in csv.reader(handle, delimiter=delimiter) if row]


def _raw_test_rows(spec, ml100k_dir, limit):
  """u1.test rows joined with u.user and u.item, typed as the spec says."""
  ratings = spec.main_table
  rows = _read_table(os.path.join(ml100k_dir, "u1.test"), "\t",
                     ratings.columns)[:limit]
  for join in spec.joins:
    side = spec.inputs[join.table]
    by_key = {r[side.key]: r for r in _read_table(
        os.path.join(ml100k_dir, os.path.basename(side.path)), side.delimiter,
        side.columns, side.encoding)}
    for row in rows:
      row.update(by_key[row[join.by]])
  casts = {"string": str, "int": int, "float": float}
  types = spec.raw_column_types()
  return [{c: casts[t](row[c]) for c, t in types.items()} for row in rows]


def test_raw_example_signature_equals_transformed_feature_predictions(
    trained_ml100k, ml100k_preprocessed, ml100k_dir):
  spec = task.load_spec(trained_ml100k.config)
  rows = _raw_test_rows(spec, ml100k_dir, limit=300)
  # Key the pipeline's transformed eval rows by (user, movie) token: a
  # rating is unique per pair.
  output = tft.TFTransformOutput(ml100k_preprocessed)
  user_vocab = [t.decode() for t in output.vocabulary_by_name("user")]
  movie_vocab = [t.decode() for t in output.vocabulary_by_name("movie")]
  records = _eval_records(ml100k_preprocessed)
  ids = tf.io.parse_example(records, {
      "user": tf.io.FixedLenFeature([], tf.int64),
      "movie": tf.io.FixedLenFeature([], tf.int64)})

  def token(vocab, i):
    return vocab[i] if i < len(vocab) else None

  by_pair = {(token(user_vocab, u), token(movie_vocab, m)): index
             for index, (u, m) in enumerate(zip(ids["user"].numpy(),
                                                ids["movie"].numpy()))}
  matched = [by_pair[(r["user_id"], r["item_id"])] for r in rows]
  expected = _keras_predictions(trained_ml100k.model, ml100k_preprocessed,
                                records[matched])
  loaded = tf.saved_model.load(trained_ml100k.report["export_dir"])
  # The label column is not sent: serving does not need it.
  examples = serving.raw_examples(spec, rows)
  served = loaded.signatures[serving.SERVING_DEFAULT](
      examples=tf.constant(examples))[serving.PREDICTIONS].numpy()
  np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
  assert np.std(served) > 0.1


def test_evaluate_command_matches_the_training_report(trained_ml100k,
                                                      ml100k_preprocessed,
                                                      tmp_path, capsys):
  output = tmp_path / "metrics.json"
  assert folds.run(["--model_dir", trained_ml100k.report["model_dir"],
                       "--preprocessed", ml100k_preprocessed,
                       "--output", str(output)]) == 0
  metrics = json.loads(output.read_text())["metrics"]
  expected = trained_ml100k.report["metrics"]
  assert metrics["examples"] == expected["examples"]
  assert metrics["rmse"] == pytest.approx(expected["rmse"], abs=1e-5)
  assert metrics["mae"] == pytest.approx(expected["mae"], abs=1e-5)
  summary = capsys.readouterr().out
  assert summary.startswith(f"embeddings evaluate: rmse {metrics['rmse']:.4f}")
  assert str(output) in summary


def _short_run(ml100k_preprocessed, ml100k_dir, model_dir, **overrides):
  args = task.flag_parser().parse_args([
      "--spec", "configs/movielens100k.yaml",
      "--preprocessed", ml100k_preprocessed, "--model_dir", str(model_dir),
      "--env", f"ML100K_DIR={ml100k_dir}"])
  config = task.config_from_args(args)
  return task.train(dataclasses.replace(config, **overrides))


def test_numpy_and_tfrecord_inputs_train_the_same_model(
    ml100k_preprocessed, ml100k_dir, tmp_path):
  # Every feature, so sparse (tokens, multi-valued crosses) inputs are
  # compared too.
  common = dict(model_type="dnn", hybrid=True, epochs=1, steps_per_epoch=30,
                shuffle=False, export=False, verbose=0, seed=7)
  streamed = _short_run(ml100k_preprocessed, ml100k_dir, tmp_path / "a",
                        input_mode="tfrecord", **common)
  in_memory = _short_run(ml100k_preprocessed, ml100k_dir, tmp_path / "b",
                         input_mode="numpy", **common)
  weights_a = streamed.model.get_weights()
  weights_b = in_memory.model.get_weights()
  assert len(weights_a) == len(weights_b)
  for a, b in zip(weights_a, weights_b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert streamed.report["steps"] == in_memory.report["steps"] == 30
  assert streamed.report["metrics"]["rmse"] == pytest.approx(
      in_memory.report["metrics"]["rmse"], abs=1e-5)


def test_unfinished_or_missing_preprocessing_output_is_refused(
    ml100k_preprocessed, ml100k_dir, tmp_path, capsys):
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  for name in ("feature_info.json",):
    (unfinished / name).write_bytes(
        open(os.path.join(ml100k_preprocessed, name), "rb").read())
  with pytest.raises(outputs.UnfinishedOutputError, match="_SUCCESS"):
    _short_run(str(unfinished), ml100k_dir, tmp_path / "m")
  flags = ["--spec", "configs/movielens100k.yaml", "--model_dir",
           str(tmp_path / "m"), "--env", f"ML100K_DIR={ml100k_dir}"]
  assert task.run(flags + ["--preprocessed", str(tmp_path / "nowhere")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert task.run(flags + ["--preprocessed", str(unfinished)]) == 2
  assert "_SUCCESS" in capsys.readouterr().err
  assert task.run(flags + ["--preprocessed", ml100k_preprocessed,
                           "--learning_rate", "0"]) == 2
  assert "learning_rate" in capsys.readouterr().err
  assert not (tmp_path / "m").exists()


def test_bad_spec_model_section_is_refused_before_training(
    ml100k_preprocessed, tmp_path, capsys):
  text = open("configs/movielens100k.yaml").read().replace(
      "  item_feature: movie", "  item_feature: movie\n  hidden_unit: [8]")
  (tmp_path / "bad.yaml").write_text(text)
  assert task.run(["--spec", str(tmp_path / "bad.yaml"), "--preprocessed",
                   ml100k_preprocessed, "--model_dir",
                   str(tmp_path / "m")]) == 2
  assert "hidden_unit" in capsys.readouterr().err
  assert task.run(["--spec", str(tmp_path / "missing.yaml"), "--preprocessed",
                   ml100k_preprocessed, "--model_dir",
                   str(tmp_path / "m")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_fold_summary_is_mean_and_population_std():
  summary = folds.summarize_folds({
      "u1": {"rmse": 0.90, "mae": 0.70, "examples": 10},
      "u2": {"rmse": 0.94, "mae": 0.74, "examples": 10}})
  assert summary["rmse"]["mean"] == pytest.approx(0.92)
  assert summary["rmse"]["std"] == pytest.approx(0.02)
  assert "examples" not in summary
  text = folds.format_fold_table(
      {"u1": {"rmse": 0.9, "mae": 0.7}, "u2": {"rmse": 0.94, "mae": 0.74}},
      ["rmse", "mae"])
  assert text.splitlines()[-1].split()[:4] == ["mean", "0.9200", "+-",
                                                "0.0200"]


def test_metrics_from_predictions_exact_values():
  metrics = metrics_lib.metrics_from_predictions(
      np.array([1.0, 3.0, 5.0]), np.array([2.0, 3.0, 3.0]), "regression")
  assert metrics["mse"] == pytest.approx(5 / 3)
  assert metrics["rmse"] == pytest.approx(np.sqrt(5 / 3))
  assert metrics["mae"] == pytest.approx(1.0)
  binary = metrics_lib.metrics_from_predictions(
      np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), "binary")
  assert binary["auc"] == pytest.approx(0.75)
  assert binary["log_loss"] == pytest.approx(
      -np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
