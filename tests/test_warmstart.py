"""Tests for warm start (trainer/warmstart.py): remap by token, row freezing."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tf_keras as keras

from core import artifacts
from trainer import config as config_lib
from trainer import models
from trainer import optimizers
from trainer import warmstart
from transforms import feature_info as feature_info_lib
from transforms import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OLD_TOKENS = ["a", "b", "c", "d", "[OOV_0]"]


def _old(tokens=OLD_TOKENS, dim=3, name="movie", metadata=None):
  vectors = (np.arange(len(tokens) * dim, dtype=np.float32).reshape(-1, dim)
             + 1.0) / 8.0
  return artifacts.EmbeddingTable(
      name=name, vectors=vectors, tokens=list(tokens),
      metadata=dict(metadata or {"kind": "vocabulary", "hash": None}))


def test_remap_by_token_with_reorder_drops_new_and_oov_rows():
  old = _old()
  # d and b reordered, a and c dropped, e new; OOV_0 carried, OOV_1 new.
  target = warmstart.TargetTable(
      name="movie", tokens=("d", "b", "e", "[OOV_0]", "[OOV_1]"), dimension=3)
  values, carried, report = warmstart.remap_table(old, target, new_rows="mean")
  mean = old.vectors.astype(np.float64).mean(axis=0).astype(np.float32)
  expected = np.stack([old.vectors[3], old.vectors[1], mean, old.vectors[4],
                       mean])
  np.testing.assert_array_equal(values, expected)
  assert values.dtype == np.float32
  assert carried.tolist() == [True, True, False, True, False]
  assert (report.kept, report.new, report.dropped) == (3, 2, 2)
  assert (report.old_size, report.new_size, report.by) == (5, 5, "token")


def test_new_rows_from_the_initializer():
  old = _old()
  target = warmstart.TargetTable(name="movie",
                                 tokens=("x", "a", "y", "[OOV_0]"))
  values, carried, _ = warmstart.remap_table(
      old, target, new_rows="initializer", initializer="glorot_uniform",
      seed=5)
  fresh = np.asarray(keras.initializers.GlorotUniform(seed=5)(shape=(4, 3)))
  np.testing.assert_array_equal(values[[0, 2]], fresh[[0, 2]])
  np.testing.assert_array_equal(values[[1, 3]], old.vectors[[0, 4]])
  assert carried.tolist() == [False, True, False, True]
  with pytest.raises(ValueError, match="new_rows must be one of"):
    warmstart.remap_table(old, target, new_rows="zeros")


def test_warm_start_from_an_export_with_row_freezing(tmp_path):
  _old().save(str(tmp_path / "movie"))
  _old(tokens=["0", "1", "2"], dim=2, name="day_of_week",
       metadata={"kind": "day_of_week", "hash": None}).save(
           str(tmp_path / "day_of_week"))
  tables = warmstart.warm_start_tables(
      str(tmp_path), {"movie": ["c", "z", "a", "[OOV_0]"]},
      freeze_carried=True)
  assert list(tables) == ["movie"]
  table = tables["movie"]
  old = _old()
  np.testing.assert_array_equal(table.values[[0, 2, 3]],
                                old.vectors[[2, 0, 4]])
  assert table.trainable
  assert table.frozen_rows.tolist() == [True, False, True, True]
  report = json.loads(tables.report_json())["movie"]
  assert (report["kept"], report["new"], report["dropped"]) == (3, 1, 2)
  unfrozen = warmstart.warm_start_tables(
      str(tmp_path), {"movie": ["c", "z", "a", "[OOV_0]"]})
  assert unfrozen["movie"].frozen_rows is None
  with pytest.raises(KeyError, match="no such table"):
    warmstart.warm_start_tables(str(tmp_path), {"movie": ["a"]},
                                features=["user"])


def test_hashed_tables_are_reused_row_for_row_only_when_parameters_match():
  hash_a = {"bucket_size": 4, "function": "f", "members": ["x", "y"]}
  old = _old(tokens=[artifacts.bucket_token(i) for i in range(4)],
             name="x_y", metadata={"kind": "cross", "hash": hash_a})
  same = warmstart.TargetTable(
      name="x_y", tokens=tuple(artifacts.bucket_token(i) for i in range(4)),
      dimension=3, kind="cross", hash=dict(hash_a))
  values, carried, report = warmstart.remap_table(old, same)
  np.testing.assert_array_equal(values, old.vectors)
  assert carried.all() and report.by == "row"
  other = dict(hash_a, members=["x", "z"])
  with pytest.raises(warmstart.RemapError) as error:
    warmstart.remap_table(old, dataclasses.replace(same, hash=other),
                          old_origin="run-1 artifacts")
  message = str(error.value)
  assert "hash parameters differ" in message
  assert '"z"' in message and '"y"' in message and "run-1 artifacts" in message
  bigger = warmstart.TargetTable(
      name="x_y", tokens=tuple(artifacts.bucket_token(i) for i in range(6)),
      kind="cross")
  with pytest.raises(warmstart.RemapError, match="6 rows.*has 4"):
    warmstart.remap_table(old, bigger)


def test_dimension_and_vocabulary_mismatch_errors_name_both_sides():
  old = _old()
  with pytest.raises(warmstart.RemapError) as error:
    warmstart.remap_table(
        old, warmstart.TargetTable(name="movie", tokens=("a",), dimension=8,
                                   origin="the new model"),
        old_origin="checkpoint X")
  assert "embedding_dim 8" in str(error.value)
  assert "checkpoint X has dimension 3" in str(error.value)
  with pytest.raises(warmstart.RemapError) as error:
    warmstart.remap_table(
        old, warmstart.TargetTable(name="movie", tokens=("p", "q"),
                                   origin="the new model"),
        old_origin="checkpoint X")
  assert "no token in common" in str(error.value)
  assert "'p'" in str(error.value) and "'a'" in str(error.value)


def test_carried_rows_stay_frozen_while_new_rows_train(tmp_path):
  """Row freezing through the trainer's real model, optimizer and fit."""
  spec_path = os.path.join(REPO, "configs", "synthetic.yaml")
  spec = loader.load_spec(spec_path)
  infos = feature_info_lib.resolve_feature_info(
      spec, {"user": 5, "movie": 4, "gender": 2, "occupation": 2,
             "genres": 3})
  config = config_lib.build_config(
      spec, {"model_type": "mf", "mf_dim": 3, "learning_rate": 0.1,
             "l2_user": 0.0, "l2_item": 0.0},
      preprocessed_dir=str(tmp_path), model_dir=str(tmp_path),
      spec_path=spec_path)
  old_users = _old(tokens=["u1", "u2", "u3", "u4", "[OOV_0]"], name="user")
  new_users = ["u4", "u9", "u2", "u7", "u1", "[OOV_0]"]
  tables = warmstart.warm_start_tables(
      {"user": old_users}, {"user": new_users}, freeze_carried=True)
  carried = np.array([True, False, True, False, True, True])
  np.testing.assert_array_equal(tables["user"].frozen_rows, carried)
  before = tables["user"].values.copy()

  keras.utils.set_random_seed(1)
  model = models.build_model(config, spec, infos, label_mean=3.0,
                             pretrained=tables)
  models.compile_model(model, config, spec,
                       optimizers.make_optimizer("lazy_adam", 0.1))
  users = np.tile(np.arange(6, dtype=np.int64), 8)
  movies = np.tile(np.arange(5, dtype=np.int64), 10)[:48]
  ratings = (1.0 + (users * 7 + movies * 3) % 5).astype(np.float32)
  model.fit({"user": users, "movie": movies}, ratings, batch_size=12,
            epochs=3, verbose=0, shuffle=False)
  after = models.embedding_table(model, "user").embeddings.numpy()
  np.testing.assert_array_equal(after[carried], before[carried])
  assert not np.any(np.all(after[~carried] == before[~carried], axis=1))
  assert np.all(np.isfinite(after))
