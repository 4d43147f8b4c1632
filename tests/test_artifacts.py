"""Tests for embedding artifacts (trainer/artifacts.py): format and readers."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer import artifacts
from transforms import feature_info as feature_info_lib
from transforms import preprocessing
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def spec():
  return spec_lib.load_spec(os.path.join(REPO, "configs", "synthetic.yaml"))


@pytest.fixture(scope="module")
def infos(spec):
  return feature_info_lib.resolve_feature_info(
      spec, {"user": 3, "movie": 4, "gender": 2, "occupation": 2, "genres": 3})


def _table(name="movie", rows=5, dim=3, seed=0, tokens=None):
  rng = np.random.default_rng(seed)
  vectors = rng.normal(size=(rows, dim)).astype(np.float32)
  tokens = tokens or [f"m{i}" for i in range(rows - 1)] + ["[OOV_0]"]
  return artifacts.EmbeddingTable(
      name=name, vectors=vectors, tokens=tokens,
      metadata={"kind": "vocabulary", "vocabulary_size": rows - 1,
                "num_oov_buckets": 1, "model_version": "m-1"})


def test_save_load_round_trip_is_exact(tmp_path):
  table = _table()
  table.vectors[0, 0] = np.float32(1.0) / np.float32(3.0)
  table.save(str(tmp_path / "movie"))
  loaded = artifacts.load_table(str(tmp_path / "movie"))
  assert loaded.name == "movie"
  assert loaded.tokens == table.tokens
  assert loaded.labels == table.tokens
  np.testing.assert_array_equal(loaded.vectors, table.vectors)
  assert loaded.vectors.dtype == np.float32
  assert loaded.metadata["model_version"] == "m-1"
  assert loaded.metadata["dimension"] == 3 and loaded.metadata["size"] == 5
  assert loaded.metadata["tensor_name"] == "movie/embeddings"
  assert artifacts.load_tables(str(tmp_path))["movie"].tokens == table.tokens


def test_checkpoint_holds_exactly_the_named_tensor(tmp_path):
  table = _table()
  directory = table.save(str(tmp_path / "movie"))
  assert tf.train.list_variables(directory) == [("movie/embeddings", [5, 3])]
  np.testing.assert_array_equal(
      tf.train.load_variable(directory, "movie/embeddings"), table.vectors)
  with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as handle:
    assert handle.read() == "m0\nm1\nm2\nm3\n[OOV_0]\n"


def test_gensim_opens_word2vec_file_with_spaced_tokens(tmp_path):
  from gensim.models import KeyedVectors
  tokens = ["Toy Story (1995)", "Toy_Story_(1995)", "GoldenEye\t(1995)", "",
            "[OOV_0]"]
  table = _table(tokens=tokens)
  directory = table.save(str(tmp_path / "title"))
  vectors = KeyedVectors.load_word2vec_format(
      os.path.join(directory, "word2vec.txt"))
  assert vectors.index_to_key == ["Toy_Story_(1995)", "Toy_Story_(1995)#1",
                                  "GoldenEye_(1995)", "[EMPTY]", "[OOV_0]"]
  np.testing.assert_array_equal(vectors.vectors, table.vectors)
  # vocab.txt and metadata.tsv keep the real tokens.
  assert artifacts.load_table(directory).tokens == tokens


def test_tsv_files(tmp_path):
  table = _table()
  table.labels = ["a", "b", "c", "d", "e"]
  directory = table.save(str(tmp_path / "movie"))
  vectors = np.loadtxt(os.path.join(directory, "vectors.tsv"),
                       delimiter="\t", dtype=np.float32)
  np.testing.assert_array_equal(vectors, table.vectors)
  with open(os.path.join(directory, "metadata.tsv"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0] == "row\ttoken\tlabel"
  assert lines[1:] == [f"{i}\t{t}\t{l}" for i, (t, l) in
                       enumerate(zip(table.tokens, table.labels))]
  assert artifacts.load_table(directory).labels == table.labels


def test_feature_column_api_loads_the_checkpoint(tmp_path):
  table = _table(rows=5, dim=4, seed=3)
  directory = table.save(str(tmp_path / "movie"))
  metadata = artifacts.load_table(directory).metadata
  queries = ["m2", "m0", "m3", "never-seen"]
  graph = tf.Graph()
  with graph.as_default():
    columns = tf.compat.v1.feature_column
    column = columns.categorical_column_with_vocabulary_file(
        "movie", os.path.join(directory, "vocab.txt"),
        vocabulary_size=metadata["vocabulary_size"],
        num_oov_buckets=metadata["num_oov_buckets"])
    embedded = columns.embedding_column(
        column, metadata["dimension"], ckpt_to_load_from=directory,
        tensor_name_in_ckpt=metadata["tensor_name"], trainable=False)
    looked_up = columns.input_layer(
        {"movie": tf.constant([[q] for q in queries])}, [embedded])
    with tf.compat.v1.Session(graph=graph) as session:
      session.run([tf.compat.v1.global_variables_initializer(),
                   tf.compat.v1.tables_initializer()])
      values = session.run(looked_up)
  np.testing.assert_array_equal(values, table.vectors[[2, 0, 3, 4]])


def test_row_tokens_per_kind(infos):
  assert artifacts.row_tokens(infos["movie"], ["m9", "m1", "m5", "m2"]) == [
      "m9", "m1", "m5", "m2", "[OOV_0]"]
  assert artifacts.row_tokens(infos["day_of_week"]) == [
      str(i) for i in range(7)]
  assert artifacts.row_tokens(infos["age_bucket"]) == [
      f"[BUCKET_{i}]" for i in range(6)]
  assert artifacts.row_tokens(infos["day_x_hour"])[167] == "[BUCKET_167]"
  identity = feature_info_lib.FeatureInfo(
      name="slot", kind="identity", size=4, vocabulary_size=None,
      num_oov_buckets=0, embedding_dim=2, dim_range=(1, 3), multivalent=False,
      vocabulary_file=None)
  assert artifacts.row_tokens(identity) == ["0", "1", "2", "[DEFAULT]"]
  with pytest.raises(ValueError, match="vocabulary has 2 tokens"):
    artifacts.row_tokens(infos["movie"], ["m1", "m2"])


def test_hash_parameters_and_cross_labels(spec, infos):
  params = artifacts.hash_parameters(spec, "day_x_hour")
  assert params["bucket_size"] == 168
  assert "cross_hashed" in params["function"]
  assert [m["name"] for m in params["members"]] == ["day_of_week",
                                                    "hour_of_day"]
  assert artifacts.hash_parameters(spec, "movie") is None
  tokens = artifacts.row_tokens(infos["day_x_hour"])
  labels = artifacts.row_labels(spec, infos["day_x_hour"], tokens)
  # Tuesday 14h: the pipeline's own hashed cross says which bucket it is in.
  bucket = preprocessing.hashed_cross(
      [tf.constant([[1]], tf.int64), tf.constant([[14]], tf.int64)], 168)
  bucket = int(tf.sparse.to_dense(bucket).numpy()[0, 0])
  assert "Tue 14h" in labels[bucket].split("|")
  combinations = [c for label in labels if not label.startswith("[BUCKET_")
                  for c in label.split("|")]
  assert len(combinations) == 7 * 24 and len(set(combinations)) == 7 * 24


def _model_with_tables(infos, names, seed=0):
  """A real tf_keras model with one Embedding layer per feature."""
  inputs, outputs = [], []
  for name in names:
    info = infos[name]
    x = keras.Input(shape=(), dtype=tf.int64, name=name)
    layer = keras.layers.Embedding(
        info.size, info.embedding_dim, name=f"embedding_{name}",
        embeddings_initializer=keras.initializers.RandomNormal(seed=seed))
    inputs.append(x)
    outputs.append(layer(x))
  return keras.Model(inputs, keras.layers.Concatenate()(outputs))


def test_export_model_tables(tmp_path, spec, infos):
  model = _model_with_tables(infos, ["movie", "day_x_hour"])
  exported = artifacts.export_model_tables(
      model, infos, spec, str(tmp_path),
      vocabularies={"movie": ["m3", "m1", "m4", "m2"]},
      versions={"model_version": "v7", "data_version": "sha256:x",
                "trained_at": "2024-01-01T00:00:00Z"})
  assert sorted(exported) == ["day_x_hour", "movie"]
  loaded = artifacts.load_tables(str(tmp_path))
  for name in ("movie", "day_x_hour"):
    np.testing.assert_array_equal(
        loaded[name].vectors,
        model.get_layer(f"embedding_{name}").get_weights()[0])
  assert loaded["movie"].tokens == ["m3", "m1", "m4", "m2", "[OOV_0]"]
  with open(tmp_path / "day_x_hour" / "metadata.json") as handle:
    metadata = json.load(handle)
  assert metadata["hash"]["bucket_size"] == 168
  assert metadata["feature_spec"] == {
      "name": "day_x_hour", "kind": "cross", "hash_bucket_size": 168,
      "features": ["day_of_week", "hour_of_day"]}
  assert metadata["model_version"] == "v7"
  assert metadata["trained_at"] == "2024-01-01T00:00:00Z"
  assert metadata["dimension"] == infos["day_x_hour"].embedding_dim
  assert metadata["num_oov_buckets"] == 0
