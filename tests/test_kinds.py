"""Feature kinds (transforms/kinds/): each kind object against its outputs."""

import copy
import os
import pickle

import pytest
import tensorflow as tf

from transforms import feature_info as feature_info_lib
from transforms import kinds
from transforms import loader
from transforms.kinds import cross as cross_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def spec():
  return loader.load_spec(os.path.join(REPO, "configs", "synthetic.yaml"))


@pytest.fixture(scope="module")
def infos(spec):
  return feature_info_lib.resolve_feature_info(
      spec, {"user": 3, "movie": 4, "gender": 2, "occupation": 2, "genres": 3})


def _one_feature_spec(feature, columns=None, types=None, earlier=()):
  columns = columns or ["x", "n", "ts", "label"]
  types = types or {"n": "int", "ts": "int", "label": "float"}
  return loader.parse_spec({
      "name": "one", "inputs": {"rows": {
          "format": "csv", "path": "unused.csv", "columns": columns,
          "types": types}},
      "split": {"key": columns[0]}, "label": {"column": "label"},
      "features": list(earlier) + [feature]})


def test_kinds_are_their_names_and_singletons():
  assert kinds.NAMES == ("vocabulary", "identity", "hash", "bucketized",
                         "numeric", "tokens", "cross", "day_of_week",
                         "hour_of_day")
  for name in kinds.NAMES:
    kind = kinds.get(name)
    assert kind == name and str(kind) == name and isinstance(kind, str)
    assert copy.deepcopy(kind) is kind
    assert pickle.loads(pickle.dumps(kind)) == name
  with pytest.raises(KeyError, match="unknown feature kind 'embedding'"):
    kinds.get("embedding")


def test_parsed_fields_and_table_facts_per_kind(spec):
  expected = {
      # name: (kind, static size, multivalent, source columns, nonempty)
      "user": ("vocabulary", None, False, ("user_id",), ("user_id",)),
      "age_bucket": ("bucketized", 6, False, ("age",), ()),
      "genres": ("tokens", None, True, ("genres",), ()),
      "day_of_week": ("day_of_week", 7, False, ("timestamp",), ()),
      "hour_of_day": ("hour_of_day", 24, False, ("timestamp",), ()),
      "age_x_gender": ("cross", 64, False, (), ()),
      "occupation_x_genre": ("cross", 1000, True, (), ()),
  }
  for name, (kind, size, multivalent, sources, nonempty) in expected.items():
    feature = spec.feature(name)
    assert feature.kind == kind
    assert feature.static_size() == size
    assert spec.is_multivalent(name) == multivalent
    assert feature.source_columns == sources
    assert feature.kind.nonempty_columns(feature) == nonempty
  assert spec.feature("genres").delimiter == "|"
  assert spec.feature("age_x_gender").features == ("age_bucket", "gender")


def test_identity_hash_and_numeric_kinds():
  identity = _one_feature_spec(
      {"name": "slot", "kind": "identity", "source": "n", "num_buckets": 4}
  ).feature("slot")
  assert identity.static_size() == 5  # one default row
  assert identity.kind.domain(identity) == (
      [0, 1, 2, 3, 4], ["slot=0", "slot=1", "slot=2", "slot=3", "slot=4"])
  hashed = _one_feature_spec(
      {"name": "h", "kind": "hash", "source": "x", "hash_bucket_size": 10})
  feature = hashed.feature("h")
  assert feature.static_size() == 10 and feature.kind.ROWS_BY_NUMBER
  assert feature.kind.nonempty_columns(feature) == ("x",)
  assert hashed.hash_parameters("h") == {
      "bucket_size": 10,
      "function": ("tf.strings.to_hash_bucket_fast: FarmHash Fingerprint64 "
                   "of the UTF-8 string, modulo bucket_size"),
      "members": [{"name": "x", "kind": "raw column",
                   "value": "string form"}]}
  numeric = _one_feature_spec(
      {"name": "v", "kind": "numeric", "source": "n"}).feature("v")
  assert not numeric.is_categorical and numeric.kind.table_size(numeric,
                                                                None) == 0


def test_cross_member_descriptions(spec):
  params = spec.hash_parameters("occupation_x_genre")
  assert params["members"] == [
      {"name": "occupation", "kind": "vocabulary", "value": "raw string"},
      {"name": "genres", "kind": "tokens", "value": "tokens"}]
  assert spec.hash_parameters("age_x_gender")["members"][0] == {
      "name": "age_bucket", "kind": "bucketized", "value": "id",
      "num_buckets": 6}
  vocab_cross = _one_feature_spec(
      {"name": "xn", "kind": "cross", "features": ["a", "b"],
       "vocabulary": True},
      earlier=[{"name": "a", "kind": "vocabulary", "source": "x"},
               {"name": "b", "kind": "vocabulary", "source": "n"}])
  assert vocab_cross.hash_parameters("xn") == {
      "separator": "_X_",
      "members": [{"name": "a", "kind": "vocabulary", "value": "raw string"},
                  {"name": "b", "kind": "vocabulary",
                   "value": "raw int64"}]}
  assert vocab_cross.feature("xn").has_learned_vocabulary
  assert vocab_cross.feature("xn").static_size() is None


def test_row_tokens_per_kind(infos):
  assert infos["movie"].row_tokens(["m9", "m1", "m5", "m2"]) == [
      "m9", "m1", "m5", "m2", "[OOV_0]"]
  assert infos["day_of_week"].row_tokens() == [str(i) for i in range(7)]
  assert infos["age_bucket"].row_tokens() == [
      f"[BUCKET_{i}]" for i in range(6)]
  assert infos["day_x_hour"].row_tokens()[167] == "[BUCKET_167]"
  identity = feature_info_lib.FeatureInfo(
      name="slot", kind="identity", size=4, vocabulary_size=None,
      num_oov_buckets=0, embedding_dim=2, dim_range=(1, 3), multivalent=False,
      vocabulary_file=None)
  assert identity.row_tokens() == ["0", "1", "2", "[DEFAULT]"]
  with pytest.raises(ValueError, match="vocabulary has 2 tokens"):
    infos["movie"].row_tokens(["m1", "m2"])


def test_hash_parameters_and_cross_labels(spec, infos):
  params = spec.hash_parameters("day_x_hour")
  assert params["bucket_size"] == 168
  assert "cross_hashed" in params["function"]
  assert [m["name"] for m in params["members"]] == ["day_of_week",
                                                    "hour_of_day"]
  assert spec.hash_parameters("movie") is None
  tokens = infos["day_x_hour"].row_tokens()
  feature = spec.feature("day_x_hour")
  labels = feature.kind.row_labels(feature, spec, tokens)
  # Tuesday 14h: the pipeline's own hashed cross says which bucket it is in.
  bucket = cross_kind.hashed_cross(
      [tf.constant([[1]], tf.int64), tf.constant([[14]], tf.int64)], 168)
  bucket = int(tf.sparse.to_dense(bucket).numpy()[0, 0])
  assert "Tue 14h" in labels[bucket].split("|")
  combinations = [c for label in labels if not label.startswith("[BUCKET_")
                  for c in label.split("|")]
  assert len(combinations) == 7 * 24 and len(set(combinations)) == 7 * 24
  weekdays = spec.feature("day_of_week")
  assert weekdays.kind.row_labels(weekdays, spec, [str(i) for i in range(7)]
                                 ) == ["Mon", "Tue", "Wed", "Thu", "Fri",
                                       "Sat", "Sun"]
  movie = spec.feature("movie")
  assert movie.kind.row_labels(movie, spec, ["m1", "m2"]) == ["m1", "m2"]
