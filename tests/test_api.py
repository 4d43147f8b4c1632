"""The Python API (embeddings/, pipelines/frames.py) on real models.

Uses the session's trained MovieLens dnn (conftest.trained_ml100k: every
side feature, so scoring joins users and items) and a small mf model
trained here (recommendations rank by dot products, which only an mf
export's tables give).
"""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import embeddings
from core import layout
from pipelines import frames
from pipelines import split as split_lib
from retrieval import neighbors as neighbors_lib
from retrieval import recommend as recommend_lib
from trainer import export
from trainer import task
from transforms import loader

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs")
ML100K_SPEC = os.path.join(CONFIGS, "movielens100k.yaml")
SYNTHETIC_SPEC = os.path.join(CONFIGS, "synthetic.yaml")
RATINGS = ["user_id", "item_id", "rating", "timestamp"]


@pytest.fixture(scope="module")
def dnn_export(trained_ml100k, tmp_path_factory):
  """The session dnn's movie, user and movie-bias tables, exported."""
  output = str(tmp_path_factory.mktemp("api_dnn") / "embeddings")
  export.export_tables(trained_ml100k.config.model_dir, output,
                       tables=["movie", "user", "bias_movie"])
  return output


@pytest.fixture(scope="module")
def mf_run(ml100k_preprocessed, ml100k_dir, tmp_path_factory):
  """A briefly trained mf model on u1: its model_dir and its export."""
  root = tmp_path_factory.mktemp("api_mf")
  args = task.flag_parser().parse_args(
      ["--spec", ML100K_SPEC, "--preprocessed", ml100k_preprocessed,
       "--model_dir", str(root / "model"), "--env",
       f"ML100K_DIR={ml100k_dir}", "--model_type", "mf", "--mf_dim", "8",
       "--epochs", "1", "--steps_per_epoch", "40", "--batch_size", "512",
       "--seed", "1", "--keras_verbose", "0"])
  task.train(task.config_from_args(args))
  output = str(root / "embeddings")
  export.export_tables(str(root / "model"), output)
  return {"model_dir": str(root / "model"), "embeddings": output}


@pytest.fixture(scope="module")
def model(trained_ml100k):
  return embeddings.load_model(trained_ml100k.config.model_dir)


@pytest.fixture(scope="module")
def eval_rows(model):
  return embeddings.read_table(model.spec, "ratings", split="eval").frame


def test_table_frame_round_trips_tokens_and_vectors(dnn_export,
                                                    trained_ml100k):
  frame = embeddings.table_frame(dnn_export, "movie")
  table = embeddings.load_table(dnn_export, "movie")
  assert list(frame.columns) == ["token", "name", "count", "group", "vector"]
  assert list(frame.token) == table.tokens
  np.testing.assert_array_equal(np.stack(frame.vector), table.vectors)
  np.testing.assert_array_equal(
      np.stack(frame.vector),
      export.model_table(trained_ml100k.model, "movie"))
  assert list(frame.name) == (table.names or [None] * table.size)
  # The same table through its own directory.
  by_directory = embeddings.table_frame(
      layout.ExportLayout(dnn_export).table("movie").root)
  assert list(by_directory.token) == table.tokens


def test_score_of_the_eval_rows_gives_the_trainers_eval_rmse(
    model, eval_rows, trained_ml100k):
  assert len(eval_rows) == trained_ml100k.report["metrics"]["examples"]
  predictions = model.score(eval_rows)
  assert predictions.index.equals(eval_rows.index)
  rmse = float(np.sqrt(np.mean((predictions.to_numpy(np.float64)
                                - eval_rows.rating) ** 2)))
  assert abs(rmse - trained_ml100k.report["metrics"]["rmse"]) < 1e-4


def _feature(value):
  if isinstance(value, str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[value.encode("utf-8")]))
  if isinstance(value, int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def test_score_types_pandas_ids_as_preprocessing_does(model, eval_rows,
                                                      ml100k_dir):
  # pandas reads the ids as int64; the spec says string: 7 is "7".
  raw = pd.read_csv(os.path.join(ml100k_dir, "u1.test"), sep="\t",
                    header=None, names=RATINGS).head(50)
  assert raw.user_id.dtype == np.int64
  shuffled = raw.sample(frac=1.0, random_state=3)
  scored = model.score(shuffled)
  assert scored.index.equals(shuffled.index)
  np.testing.assert_array_equal(scored.sort_index().to_numpy(),
                                model.score(eval_rows.head(50)).to_numpy())


def test_a_key_missing_from_a_side_table_is_one_clear_error(model,
                                                            eval_rows):
  rows = eval_rows.head(5).copy()
  rows.loc[[1, 3], "item_id"] = "99999"
  with pytest.raises(frames.FrameError,
                     match=r"^2 of 5 rows have a 'item_id' that is no key of "
                           r"input 'items', e\.g\. '99999'$"):
    model.score(rows)


def test_missing_columns_and_bad_values_are_one_clear_error(model,
                                                            eval_rows):
  assert model.main_columns == ("user_id", "item_id", "timestamp")
  with pytest.raises(frames.FrameError,
                     match=r"lacks column\(s\) \['timestamp'\]"):
    model.score(eval_rows.drop(columns=["timestamp"]))
  rows = eval_rows.head(3).astype({"timestamp": object})
  rows.loc[1, "timestamp"] = "noon"
  with pytest.raises(frames.FrameError,
                     match=r"^1 of 3 rows are not valid 'ratings' rows "
                           r"\(index 1: column 'timestamp': 'noon' is not "
                           r"int\)$"):
    model.score(rows)


def test_read_table_types_columns_and_reads_parquet_and_tfrecord(
    model, tmp_path):
  spec = model.spec
  items = embeddings.read_table(spec, "items")
  assert (items.rows_read, len(items.frame), items.dead_letters) == (
      1682, 1682, [])
  first = items.frame.iloc[0]
  assert (first.item_id, first.title, first.g_animation) == (
      "1", "Toy Story (1995)", 1)
  assert items.frame.g_animation.dtype == np.int64
  head = items.frame.head(20)
  head.to_parquet(tmp_path / "items.parquet")
  with tf.io.TFRecordWriter(str(tmp_path / "items.tfrecord")) as writer:
    for row in head.to_dict("records"):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          column: _feature(value) for column, value in row.items()}))
                   .SerializeToString())
  for fmt, path in (("parquet", "items.parquet"),
                    ("tfrecord", "items.tfrecord")):
    side = dataclasses.replace(spec.inputs["items"], format=fmt,
                               path=str(tmp_path / path))
    respec = dataclasses.replace(spec, inputs={**spec.inputs, "items": side})
    read = embeddings.read_table(respec, "items").frame
    pd.testing.assert_frame_equal(read, head, check_dtype=False)
    assert read.g_animation.dtype == np.int64


def test_read_table_refuses_bigquery_and_unknown_splits(model):
  spec = model.spec
  side = dataclasses.replace(spec.inputs["users"], format="bigquery",
                             path=None, table="project.dataset.users")
  respec = dataclasses.replace(spec, inputs={**spec.inputs, "users": side})
  with pytest.raises(frames.FrameError,
                     match=r"^input 'users' is a BigQuery table"):
    embeddings.read_table(respec, "users")
  with pytest.raises(frames.FrameError, match="only the main table"):
    embeddings.read_table(spec, "users", split="eval")


def test_rejected_side_rows_are_dead_letters_and_lose_their_main_rows(
    model, eval_rows, trained_ml100k, tmp_path):
  spec = model.spec
  path = tmp_path / "users.csv"
  path.write_text("1|24|M|technician|85711\n2|old|F|other|94043\n"
                  "3|23|M|writer\n")
  side = dataclasses.replace(spec.inputs["users"], path=str(path))
  respec = dataclasses.replace(spec, inputs={**spec.inputs, "users": side})
  read = embeddings.read_table(respec, "users")
  assert list(read.frame.user_id) == ["1"]
  assert read.rows_read == 3
  assert sorted(letter["reason"] for letter in read.dead_letters) == [
      "unparsable_number", "wrong_field_count"]
  few_users = embeddings.load_model(trained_ml100k.config.model_dir,
                                    spec=respec)
  rows = eval_rows.head(2).copy()
  rows["user_id"] = ["1", "2"]
  with pytest.raises(frames.FrameError,
                     match=r"^1 of 2 rows have a 'user_id' that is no key of "
                           r"input 'users', e\.g\. '2' \(its row there was "
                           r"rejected as unparsable_number\)$"):
    few_users.score(rows)
  # User 1's row is as in u.user, so its prediction is the same.
  np.testing.assert_array_equal(few_users.score(rows.head(1)),
                                model.score(rows.head(1)))


def test_neighbors_frame_agrees_with_the_command(dnn_export, capsys):
  found = embeddings.neighbors(dnn_export, "movie", "50", k=5, min_count=0)
  assert list(found.columns) == ["query", "rank", "token", "name",
                                 "similarity", "count"]
  assert list(found["rank"]) == [1, 2, 3, 4, 5]
  assert neighbors_lib.run(["--embeddings", dnn_export, "--table", "movie",
                            "--item", "50", "-k", "5", "--min_count", "0",
                            "--json"]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[0])
  assert list(found.token) == [n["item"] for n in printed["neighbors"]]
  np.testing.assert_allclose(
      found.similarity, [n["similarity"] for n in printed["neighbors"]],
      atol=1e-6)


def test_recommend_frame_agrees_with_the_command(mf_run, ml100k_dir,
                                                 capsys):
  seen = os.path.join(ml100k_dir, "u1.base")
  found = embeddings.recommend(mf_run["embeddings"], ["1", "7"], k=5,
                               seen=seen)
  assert list(found.columns) == ["user", "rank", "item", "name", "score"]
  assert recommend_lib.run(["--embeddings", mf_run["embeddings"],
                            "--users", "1,7",
                            "-k", "5", "--seen", seen, "--json"]) == 0
  printed = [json.loads(line) for line in
             capsys.readouterr().out.strip().splitlines()]
  for user in printed:
    mine = found[found.user == user["user"]]
    assert list(mine["item"]) == user["items"]
    np.testing.assert_allclose(mine.score, user["scores"], rtol=1e-6)
  rated = recommend_lib.read_seen(seen, ["1"])["1"]
  assert not set(found[found.user == "1"]["item"]) & rated
  # The same exclusions from a DataFrame of ratings.
  ratings = pd.read_csv(seen, sep="\t", header=None, names=RATINGS)
  from_frame = embeddings.recommend(mf_run["embeddings"], ["1", "7"],
                                    k=5, seen=ratings)
  pd.testing.assert_frame_equal(from_frame, found)


def test_recommend_refuses_a_dnn_export(dnn_export):
  with pytest.raises(ValueError, match="not a dot product"):
    embeddings.recommend(dnn_export, ["1"], k=3)


def test_an_mf_model_scores_from_the_main_table_alone(mf_run, eval_rows):
  mf = embeddings.load_model(mf_run["model_dir"])
  assert mf.columns == ("user_id", "item_id")
  predictions = mf.score(eval_rows[["user_id", "item_id"]])
  rmse = float(np.sqrt(np.mean((predictions.to_numpy(np.float64)
                                - eval_rows.rating) ** 2)))
  assert abs(rmse - mf.report["metrics"]["rmse"]) < 1e-4


def _pairs(frame):
  return set(zip(frame.user_id, frame.item_id))


def test_read_table_splits_by_the_specs_hash_as_preprocessing_does(tmp_path):
  lines = ["user_id,item_id,rating,timestamp"] + [
      f"u{i % 17},m{i % 23},{1 + i % 5}.0,{1000 + i}" for i in range(200)]
  (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
  spec = loader.load_spec(SYNTHETIC_SPEC, {"DATA_DIR": str(tmp_path)})
  train = embeddings.read_table(spec, "ratings", split="train").frame
  held_out = embeddings.read_table(spec, "ratings", split="eval").frame
  assert len(train) + len(held_out) == 200
  assert not _pairs(train) & _pairs(held_out)
  # The split key is (user_id, item_id) joined by the unit separator.
  expected = {(f"u{i % 17}", f"m{i % 23}") for i in range(200)
              if split_lib.eval_fraction_of(f"u{i % 17}\x1fm{i % 23}", 7)
              < 0.2}
  assert _pairs(held_out) == expected
  assert 20 < len(held_out) < 60
