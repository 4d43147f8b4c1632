"""Frozen transfer learning end to end: two generated "cities".

Model A trains on city 1; `embeddings export` writes its tables; model B
trains on city 2 (more users and movies, so its vocabularies differ) with
its `day_x_hour` cross and `movie` tables loaded `from_checkpoint` frozen,
and its `user` table warm-started with the carried rows frozen. One run of
the whole pipeline serves every test here.
"""

import dataclasses
import os
import types

import numpy as np
import pytest
import tensorflow as tf
import yaml

from core import artifacts
from core import layout
from core import outputs
from pipelines import generate
from pipelines import preprocess
from trainer import config as config_lib
from trainer import export
from trainer import models
from trainer import task
from trainer import transfer
from trainer import warmstart
from transforms import feature_info as feature_info_lib
from transforms import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
ROWS = "3000"
TRAIN_FLAGS = {"model_type": "dnn", "epochs": 1, "batch_size": 256,
               "hidden_units": (8,), "learning_rate": 0.05, "verbose": 0,
               "checkpoint_every": 0, "shuffle_buffer": 4096}


def _spec_with(root, name, changes):
  """synthetic.yaml with per-feature field changes, written under root."""
  with open(SPEC, encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  for feature in raw["features"]:
    feature.update(changes.get(feature["name"], {}))
  path = os.path.join(root, f"{name}.yaml")
  with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(raw, handle)
  return path


def _config(spec_path, city, preprocessed, model_dir, **flags):
  env = (("DATA_DIR", city),)
  spec = loader.load_spec(spec_path, dict(env))
  return spec, config_lib.build_config(
      spec, {**TRAIN_FLAGS, **flags}, preprocessed_dir=preprocessed,
      model_dir=model_dir, spec_path=spec_path, spec_env=env)


def _table(model, feature):
  return models.embedding_table(model, feature).embeddings.numpy()


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cities"))
  run = types.SimpleNamespace(root=root)
  run.city1, run.city2 = (os.path.join(root, c) for c in ("city1", "city2"))
  generate.run(["--output", run.city1, "--rows", ROWS, "--seed", "1"])
  # More users and movies in city 2: new tokens for warm start and transfer.
  generate.run(["--output", run.city2, "--rows", ROWS, "--seed", "2",
                "--users", "140", "--items", "130"])
  run.pre1, run.pre2 = (os.path.join(root, p) for p in ("pre1", "pre2"))
  for city, pre in ((run.city1, run.pre1), (run.city2, run.pre2)):
    preprocess.run(["--spec", SPEC, "--output", pre,
                    "--env", f"DATA_DIR={city}"])
    assert outputs.is_finished(pre)

  run.model_a = os.path.join(root, "model_a")
  _, config_a = _config(SPEC, run.city1, run.pre1, run.model_a)
  run.result_a = task.train(config_a)
  run.export = os.path.join(root, "embeddings_a")
  assert export.run(["--model_dir", run.model_a, "--output",
                        run.export]) == 0
  run.tables_a = artifacts.load_tables(run.export)

  run.spec_b_path = _spec_with(root, "city2", {
      name: {"from_checkpoint": {"path": os.path.join(run.export, name),
                                 "tensor": f"{name}/embeddings",
                                 "trainable": False}}
      for name in ("day_x_hour", "movie")})
  run.spec_b, config_b = _config(run.spec_b_path, run.city2, run.pre2,
                                 os.path.join(root, "model_b"), export=False)
  run.loaded = transfer.pretrained_tables(run.spec_b, run.pre2)
  run.warm = warmstart.warm_start_tables(
      run.export, run.pre2, spec=run.spec_b, features=["user"],
      freeze_carried=True)
  run.result_b = task.train(config_b, spec=run.spec_b, pretrained=run.warm)
  return run


def test_export_equals_the_trained_model(cities):
  assert os.path.exists(os.path.join(cities.export, "_SUCCESS"))
  model = cities.result_a.model
  for name in ("user", "movie", "day_x_hour", "genres", "occupation_x_genre"):
    np.testing.assert_array_equal(cities.tables_a[name].vectors,
                                  _table(model, name))
  movie = cities.tables_a["movie"]
  vocabulary = feature_info_lib.read_vocabulary(cities.pre1, "movie")
  assert movie.tokens == vocabulary + ["[OOV_0]"]
  assert movie.metadata["vocabulary_size"] == len(vocabulary)
  assert movie.metadata["model_version"].startswith("sha256:")
  assert movie.metadata["data_version"] == feature_info_lib.data_version(
      cities.pre1)
  assert movie.metadata["eval_metrics"]["rmse"] > 0
  bias = cities.tables_a["bias_movie"]
  assert bias.tokens == movie.tokens and bias.metadata["table"] == "bias"
  np.testing.assert_array_equal(
      bias.vectors, model.get_layer("bias_movie").embeddings.numpy())


def test_feature_columns_read_the_exported_movie_table(cities):
  movie = cities.tables_a["movie"]
  directory = os.path.join(cities.export, "movie")
  queries = [movie.tokens[5], movie.tokens[0], movie.tokens[-2]]
  graph = tf.Graph()
  with graph.as_default():
    columns = tf.compat.v1.feature_column
    column = columns.categorical_column_with_vocabulary_file(
        "movie", os.path.join(directory, layout.VOCAB_FILE),
        vocabulary_size=movie.metadata["vocabulary_size"],
        num_oov_buckets=movie.metadata["num_oov_buckets"])
    embedded = columns.embedding_column(
        column, movie.dimension, ckpt_to_load_from=directory,
        tensor_name_in_ckpt="movie/embeddings", trainable=False)
    looked_up = columns.input_layer(
        {"movie": tf.constant([[q] for q in queries])}, [embedded])
    with tf.compat.v1.Session(graph=graph) as session:
      session.run([tf.compat.v1.global_variables_initializer(),
                   tf.compat.v1.tables_initializer()])
      values = session.run(looked_up)
  np.testing.assert_array_equal(values, movie.vectors[[5, 0, movie.size - 2]])


def test_cross_is_loaded_row_for_row_and_stays_frozen(cities):
  exported = cities.tables_a["day_x_hour"].vectors
  loaded = cities.loaded["day_x_hour"]
  assert not loaded.trainable
  assert cities.loaded.reports["day_x_hour"].by == "row"
  np.testing.assert_array_equal(loaded.values, exported)
  np.testing.assert_array_equal(_table(cities.result_b.model, "day_x_hour"),
                                exported)


def test_movie_is_mapped_by_token_and_stays_frozen(cities):
  old = cities.tables_a["movie"]
  new_tokens = feature_info_lib.read_vocabulary(cities.pre2, "movie") + [
      "[OOV_0]"]
  old_rows = old.row_of()
  moved = [t for row, t in enumerate(new_tokens)
           if t in old_rows and old_rows[t] != row]
  assert moved, "the two cities' vocabularies should order movies differently"
  fresh = [t for t in new_tokens if t not in old_rows]
  assert fresh, "city 2 should have movies city 1 lacks"
  values = cities.loaded["movie"].values
  mean = old.vectors.astype(np.float64).mean(axis=0).astype(np.float32)
  for row, token in enumerate(new_tokens):
    expected = old.vectors[old_rows[token]] if token in old_rows else mean
    np.testing.assert_array_equal(values[row], expected)
  report = cities.loaded.reports["movie"]
  assert (report.kept, report.new) == (len(new_tokens) - len(fresh),
                                       len(fresh))
  np.testing.assert_array_equal(_table(cities.result_b.model, "movie"), values)


def test_warm_started_rows_frozen_new_rows_trained(cities):
  start = cities.warm["user"]
  carried = start.frozen_rows
  assert carried.any() and not carried.all()
  trained = _table(cities.result_b.model, "user")
  np.testing.assert_array_equal(trained[carried], start.values[carried])
  # Every new user is in city 2's training split, so each new row moved.
  assert not np.any(np.all(trained[~carried] == start.values[~carried],
                           axis=1))
  report = cities.warm.reports["user"]
  assert report.kept == int(carried.sum())
  assert report.new == int((~carried).sum())
  assert report.dropped == report.old_size - report.kept


def _transfer_error(cities, name, changes):
  path = _spec_with(cities.root, name, changes)
  spec = loader.load_spec(path, {"DATA_DIR": cities.city2})
  with pytest.raises(transfer.TransferError) as error:
    transfer.pretrained_tables(spec, cities.pre2)
  return str(error.value)


def _source(path, tensor):
  return {"from_checkpoint": {"path": path, "tensor": tensor}}


def test_missing_tensor_lists_the_tensors_present(cities):
  path = os.path.join(cities.export, "day_x_hour")
  message = _transfer_error(cities, "missing", {
      "day_x_hour": _source(path, "day_x_hour/weights")})
  assert "'day_x_hour/weights' is not in checkpoint" in message
  assert "'day_x_hour/embeddings'" in message


def test_dimension_mismatch_names_both_dimensions(cities):
  cross = cities.tables_a["day_x_hour"]
  wide = artifacts.EmbeddingTable(
      name="day_x_hour", vectors=np.ones((cross.size, 9), np.float32),
      tokens=cross.tokens, metadata=dict(cross.metadata))
  path = wide.save(os.path.join(cities.root, "wide", "day_x_hour"))
  message = _transfer_error(cities, "wide", {
      "day_x_hour": _source(path, "day_x_hour/embeddings")})
  assert "dimension mismatch" in message
  assert f"embedding_dim {cross.dimension}" in message
  assert "has dimension 9" in message and path in message


def test_hash_and_vocabulary_mismatches_name_both_sides(cities):
  cross = cities.tables_a["day_x_hour"]
  other_hash = dict(cross.metadata["hash"], bucket_size=100)
  small = artifacts.EmbeddingTable(
      name="day_x_hour", vectors=cross.vectors[:100],
      tokens=cross.tokens[:100], metadata={**cross.metadata,
                                           "hash": other_hash})
  path = small.save(os.path.join(cities.root, "small", "day_x_hour"))
  message = _transfer_error(cities, "small", {
      "day_x_hour": _source(path, "day_x_hour/embeddings")})
  assert "hash parameters differ" in message
  assert '"bucket_size": 168' in message and '"bucket_size": 100' in message

  movie = cities.tables_a["movie"]
  foreign = dataclasses.replace(
      movie, tokens=[f"film{i}" for i in range(movie.size)])
  path = foreign.save(os.path.join(cities.root, "foreign", "movie"))
  message = _transfer_error(cities, "foreign", {
      "movie": _source(path, "movie/embeddings")})
  assert "no token in common" in message
  assert "'film0'" in message and "'m" in message


def test_trainer_reports_a_bad_checkpoint_clearly(cities, capsys):
  path = _spec_with(cities.root, "bad", {"day_x_hour": _source(
      os.path.join(cities.root, "nowhere"), "day_x_hour/embeddings")})
  status = task.run(["--spec", path, "--preprocessed", cities.pre2,
                     "--model_dir", os.path.join(cities.root, "model_bad"),
                     "--env", f"DATA_DIR={cities.city2}", "--model_type",
                     "dnn", "--epochs", "1", "--keras_verbose", "0"])
  assert status == 2
  assert "holds no TF checkpoint" in capsys.readouterr().err
