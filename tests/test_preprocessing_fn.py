"""preprocessing_fn run by tf.Transform itself on tiny in-memory datasets.

Two module-scoped runs (categorical kinds; numeric, time and hashed kinds)
each analyze a train set with tft_beam.AnalyzeAndTransformDataset, transform
a separate eval set with the same transform_fn (tft_beam.TransformDataset),
write transform_fn/ and encode both outputs as tf.Examples, exactly as the
pipeline does. The tests then read the written vocabulary files and decode
the examples with the transformed feature spec the trainer uses, and compare
with values worked out by hand or by the reference ops (tf.strings, tf.sparse,
Keras HashedCrossing, Python's datetime). A third, small run goes through
tft_unit's own assertAnalyzeAndTransformResults.

Instance dicts are fine here (tf.Transform's maintainers keep them for
tests); the pipeline itself uses the TFXIO / RecordBatch path.
"""

import datetime
import functools
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
import tf_keras
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from transforms import loader
from transforms import preprocessing
from transforms import spec as spec_lib
from transforms.kinds import cross as cross_kind

# A passthrough column that lets the tests put the Beam outputs back in
# input order.
ROW_ID = "row_id"
_TF_TYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32}


def _spec(columns, types, features, label="rating", task="regression"):
  return loader.parse_spec({
      "name": "test",
      "inputs": {"rows": {"format": "csv", "path": "unused.csv",
                          "columns": list(columns) + [ROW_ID],
                          "types": {**types, ROW_ID: "int"}}},
      "split": {"key": ROW_ID},
      "label": {"column": label, "task": task},
      "features": features,
  })


def _raw_metadata(spec):
  types = {**spec.raw_column_types(), ROW_ID: "int"}
  return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
      {column: tf.io.FixedLenFeature([], _TF_TYPES[column_type])
       for column, column_type in types.items()}))


def _with_row_id(inputs, spec):
  outputs = preprocessing.preprocessing_fn(inputs, spec=spec)
  outputs[ROW_ID] = inputs[ROW_ID]
  return outputs


class Result:
  """A finished analyze + transform run: outputs per split, in row order."""

  def __init__(self, spec, out_dir, train_rows, eval_rows):
    self.spec = spec
    self.out_dir = out_dir
    self.output = tft.TFTransformOutput(out_dir)
    self.train_rows = train_rows
    self.eval_rows = eval_rows
    self.splits = {name: self._read(name) for name in ("train", "eval")}

  def _read(self, name):
    serialized = [record.numpy() for record in tf.data.TFRecordDataset(
        os.path.join(self.out_dir, name))]
    parsed = tf.io.parse_example(serialized,
                                 self.output.transformed_feature_spec())
    order = np.argsort(parsed[ROW_ID].numpy())
    columns = {}
    for key, value in parsed.items():
      if isinstance(value, tf.SparseTensor):
        rows = tf.RaggedTensor.from_sparse(value).to_list()
        columns[key] = [rows[i] for i in order]
      else:
        columns[key] = value.numpy()[order]
    return columns

  def train(self, feature):
    return self.splits["train"][feature]

  def eval(self, feature):
    return self.splits["eval"][feature]

  def vocabulary(self, name):
    with tf.io.gfile.GFile(self.output.vocabulary_file_by_name(name),
                           "rb") as handle:
      return handle.read().decode("utf-8").splitlines()

  def raw_batch(self, split):
    rows = self.train_rows if split == "train" else self.eval_rows
    types = {**self.spec.raw_column_types(), ROW_ID: "int"}
    return {column: tf.constant([row[column] for row in rows],
                                _TF_TYPES[column_type])
            for column, column_type in types.items()}


def _analyze_and_transform(spec, train_rows, eval_rows, out_dir):
  """Runs tf.Transform on instance dicts; returns a Result."""
  metadata = _raw_metadata(spec)
  fn = functools.partial(_with_row_id, spec=spec)
  with beam.Pipeline(runner="DirectRunner") as pipeline:
    with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
      train = pipeline | "CreateTrain" >> beam.Create(train_rows,
                                                      reshuffle=False)
      train_out, transform_fn = (
          (train, metadata)
          | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(fn))
      eval_data = pipeline | "CreateEval" >> beam.Create(eval_rows,
                                                         reshuffle=False)
      eval_out = (((eval_data, metadata), transform_fn)
                  | "TransformEval" >> tft_beam.TransformDataset())
      _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
          out_dir)
      for name, dataset in (("train", train_out), ("eval", eval_out)):
        _ = (dataset
             | f"Encode{name}" >> tft_beam.EncodeTransformedDataset()
             | f"Write{name}" >> beam.io.WriteToTFRecord(
                 os.path.join(out_dir, name), shard_name_template=""))
  return Result(spec, out_dir, train_rows, eval_rows)


def _hash_cross(*columns, num_bins):
  """tf.sparse.cross_hashed over rank-1 columns, as a flat list."""
  crossed = tf.sparse.cross_hashed(
      [tf.expand_dims(tf.constant(c), 1) for c in columns], num_bins)
  return tf.sparse.to_dense(crossed).numpy().ravel().tolist()


def _bucket(value, num_bins):
  return int(tf.strings.to_hash_bucket_fast(value, num_bins).numpy())


# ---------------------------------------------------------------------------
# Run A: vocabularies, tokens and crosses of them.

CATEGORICAL_FEATURES = [
    {"name": "user", "kind": "vocabulary", "source": "user"},
    {"name": "user_top3", "kind": "vocabulary", "source": "user", "top_k": 3},
    {"name": "user_min2", "kind": "vocabulary", "source": "user",
     "frequency_threshold": 2},
    {"name": "user_oov3", "kind": "vocabulary", "source": "user",
     "num_oov_buckets": 3},
    {"name": "occupation", "kind": "vocabulary", "source": "occupation"},
    {"name": "gender", "kind": "vocabulary", "source": "gender"},
    {"name": "genres", "kind": "tokens", "source": "genres", "delimiter": "|"},
    {"name": "genre_flags", "kind": "tokens",
     "flag_columns": {"g_action": "Action", "g_comedy": "Comedy",
                      "g_drama": "Drama"}},
    {"name": "occupation_x_genres", "kind": "cross",
     "features": ["occupation", "genres"], "hash_bucket_size": 1000},
    {"name": "occupation_x_genres_vocab", "kind": "cross",
     "features": ["occupation", "genres"], "vocabulary": True,
     "frequency_threshold": 2},
    {"name": "gender_x_occupation_vocab", "kind": "cross",
     "features": ["gender", "occupation"], "vocabulary": True,
     "frequency_threshold": 2},
]
CATEGORICAL_COLUMNS = ("user", "occupation", "gender", "genres", "g_action",
                       "g_comedy", "g_drama", "rating")
CATEGORICAL_TYPES = {"g_action": "int", "g_comedy": "int", "g_drama": "int",
                     "rating": "float"}


def _categorical_row(row_id, user, occupation, gender, genres, flags, rating):
  return {ROW_ID: row_id, "user": user, "occupation": occupation,
          "gender": gender, "genres": genres, "g_action": flags[0],
          "g_comedy": flags[1], "g_drama": flags[2], "rating": rating}


# user counts a:3, b:2, c:2, e:2, d:1; occupation doctor:6, artist:3,
# lawyer:1; gender F:6, M:4; genre tokens Action:6, Comedy:4, Drama:3.
CATEGORICAL_TRAIN = [
    _categorical_row(0, "a", "doctor", "F", "Action|Comedy", (1, 1, 0), 5.0),
    _categorical_row(1, "a", "doctor", "M", "Action", (1, 0, 0), 4.0),
    _categorical_row(2, "a", "artist", "F", "", (0, 0, 0), 3.0),
    _categorical_row(3, "b", "doctor", "F", "Comedy|Drama", (0, 1, 1), 2.0),
    _categorical_row(4, "b", "artist", "M", "Action", (1, 0, 0), 1.0),
    _categorical_row(5, "c", "doctor", "F", " Drama | Action ", (1, 0, 1), 3.5),
    _categorical_row(6, "c", "lawyer", "M", "Action||Comedy", (1, 1, 0), 4.5),
    _categorical_row(7, "d", "doctor", "F", "Drama", (0, 0, 1), 5.0),
    _categorical_row(8, "e", "artist", "M", "Action", (1, 0, 0), 2.0),
    _categorical_row(9, "e", "doctor", "F", "Comedy", (0, 1, 0), 1.0),
]
UNSEEN_USERS = ("z", "y", "x", "w", "v")
CATEGORICAL_EVAL = [
    _categorical_row(100, "z", "pilot", "F", "Western|Action", (0, 0, 1), 3.0),
    _categorical_row(101, "y", "lawyer", "M", "Drama", (1, 1, 1), 2.0),
    _categorical_row(102, "x", "doctor", "X", "", (0, 0, 0), 1.0),
    _categorical_row(103, "w", "artist", "M", "Comedy|Action", (0, 1, 0), 5.0),
    _categorical_row(104, "v", "doctor", "F", "Drama", (0, 0, 1), 4.0),
    _categorical_row(105, "d", "doctor", "F", "Action", (1, 0, 0), 4.0),
    _categorical_row(106, "b", "lawyer", "M", "Comedy", (0, 1, 0), 4.0),
]


@pytest.fixture(scope="module")
def categorical(tmp_path_factory):
  spec = _spec(CATEGORICAL_COLUMNS, CATEGORICAL_TYPES, CATEGORICAL_FEATURES)
  return _analyze_and_transform(spec, CATEGORICAL_TRAIN, CATEGORICAL_EVAL,
                                str(tmp_path_factory.mktemp("categorical")))


def test_vocabulary_orders_by_frequency_then_reverse_bytes(categorical):
  # Ties (b, c, e: two each) come in descending byte order, as tft sorts
  # (count, token) pairs in reverse.
  assert categorical.vocabulary("user") == ["a", "e", "c", "b", "d"]
  assert categorical.vocabulary("occupation") == ["doctor", "artist", "lawyer"]
  assert categorical.vocabulary("gender") == ["F", "M"]
  assert categorical.train("user").tolist() == [0, 0, 0, 3, 3, 2, 2, 4, 1, 1]
  assert categorical.train("occupation").tolist() == [0, 0, 1, 0, 1, 0, 2, 0,
                                                      1, 0]
  assert categorical.train("gender").tolist() == [0, 1, 0, 0, 1, 0, 1, 0, 1,
                                                  0]


def test_vocabulary_unseen_values_go_to_the_oov_bucket(categorical):
  # One OOV bucket: every unseen value gets id = vocabulary size.
  assert categorical.eval("user").tolist() == [5, 5, 5, 5, 5, 4, 3]
  assert categorical.eval("occupation").tolist() == [3, 2, 0, 1, 0, 0, 2]
  assert categorical.eval("gender").tolist() == [0, 1, 2, 1, 0, 0, 1]


def test_vocabulary_top_k_keeps_the_first_k_in_order(categorical):
  assert categorical.vocabulary("user_top3") == ["a", "e", "c"]
  # b and d fall out of the vocabulary into OOV id 3.
  assert categorical.train("user_top3").tolist() == [0, 0, 0, 3, 3, 2, 2, 3,
                                                     1, 1]
  assert categorical.eval("user_top3").tolist() == [3] * 7


def test_vocabulary_frequency_threshold_drops_rare_values(categorical):
  assert categorical.vocabulary("user_min2") == ["a", "e", "c", "b"]
  assert categorical.train("user_min2").tolist() == [0, 0, 0, 3, 3, 2, 2, 4,
                                                     1, 1]
  assert categorical.eval("user_min2").tolist()[-2:] == [4, 3]


def test_vocabulary_several_oov_buckets_hash_unseen_values(categorical):
  assert categorical.vocabulary("user_oov3") == ["a", "e", "c", "b", "d"]
  expected = [5 + _bucket(user, 3) for user in UNSEEN_USERS]
  # The data must spread over more than one OOV bucket to test anything.
  assert len(set(expected)) > 1
  assert categorical.eval("user_oov3").tolist() == expected + [4, 3]
  assert categorical.train("user_oov3").tolist() == (
      categorical.train("user").tolist())


def test_tokens_from_a_delimiter(categorical):
  assert categorical.vocabulary("genres") == ["Action", "Comedy", "Drama"]
  # Tokens are stripped, empty ones ("" and "||") dropped, order kept.
  assert categorical.train("genres") == [
      [0, 1], [0], [], [1, 2], [0], [2, 0], [0, 1], [2], [0], [1]]
  # "Western" was never seen: OOV id 3.
  assert categorical.eval("genres") == [[3, 0], [2], [], [1, 0], [2], [0],
                                        [1]]


def test_tokens_from_flag_columns(categorical):
  assert categorical.vocabulary("genre_flags") == ["Action", "Comedy",
                                                   "Drama"]
  # Flag columns give tokens in the spec's column order.
  assert categorical.train("genre_flags") == [
      [0, 1], [0], [], [1, 2], [0], [0, 2], [0, 1], [2], [0], [1]]
  assert categorical.eval("genre_flags") == [[2], [0, 1, 2], [], [1], [2],
                                             [0], [1]]


def test_multivalued_outputs_are_sparse_with_exact_indices(categorical):
  feature_spec = categorical.output.transformed_feature_spec()
  for name in ("genres", "genre_flags", "occupation_x_genres",
               "occupation_x_genres_vocab"):
    assert feature_spec[name] == tf.io.VarLenFeature(tf.int64), name
  for name in ("user", "occupation", "gender_x_occupation_vocab"):
    assert feature_spec[name] == tf.io.FixedLenFeature([], tf.int64), name
  # The SavedModel applied in-graph (the trainer's and serving's path).
  outputs = categorical.output.transform_raw_features(
      categorical.raw_batch("eval"))
  genres = outputs["genres"]
  assert isinstance(genres, tf.SparseTensor)
  assert genres.dtype == tf.int64
  assert genres.indices.numpy().tolist() == [[0, 0], [0, 1], [1, 0], [3, 0],
                                             [3, 1], [4, 0], [5, 0], [6, 0]]
  assert genres.values.numpy().tolist() == [3, 0, 2, 1, 0, 2, 0, 1]
  assert genres.dense_shape.numpy().tolist() == [7, 2]
  assert outputs["user"].dtype == tf.int64
  assert outputs["user"].shape.rank == 1


def test_in_graph_transform_equals_the_beam_output(categorical):
  for split in ("train", "eval"):
    outputs = categorical.output.transform_raw_features(
        categorical.raw_batch(split))
    for name, value in outputs.items():
      beam_value = categorical.splits[split][name]
      if isinstance(value, tf.SparseTensor):
        assert tf.RaggedTensor.from_sparse(value).to_list() == beam_value, name
      else:
        np.testing.assert_array_equal(value.numpy(), beam_value, err_msg=name)


def test_hashed_cross_with_a_multivalued_member_gives_every_combination(
    categorical):
  for split, rows in (("train", CATEGORICAL_TRAIN),
                      ("eval", CATEGORICAL_EVAL)):
    expected = []
    for row in rows:
      tokens = [t.strip() for t in row["genres"].split("|") if t.strip()]
      expected.append([_hash_cross([row["occupation"]], [token],
                                   num_bins=1000)[0] for token in tokens])
    assert categorical.splits[split]["occupation_x_genres"] == expected
  # The same as one tf.sparse.cross_hashed over the whole batch with both
  # members sparse. Given a dense member, cross_hashed moves it after the
  # sparse ones, which changes every id: preprocessing_fn must not do that.
  occupation = tf.constant([r["occupation"] for r in CATEGORICAL_TRAIN])
  tokens = tf.strings.split([r["genres"] for r in CATEGORICAL_TRAIN], "|")
  tokens = tf.strings.strip(tokens)
  tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
  reference = tf.sparse.cross_hashed(
      [tf.RaggedTensor.from_tensor(occupation[:, None]).to_sparse(),
       tokens.to_sparse()], 1000)
  assert tf.RaggedTensor.from_sparse(reference).to_list() == (
      categorical.train("occupation_x_genres"))
  reordered = tf.sparse.cross_hashed(
      [occupation[:, None], tokens.to_sparse()], 1000)
  assert tf.RaggedTensor.from_sparse(reordered).to_list() != (
      categorical.train("occupation_x_genres"))


def test_cross_helpers_keep_member_order_and_zero_values():
  # A dense member given before a sparse one stays first, and bucket id 0
  # (a "zero" that tf.sparse.from_dense would drop) stays in.
  ids = tf.constant([[0], [1]], tf.int64)
  tokens = tf.ragged.constant([["Action", "Comedy"], []]).to_sparse()
  assert cross_kind.crossed_strings([ids, tokens]).values.numpy().tolist(
      ) == [b"0_X_Action", b"0_X_Comedy"]
  assert cross_kind.hashed_cross([ids, tokens], 100).values.numpy(
      ).tolist() == [_hash_cross([0], ["Action"], num_bins=100)[0],
                     _hash_cross([0], ["Comedy"], num_bins=100)[0]]


def test_vocabulary_cross_sends_rare_combinations_to_oov(categorical):
  # Three-way tie at 3 in reverse byte order; lawyer_X_* (1 each) dropped.
  assert categorical.vocabulary("occupation_x_genres_vocab") == [
      "doctor_X_Drama", "doctor_X_Comedy", "doctor_X_Action",
      "artist_X_Action"]
  assert categorical.train("occupation_x_genres_vocab") == [
      [2, 1], [2], [], [1, 0], [3], [0, 2], [4, 4], [0], [3], [1]]
  assert categorical.eval("occupation_x_genres_vocab") == [
      [4, 4], [4], [], [4, 3], [0], [2], [4]]


def test_single_valued_vocabulary_cross_is_dense(categorical):
  assert categorical.vocabulary("gender_x_occupation_vocab") == [
      "F_X_doctor", "M_X_artist"]
  assert categorical.train("gender_x_occupation_vocab").tolist() == [
      0, 2, 2, 0, 1, 0, 2, 0, 1, 0]
  assert categorical.eval("gender_x_occupation_vocab").tolist() == [
      2, 2, 2, 1, 0, 0, 2]


def test_label_passes_through_as_float32(categorical):
  feature_spec = categorical.output.transformed_feature_spec()
  assert feature_spec[spec_lib.LABEL_KEY] == tf.io.FixedLenFeature(
      [], tf.float32)
  assert categorical.train(spec_lib.LABEL_KEY).tolist() == [
      row["rating"] for row in CATEGORICAL_TRAIN]


def test_learned_vocabulary_sizes_read_from_the_transform_output(categorical):
  output = tft.TFTransformOutput(categorical.out_dir)
  assert {feature.name: output.vocabulary_size_by_name(feature.name)
          for feature in categorical.spec.features
          if feature.has_learned_vocabulary} == {
          "user": 5, "user_top3": 3, "user_min2": 4, "user_oov3": 5,
          "occupation": 3, "gender": 2, "genres": 3, "genre_flags": 3,
          "occupation_x_genres_vocab": 4, "gender_x_occupation_vocab": 2}


# ---------------------------------------------------------------------------
# Run B: quantile buckets, z-scores, identity, hash, time and hashed crosses.

NUMERIC_FEATURES = [
    {"name": "x_bucket", "kind": "bucketized", "source": "x",
     "num_buckets": 4},
    {"name": "x_z", "kind": "numeric", "source": "x"},
    {"name": "slot", "kind": "identity", "source": "slot", "num_buckets": 5},
    {"name": "item_hash", "kind": "hash", "source": "item",
     "hash_bucket_size": 50},
    {"name": "code_hash", "kind": "hash", "source": "code",
     "hash_bucket_size": 50},
    {"name": "code", "kind": "vocabulary", "source": "code"},
    {"name": "gender", "kind": "vocabulary", "source": "gender"},
    {"name": "day_of_week", "kind": "day_of_week", "source": "timestamp"},
    {"name": "hour_of_day", "kind": "hour_of_day", "source": "timestamp"},
    {"name": "day_x_hour", "kind": "cross",
     "features": ["day_of_week", "hour_of_day"], "hash_bucket_size": 168},
    {"name": "x_bucket_x_item", "kind": "cross",
     "features": ["x_bucket", "item_hash"], "hash_bucket_size": 100},
    {"name": "code_x_gender", "kind": "cross", "features": ["code", "gender"],
     "hash_bucket_size": 100},
    {"name": "slot_x_day_x_gender", "kind": "cross",
     "features": ["slot", "day_of_week", "gender"], "hash_bucket_size": 500},
]
NUMERIC_COLUMNS = ("x", "slot", "item", "code", "gender", "timestamp",
                   "clicked")
NUMERIC_TYPES = {"x": "float", "slot": "int", "code": "int",
                 "timestamp": "int", "clicked": "int"}

MONDAY_2024 = 1704067200  # 2024-01-01 00:00:00 UTC, a Monday.
TIMESTAMPS = (
    0,                                   # Thu 1970-01-01 00:00
    MONDAY_2024,                         # Mon 00:00
    MONDAY_2024 + 13 * 3600 + 3599,      # Mon 13:59:59
    MONDAY_2024 + 6 * 86400 + 23 * 3600, # Sun 23:00
    -1,                                  # Wed 1969-12-31 23:59:59
    -3 * 86400,                          # Mon 1969-12-29 00:00
    951782400 + 5 * 3600,                # Tue 2000-02-29 05:00
)


def _numeric_row(row_id, x, slot, item, code, gender, timestamp, clicked):
  return {ROW_ID: row_id, "x": x, "slot": slot, "item": item, "code": code,
          "gender": gender, "timestamp": timestamp, "clicked": clicked}


NUMERIC_TRAIN = [
    _numeric_row(i, float(i), i % 7 - 1, f"m{i % 13}", 1000 * (i % 4) + 7,
                 "MF"[i % 2], TIMESTAMPS[i % len(TIMESTAMPS)], i % 2)
    for i in range(1, 101)]
PROBES = (-5.0, 1.0, 25.0, 25.99, 26.0, 50.0, 50.99, 51.0, 75.0, 75.99, 76.0,
          100.0, 1000.0)
NUMERIC_EVAL = [
    _numeric_row(200 + i, x, 6 - i, f"new{i}", 5 * i, "MFX"[i % 3],
                 TIMESTAMPS[-1 - i % len(TIMESTAMPS)], 1)
    for i, x in enumerate(PROBES)]


@pytest.fixture(scope="module")
def numeric(tmp_path_factory):
  spec = _spec(NUMERIC_COLUMNS, NUMERIC_TYPES, NUMERIC_FEATURES,
               label="clicked", task="binary")
  return _analyze_and_transform(spec, NUMERIC_TRAIN, NUMERIC_EVAL,
                                str(tmp_path_factory.mktemp("numeric")))


def _column(rows, name):
  return [row[name] for row in rows]


def test_bucketized_cuts_1_to_100_into_quartiles(numeric):
  # tft puts the boundaries for 1..100 in 4 buckets at 26, 51 and 76; a
  # value equal to a boundary goes to the upper bucket: 25 values a bucket.
  assert numeric.train("x_bucket").tolist() == [(i - 1) // 25
                                                for i in range(1, 101)]
  assert dict(zip(PROBES, numeric.eval("x_bucket").tolist())) == {
      -5.0: 0, 1.0: 0, 25.0: 0, 25.99: 0, 26.0: 1, 50.0: 1, 50.99: 1,
      51.0: 2, 75.0: 2, 75.99: 2, 76.0: 3, 100.0: 3, 1000.0: 3}


def test_numeric_is_z_scored_with_train_statistics(numeric):
  x = np.arange(1, 101, dtype=np.float64)
  z = numeric.train("x_z")
  assert z.dtype == np.float32
  np.testing.assert_allclose(z, (x - x.mean()) / x.std(), rtol=1e-5)
  assert abs(z.mean()) < 1e-5
  assert abs(z.std() - 1.0) < 1e-5
  # Eval rows use the train mean and deviation.
  np.testing.assert_allclose(numeric.eval("x_z"),
                             (np.array(PROBES) - x.mean()) / x.std(),
                             rtol=1e-5)


def test_identity_maps_out_of_range_ids_to_the_default_row(numeric):
  # slot runs over -1..5; -1 and 5 are outside [0, 5) and get id 5.
  expected = [s if 0 <= s < 5 else 5 for s in _column(NUMERIC_TRAIN, "slot")]
  assert numeric.train("slot").tolist() == expected
  assert 5 in expected and 0 in expected
  assert numeric.eval("slot").tolist() == [
      s if 0 <= s < 5 else 5 for s in _column(NUMERIC_EVAL, "slot")]


def test_hash_equals_to_hash_bucket_fast_and_keras_hashing(numeric):
  for split, rows in (("train", NUMERIC_TRAIN), ("eval", NUMERIC_EVAL)):
    items = _column(rows, "item")
    assert numeric.splits[split]["item_hash"].tolist() == (
        tf.strings.to_hash_bucket_fast(items, 50).numpy().tolist())
    # Int columns hash by their decimal string, as Keras Hashing does.
    codes = tf.constant(_column(rows, "code"), tf.int64)
    keras_ids = tf_keras.layers.Hashing(num_bins=50)(codes)
    assert numeric.splits[split]["code_hash"].tolist() == (
        tf.reshape(keras_ids, [-1]).numpy().tolist())
    assert numeric.splits[split]["code_hash"].tolist() == (
        tf.strings.to_hash_bucket_fast(tf.strings.as_string(codes),
                                       50).numpy().tolist())


def test_time_features_match_datetime(numeric):
  for split, rows in (("train", NUMERIC_TRAIN), ("eval", NUMERIC_EVAL)):
    times = [datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
             for t in _column(rows, "timestamp")]
    assert numeric.splits[split]["day_of_week"].tolist() == [
        t.weekday() for t in times]
    assert numeric.splits[split]["hour_of_day"].tolist() == [
        t.hour for t in times]
  by_timestamp = dict(zip(_column(NUMERIC_TRAIN, "timestamp"), zip(
      numeric.train("day_of_week").tolist(),
      numeric.train("hour_of_day").tolist())))
  assert by_timestamp[0] == (3, 0)                  # Thursday, midnight
  assert by_timestamp[MONDAY_2024] == (0, 0)
  assert by_timestamp[MONDAY_2024 + 13 * 3600 + 3599] == (0, 13)
  assert by_timestamp[MONDAY_2024 + 6 * 86400 + 23 * 3600] == (6, 23)
  assert by_timestamp[-1] == (2, 23)                # before the epoch
  assert by_timestamp[-3 * 86400] == (0, 0)


def _keras_crossings():
  # Keras 3 (tf.keras here) is imported only for this parity check: a
  # serving-side HashedCrossing must reproduce the pipeline's ids.
  import keras  # pylint: disable=import-outside-toplevel
  return keras.layers.HashedCrossing, tf_keras.layers.HashedCrossing


@pytest.mark.parametrize("split", ["train", "eval"])
def test_hashed_crosses_equal_keras_hashed_crossing(numeric, split):
  rows = NUMERIC_TRAIN if split == "train" else NUMERIC_EVAL
  out = numeric.splits[split]
  dow = out["day_of_week"].astype(np.int64)
  hour = out["hour_of_day"].astype(np.int64)
  buckets = out["x_bucket"].astype(np.int64)
  slots = out["slot"].astype(np.int64)
  items = np.array(_column(rows, "item"))
  codes = np.array(_column(rows, "code"), dtype=np.int64)
  genders = np.array(_column(rows, "gender"))
  cases = {
      "day_x_hour": ((dow, hour), 168),
      "x_bucket_x_item": ((buckets, items), 100),
      # The raw int column, not its string: cross_hashed hashes them apart.
      "code_x_gender": ((codes, genders), 100),
      "slot_x_day_x_gender": ((slots, dow, genders), 500),
  }
  for name, (members, bins) in cases.items():
    expected = _hash_cross(*members, num_bins=bins)
    assert out[name].tolist() == expected, name
    for layer in _keras_crossings():
      keras_ids = layer(num_bins=bins)(tuple(tf.constant(m) for m in members))
      assert np.asarray(keras_ids).ravel().tolist() == expected, (name, layer)
  # The time cross stays within its 24 * 7 buckets.
  assert set(out["day_x_hour"].tolist()) <= set(range(168))


def test_int_label_becomes_float32(numeric):
  assert numeric.output.transformed_feature_spec()[
      spec_lib.LABEL_KEY] == tf.io.FixedLenFeature([], tf.float32)
  labels = numeric.train(spec_lib.LABEL_KEY)
  assert labels.dtype == np.float32
  assert labels.tolist() == [float(i % 2) for i in range(1, 101)]


# ---------------------------------------------------------------------------
# tft_unit's own helper on a two-feature spec (whole rows, vocabulary files,
# a separate test set for OOV ids).


class TftUnitTest(tft_unit.TransformTestCase):
  """preprocessing_fn checked with tft_unit.assertAnalyzeAndTransformResults."""

  # tf.test.TestCase's test_session is a context manager, not a test.
  test_session = None

  def test_vocabulary_and_tokens(self):
    spec = _spec(("user", "genres", "rating"), {"rating": "float"}, [
        {"name": "user", "kind": "vocabulary", "source": "user",
         "num_oov_buckets": 2},
        {"name": "genres", "kind": "tokens", "source": "genres",
         "delimiter": "|", "frequency_threshold": 2},
    ])
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec({
            "user": tf.io.FixedLenFeature([], tf.string),
            "genres": tf.io.FixedLenFeature([], tf.string),
            "rating": tf.io.FixedLenFeature([], tf.float32)}))
    train = [{"user": "b", "genres": "Action|Comedy", "rating": 1.0},
             {"user": "a", "genres": "Action", "rating": 2.0},
             {"user": "b", "genres": "Drama|Action", "rating": 3.0},
             {"user": "c", "genres": "Comedy", "rating": 4.0}]
    test = [{"user": "a", "genres": "Drama|Comedy", "rating": 5.0},
            {"user": "q", "genres": "", "rating": 1.0}]
    self.assertAnalyzeAndTransformResults(
        train, metadata, functools.partial(preprocessing.preprocessing_fn,
                                           spec=spec),
        expected_data=[
            {"user": 2, "genres": [2, 1], "label": 5.0},
            {"user": 3 + _bucket("q", 2), "genres": [], "label": 1.0}],
        expected_vocab_file_contents={"user": [b"b", b"c", b"a"],
                                      "genres": [b"Action", b"Comedy"]},
        test_data=test)
