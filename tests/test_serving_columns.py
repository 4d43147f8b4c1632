"""The raw serving signature parses only the columns the model reads."""

import csv
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import serving
from trainer import task
from transforms import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
ML100K_SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")
TRAIN_FLAGS = {"epochs": 1, "batch_size": 256, "verbose": 0,
               "checkpoint_every": 0, "learning_rate": 0.05}


def _read_csv(path):
  with open(path, encoding="utf-8", newline="") as handle:
    return list(csv.DictReader(handle))


def _joined_rows(data_dir, limit):
  """The first ratings joined with their user and item, as raw columns."""
  users = {row["user_id"]: row
           for row in _read_csv(os.path.join(data_dir, "users.csv"))}
  items = {row["item_id"]: row
           for row in _read_csv(os.path.join(data_dir, "items.csv"))}
  rows = []
  for rating in _read_csv(os.path.join(data_dir, "ratings.csv"))[:limit]:
    row = {**rating, **users[rating["user_id"]], **items[rating["item_id"]]}
    row["age"] = int(row["age"])
    row["timestamp"] = int(row["timestamp"])
    rows.append(row)
  return rows


@pytest.fixture(scope="module")
def models(synthetic_data, synthetic_preprocessed, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("serving_columns"))
  run = types.SimpleNamespace()
  data, preprocessed = synthetic_data, synthetic_preprocessed
  run.spec = loader.load_spec(SPEC, {"DATA_DIR": data})
  run.rows = _joined_rows(data, 40)
  for name, flags in (("mf", {"model_type": "mf"}),
                      ("dnn", {"model_type": "dnn", "hidden_units": (4,),
                               "features": ("user", "movie",
                                            "age_bucket")})):
    config = config_lib.build_config(
        run.spec, {**TRAIN_FLAGS, **flags}, preprocessed_dir=preprocessed,
        model_dir=os.path.join(root, name), spec_path=SPEC,
        spec_env=(("DATA_DIR", data),))
    result = task.train(config, run.spec)
    setattr(run, name, tf.saved_model.load(result.report["export_dir"]))
  return run


def _serve(loaded, examples):
  signature = loaded.signatures[serving.SERVING_DEFAULT]
  return signature(examples=tf.constant(examples))[
      serving.PREDICTIONS].numpy()


def test_serving_columns_follow_sources_crosses_flags_and_time():
  spec = loader.load_spec(SPEC, {"DATA_DIR": "unused"})
  assert serving.serving_columns(spec, ["user", "movie"]) == (
      "user_id", "item_id")
  assert serving.serving_columns(spec, ["occupation_x_genre"]) == (
      "occupation", "genres")
  assert serving.serving_columns(spec, ["day_x_hour"]) == ("timestamp",)
  assert serving.serving_columns(spec, ["age_x_gender", "user"]) == (
      "user_id", "gender", "age")
  ml100k = loader.load_spec(ML100K_SPEC, {"ML100K_DIR": "unused",
                                          "ML100K_FOLD": "u1"})
  genre_flags = tuple(column for column, _ in
                      ml100k.feature("genres").flag_columns)
  assert serving.serving_columns(ml100k, ["genres"]) == genre_flags


def test_mf_scores_examples_holding_only_user_and_item(models):
  complete = serving.raw_examples(models.spec, models.rows)
  minimal = serving.raw_examples(models.spec, models.rows,
                                 columns=("user_id", "item_id"))
  assert set(tf.train.Example.FromString(minimal[0]).features.feature) == {
      "user_id", "item_id"}
  expected = _serve(models.mf, complete)
  np.testing.assert_array_equal(_serve(models.mf, minimal), expected)
  assert np.std(expected) > 0


def test_dnn_needs_the_columns_its_features_read(models):
  used = serving.raw_examples(models.spec, models.rows,
                              columns=("user_id", "item_id", "age"))
  np.testing.assert_array_equal(
      _serve(models.dnn, used),
      _serve(models.dnn, serving.raw_examples(models.spec, models.rows)))
  without_age = serving.raw_examples(models.spec, models.rows,
                                     columns=("user_id", "item_id"))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="Feature: age .* is required"):
    _serve(models.dnn, without_age)
