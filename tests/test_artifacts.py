"""The embedding artifact format (core/artifacts.py): files, readers, rows."""

import os

import numpy as np
import pytest
import tensorflow as tf

from core import artifacts
from core import layout


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


def test_real_rows_leave_out_oov_and_default_rows():
  assert artifacts.real_rows(
      ["m0", "m1", "[OOV_0]", "[OOV_1]"],
      {"vocabulary_size": 2, "num_oov_buckets": 2}).tolist() == [0, 1]
  # An identity feature's out-of-range row.
  assert artifacts.real_rows(
      ["0", "1", "2", "[DEFAULT]"],
      {"vocabulary_size": None, "num_oov_buckets": 0}).tolist() == [0, 1, 2]
  # Hash buckets are all real.
  assert artifacts.real_rows(
      [artifacts.bucket_token(i) for i in range(3)],
      {"vocabulary_size": None}).tolist() == [0, 1, 2]
  assert _table().real_rows.tolist() == [0, 1, 2, 3]


def test_load_finds_tables_and_biases_of_an_export(tmp_path):
  table = _table()
  table.save(str(tmp_path / "movie"))
  bias = artifacts.EmbeddingTable(
      name=layout.bias_table_name("movie"),
      vectors=np.arange(5, dtype=np.float32)[:, None], tokens=table.tokens,
      metadata={"table": "bias", "feature": "movie"})
  bias.save(str(tmp_path / layout.bias_table_name("movie")))
  assert artifacts.table_names(str(tmp_path)) == ["bias_movie", "movie"]
  loaded = artifacts.load(str(tmp_path), "movie")
  np.testing.assert_array_equal(loaded.vectors, table.vectors)
  # A table's own directory loads without a name, or with its own.
  assert artifacts.load(str(tmp_path / "movie")).tokens == table.tokens
  assert artifacts.load(str(tmp_path / "movie"), "movie").name == "movie"
  np.testing.assert_array_equal(artifacts.find_bias(str(tmp_path), loaded),
                                np.arange(5, dtype=np.float32))
  with pytest.raises(FileNotFoundError, match="tables there: bias_movie, "
                                              "movie"):
    artifacts.load(str(tmp_path), "user")
  other = _table(name="user", tokens=["a", "b", "c", "d", "[OOV_0]"])
  assert artifacts.find_bias(str(tmp_path), other) is None
