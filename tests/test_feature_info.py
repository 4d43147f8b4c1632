"""Final table sizes and embedding dimensions, and their JSON round trip."""

import dataclasses
import json

import pytest

from core import layout
from transforms import dims
from transforms import feature_info
from transforms import loader


def _spec():
  return loader.parse_spec({
      "name": "info",
      "inputs": {"rows": {
          "format": "csv", "path": "unused.csv",
          "columns": ["user_id", "item_id", "slot", "age", "genres", "ts",
                      "price", "rating"],
          "types": {"slot": "int", "age": "int", "ts": "int",
                    "price": "float", "rating": "float"}}},
      "split": {"key": "user_id"},
      "label": {"column": "rating"},
      "features": [
          {"name": "user", "kind": "vocabulary", "source": "user_id"},
          {"name": "item", "kind": "vocabulary", "source": "item_id",
           "num_oov_buckets": 10, "embedding_dim": 32},
          {"name": "slot", "kind": "identity", "source": "slot",
           "num_buckets": 80},
          {"name": "item_hash", "kind": "hash", "source": "item_id",
           "hash_bucket_size": 500000},
          {"name": "age_bucket", "kind": "bucketized", "source": "age",
           "num_buckets": 6},
          {"name": "price", "kind": "numeric", "source": "price"},
          {"name": "genres", "kind": "tokens", "source": "genres",
           "delimiter": "|", "num_oov_buckets": 2},
          {"name": "day", "kind": "day_of_week", "source": "ts"},
          {"name": "hour", "kind": "hour_of_day", "source": "ts"},
          {"name": "day_x_hour", "kind": "cross", "features": ["day", "hour"],
           "hash_bucket_size": 168},
          {"name": "age_x_genres", "kind": "cross",
           "features": ["age_bucket", "genres"], "vocabulary": True,
           "frequency_threshold": 5},
      ],
  })


VOCABULARY_SIZES = {"user": 943, "item": 1682, "genres": 19,
                    "age_x_genres": 70}


@pytest.fixture
def infos():
  return feature_info.resolve_feature_info(_spec(), VOCABULARY_SIZES)


def test_sizes_per_kind(infos):
  assert {name: info.size for name, info in infos.items()} == {
      "user": 944,            # vocabulary + 1 OOV row
      "item": 1692,           # vocabulary + 10 OOV rows
      "slot": 81,             # identity: one default row for out-of-range
      "item_hash": 500000,
      "age_bucket": 6,
      "price": 0,             # numeric: no table
      "genres": 21,
      "day": 7,
      "hour": 24,
      "day_x_hour": 168,
      "age_x_genres": 71,
  }
  assert infos["item"].vocabulary_size == 1682
  assert infos["item"].num_oov_buckets == 10
  assert infos["slot"].vocabulary_size is None
  assert infos["slot"].num_oov_buckets == 0


def test_auto_dims_follow_the_fourth_root_rule(infos):
  # round(size ** 0.25): 944 -> 5.54, 500000 -> 26.6, 7 -> 1.63, 168 -> 3.6.
  assert {name: info.embedding_dim for name, info in infos.items()} == {
      "user": 6, "item": 32, "slot": 3, "item_hash": 27, "age_bucket": 2,
      "price": 0, "genres": 2, "day": 2, "hour": 2, "day_x_hour": 4,
      "age_x_genres": 3}


def test_auto_embedding_dim_values():
  # The design's "about 25" for 500,000 rows is round(26.59) = 27.
  assert dims.auto_embedding_dim(500_000) == 27
  assert dims.auto_embedding_dim(1_683) == 6
  assert dims.auto_embedding_dim(10_000) == 10
  assert dims.auto_embedding_dim(1) == 1
  assert dims.auto_embedding_dim(0) == 1


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 6, 10, 27, 64, 100])
def test_dim_range_spans_about_0_6x_to_1_4x(dim):
  low, high = dims.embedding_dim_range(dim)
  assert 1 <= low <= dim <= high
  if dim >= 10:
    assert 0.5 <= low / dim <= 0.6
    assert 1.4 <= high / dim <= 1.5


def test_dim_range_exact_values():
  assert dims.embedding_dim_range(27) == (16, 38)
  assert dims.embedding_dim_range(10) == (6, 14)
  assert dims.embedding_dim_range(1) == (1, 2)


def test_dim_range_is_around_the_rule_even_with_an_explicit_dim(infos):
  assert infos["item"].embedding_dim == 32
  assert infos["item"].dim_range == dims.embedding_dim_range(
      dims.auto_embedding_dim(1692))
  assert infos["item_hash"].dim_range == (16, 38)
  assert infos["price"].dim_range == (0, 0)


def test_multivalence_and_vocabulary_files(infos):
  assert {n for n, i in infos.items() if i.multivalent} == {
      "genres", "age_x_genres"}
  assert {n: i.vocabulary_file for n, i in infos.items()
          if i.vocabulary_file} == {"user": "user", "item": "item",
                                    "genres": "genres",
                                    "age_x_genres": "age_x_genres"}
  assert list(infos) == [f.name for f in _spec().features]


def test_missing_vocabulary_size_is_a_clear_error():
  sizes = dict(VOCABULARY_SIZES)
  del sizes["genres"]
  with pytest.raises(ValueError, match=r"\['genres'\]"):
    feature_info.resolve_feature_info(_spec(), sizes)


def test_write_read_round_trip(infos, tmp_path):
  path = feature_info.write_feature_info(str(tmp_path), infos)
  assert path == layout.PreprocessedLayout(str(tmp_path)).feature_info
  with open(path) as handle:
    payload = json.load(handle)
  assert payload["item_hash"]["dim_range"] == [16, 38]
  assert list(payload) == list(infos)
  back = feature_info.read_feature_info(str(tmp_path))
  assert back == infos
  assert list(back) == list(infos)
  assert isinstance(back["user"].dim_range, tuple)
  assert dataclasses.asdict(back["genres"]) == dataclasses.asdict(
      infos["genres"])


def test_read_on_a_missing_dir_names_the_path(tmp_path):
  missing = str(tmp_path / "never_preprocessed")
  with pytest.raises(FileNotFoundError) as error:
    feature_info.read_feature_info(missing)
  assert missing in str(error.value)
  assert "embeddings preprocess" in str(error.value)


def test_read_rejects_a_foreign_file(tmp_path):
  (tmp_path / "feature_info.json").write_text('{"user": {"x": 1}}')
  with pytest.raises(ValueError, match="not a valid feature info file"):
    feature_info.read_feature_info(str(tmp_path))
  (tmp_path / "feature_info.json").write_text("{not json")
  with pytest.raises(ValueError, match="not a valid feature info file"):
    feature_info.read_feature_info(str(tmp_path))
