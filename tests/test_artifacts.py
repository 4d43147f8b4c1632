"""The embedding artifact format (core/artifacts.py): files, readers, rows."""

import os
import subprocess
import sys

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
  assert lines[0] == "row\ttoken\tlabel\tname\tcount\tgroup"
  assert lines[1:] == [f"{i}\t{t}\t{l}\t\t\t" for i, (t, l) in
                       enumerate(zip(table.tokens, table.labels))]
  loaded = artifacts.load_table(directory)
  assert loaded.labels == table.labels
  assert (loaded.names, loaded.counts, loaded.groups) == (None, None, None)


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


def _named_table():
  table = _table(rows=4, tokens=["m1", "m2", "m3", "[OOV_0]"])
  table.names = ["Heat (1995)", "Babe (1995)", "m3", "[OOV_0]"]
  table.counts = np.array([12, 0, 3, 0])
  table.groups = ["Action", "Comedy", "", ""]
  return table


def test_names_counts_groups_round_trip_through_metadata_tsv(tmp_path):
  table = _named_table()
  directory = table.save(str(tmp_path / "movie"))
  with open(os.path.join(directory, "metadata.tsv"), encoding="utf-8") as f:
    assert f.read() == ("row\ttoken\tlabel\tname\tcount\tgroup\n"
                        "0\tm1\tm1\tHeat (1995)\t12\tAction\n"
                        "1\tm2\tm2\tBabe (1995)\t0\tComedy\n"
                        "2\tm3\tm3\tm3\t3\t\n"
                        "3\t[OOV_0]\t[OOV_0]\t[OOV_0]\t0\t\n")
  loaded = artifacts.load_table(directory)
  assert loaded.names == table.names
  assert loaded.groups == table.groups
  np.testing.assert_array_equal(loaded.counts, [12, 0, 3, 0])
  assert loaded.counts.dtype == np.int64
  np.testing.assert_array_equal(loaded.vectors, table.vectors)


def test_rows_fields_must_match_the_rows():
  with pytest.raises(ValueError, match="3 counts for 5 rows"):
    artifacts.EmbeddingTable("movie", np.zeros((5, 2)), list("abcde"), {},
                             counts=[1, 2, 3])
  with pytest.raises(ValueError, match="1 names for 5 rows"):
    artifacts.EmbeddingTable("movie", np.zeros((5, 2)), list("abcde"), {},
                             names=["x"])


def test_load_reads_vectors_npy(tmp_path):
  table = _table()
  directory = table.save(str(tmp_path / "movie"))
  np.testing.assert_array_equal(
      np.load(os.path.join(directory, "vectors.npy")), table.vectors)
  # The reader takes the vectors from vectors.npy, not from the checkpoint.
  np.save(os.path.join(directory, "vectors.npy"), table.vectors * 2)
  np.testing.assert_array_equal(artifacts.load_table(directory).vectors,
                                table.vectors * 2)
  # An export written before vectors.npy existed reads its exact vectors.tsv.
  os.remove(os.path.join(directory, "vectors.npy"))
  np.testing.assert_array_equal(artifacts.load_table(directory).vectors,
                                table.vectors)


def test_reading_a_table_needs_no_tensorflow(tmp_path):
  directory = _named_table().save(str(tmp_path / "movie"))
  code = ("import sys\n"
          "from core import artifacts\n"
          f"table = artifacts.load({str(tmp_path)!r}, 'movie')\n"
          "print(table.names[0], table.size)\n"
          "print('tensorflow' in sys.modules)\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, check=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert done.stdout.splitlines() == ["Heat (1995) 4", "False"]
  assert os.path.exists(os.path.join(directory, "embedding.ckpt.index"))


def test_to_frame_has_one_line_per_row():
  table = _named_table()
  frame = table.to_frame()
  assert list(frame.columns) == ["token", "name", "count", "group", "vector"]
  assert frame.index.name == "row" and list(frame.index) == [0, 1, 2, 3]
  assert frame["token"].tolist() == table.tokens
  assert frame["name"].tolist() == table.names
  assert frame["count"].tolist() == [12, 0, 3, 0]
  assert frame["group"].tolist() == table.groups
  np.testing.assert_array_equal(np.stack(frame["vector"]), table.vectors)
  bare = _table(rows=2, tokens=["a", "b"]).to_frame()
  assert bare["name"].tolist() == [None, None]
  assert bare["count"].isna().all() and str(bare["count"].dtype) == "Int64"


def test_model_score_defaults_to_dot():
  assert artifacts.model_score({}) == artifacts.DOT_SCORE
  assert artifacts.model_score({"score": "model"}) == artifacts.MODEL_SCORE
  table = _table()
  table.metadata["score"] = "model"
  assert table.score == artifacts.MODEL_SCORE
