"""The YAML feature spec: the shipped configs load; wrong specs fail early.

Every error must name the feature (or section) and the field, so each case
below checks the message text, not just the exception type.
"""

import copy
import os

import pytest
import yaml

from transforms import loader
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def _base():
  """A small valid spec: ratings joined with users and items."""
  return {
      "name": "small",
      "inputs": {
          "ratings": {"format": "csv", "path": "${DATA:-data}/ratings.csv",
                      "header": True,
                      "columns": ["user_id", "item_id", "rating", "ts"],
                      "types": {"rating": "float", "ts": "int"}},
          "users": {"format": "csv", "path": "${DATA:-data}/users.csv",
                    "key": "user_id", "columns": ["user_id", "age", "job"],
                    "types": {"age": "int"}},
          "items": {"format": "csv", "path": "${DATA:-data}/items.csv",
                    "key": "item_id",
                    "columns": ["item_id", "genres", "g_a", "g_b", "score"],
                    "types": {"g_a": "int", "g_b": "int", "score": "float"}},
      },
      "main": "ratings",
      "joins": [{"table": "users", "by": "user_id"},
                {"table": "items", "by": "item_id"}],
      "split": {"key": "user_id", "eval_fraction": 0.25, "seed": 3},
      "label": {"column": "rating", "min": 1, "max": 5},
      "features": [
          {"name": "user", "kind": "vocabulary", "source": "user_id",
           "top_k": 100, "frequency_threshold": 2},
          {"name": "item", "kind": "hash", "source": "item_id",
           "hash_bucket_size": 1000, "embedding_dim": 8},
          {"name": "age_bucket", "kind": "bucketized", "source": "age",
           "num_buckets": 4},
          {"name": "age_id", "kind": "identity", "source": "age",
           "num_buckets": 120},
          {"name": "score", "kind": "numeric", "source": "score"},
          {"name": "genres", "kind": "tokens", "source": "genres",
           "delimiter": "|"},
          {"name": "flags", "kind": "tokens", "flag_columns": ["g_a", "g_b"]},
          {"name": "day", "kind": "day_of_week", "source": "ts"},
          {"name": "hour", "kind": "hour_of_day", "source": "ts"},
          {"name": "day_x_hour", "kind": "cross",
           "features": ["day", "hour"], "hash_bucket_size": 168},
          {"name": "age_x_genres", "kind": "cross",
           "features": ["age_bucket", "genres"], "vocabulary": True,
           "frequency_threshold": 3},
          {"name": "nested", "kind": "cross",
           "features": ["age_x_genres", "user"], "hash_bucket_size": 50},
      ],
  }


def _feature(raw, name):
  return next(f for f in raw["features"] if f["name"] == name)


def test_base_spec_parses_into_typed_records():
  spec = loader.parse_spec(_base())
  assert spec.main_table.path == "data/ratings.csv"
  assert spec.main_table.header is True
  assert spec.inputs["users"].key == "user_id"
  assert spec.joins == (spec_lib.Join("users", "user_id"),
                        spec_lib.Join("items", "item_id"))
  assert spec.split == spec_lib.Split(("user_id",), 0.25, 3)
  assert spec.label == spec_lib.Label("rating", "regression", 1.0, 5.0)
  user = spec.feature("user")
  assert (user.top_k, user.frequency_threshold, user.num_oov_buckets) == (
      100, 2, 1)
  assert user.embedding_dim is None
  assert spec.feature("item").embedding_dim == 8
  assert spec.feature("flags").flag_columns == (("g_a", "g_a"),
                                                ("g_b", "g_b"))
  assert spec.feature("day_x_hour").features == ("day", "hour")
  assert [f.name for f in spec.numeric_features] == ["score"]
  assert "score" not in [f.name for f in spec.categorical_features]


def test_static_sizes_per_kind():
  spec = loader.parse_spec(_base())
  sizes = {f.name: f.static_size() for f in spec.features}
  assert sizes == {"user": None, "item": 1000, "age_bucket": 4,
                   "age_id": 121, "score": None, "genres": None,
                   "flags": None, "day": 7, "hour": 24, "day_x_hour": 168,
                   "age_x_genres": None, "nested": 50}


def test_multivalence_follows_tokens_through_crosses():
  spec = loader.parse_spec(_base())
  multivalent = {f.name for f in spec.features if spec.is_multivalent(f.name)}
  assert multivalent == {"genres", "flags", "age_x_genres", "nested"}


def test_learned_vocabularies_are_named_after_the_feature():
  spec = loader.parse_spec(_base())
  assert [f.name for f in spec.features if f.has_learned_vocabulary] == [
      "user", "genres", "flags", "age_x_genres"]


def test_raw_column_types_resolve_across_joined_tables():
  spec = loader.parse_spec(_base())
  assert spec.raw_column_types() == {
      "rating": "float", "user_id": "string", "item_id": "string",
      "age": "int", "score": "float", "genres": "string", "g_a": "int",
      "g_b": "int", "ts": "int"}


def test_environment_variables_expand_with_overrides_first(monkeypatch):
  raw = _base()
  raw["inputs"]["ratings"]["path"] = "${RATINGS_DIR}/r.csv"
  monkeypatch.setenv("RATINGS_DIR", "/from/env")
  assert loader.parse_spec(raw).main_table.path == "/from/env/r.csv"
  assert loader.parse_spec(raw, {"RATINGS_DIR": "/override"}).main_table \
      .path == "/override/r.csv"


def test_shipped_synthetic_config_loads(monkeypatch):
  monkeypatch.delenv("DATA_DIR", raising=False)
  spec = loader.load_spec(os.path.join(CONFIGS, "synthetic.yaml"))
  assert spec.main_table.path == "data/synthetic/ratings.csv"
  spec = loader.load_spec(os.path.join(CONFIGS, "synthetic.yaml"),
                            {"DATA_DIR": "/tmp/gen"})
  assert spec.main_table.path == "/tmp/gen/ratings.csv"
  assert spec.inputs["items"].path == "/tmp/gen/items.csv"
  assert spec.split.key == ("user_id", "item_id")
  assert [f.kind for f in spec.features] == [
      "vocabulary", "vocabulary", "vocabulary", "vocabulary", "bucketized",
      "tokens", "day_of_week", "hour_of_day", "cross", "cross", "cross"]
  assert spec.is_multivalent("occupation_x_genre")
  assert not spec.is_multivalent("day_x_hour")
  assert spec.feature("day_x_hour").static_size() == 168
  assert spec.model["user_feature"] == "user"


def test_shipped_movielens_config_loads():
  spec = loader.load_spec(os.path.join(CONFIGS, "movielens100k.yaml"),
                            {"ML100K_DIR": "/data/ml", "ML100K_FOLD": "u3"})
  assert spec.main_table.path == "/data/ml/u3.base"
  assert spec.main_table.eval_path == "/data/ml/u3.test"
  assert spec.main_table.delimiter == "\t"
  assert spec.inputs["items"].encoding == "latin-1"
  assert spec.split is None
  genres = spec.feature("genres")
  assert len(genres.flag_columns) == 19
  assert genres.flag_columns[0] == ("g_unknown", "unknown")
  assert dict(genres.flag_columns)["g_childrens"] == "Children's"
  assert {f.name for f in spec.features if spec.is_multivalent(f.name)} == {
      "genres", "occupation_x_genre"}
  assert spec.raw_column_types()["timestamp"] == "int"


def test_movielens_config_defaults_to_the_shared_data_folder(monkeypatch):
  monkeypatch.delenv("ML100K_DIR", raising=False)
  monkeypatch.delenv("ML100K_FOLD", raising=False)
  spec = loader.load_spec(os.path.join(CONFIGS, "movielens100k.yaml"))
  assert spec.main_table.path == "../shared/data/ml-100k/u1.base"


def _mutate(change):
  raw = _base()
  change(raw)
  return raw


def _set_feature(name, **fields):
  def change(raw):
    feature = _feature(raw, name)
    for field, value in fields.items():
      if value is _DELETE:
        del feature[field]
      else:
        feature[field] = value
  return change


def _add_feature(**fields):
  def change(raw):
    raw["features"].append(fields)
  return change


_DELETE = object()

# (id, change, fragments every message must contain).
ERROR_CASES = [
    ("unknown_kind", _set_feature("user", kind="embedding"),
     ["feature 'user'", "field 'kind'", "'embedding'"]),
    ("missing_kind", _set_feature("user", kind=_DELETE),
     ["feature 'user'", "missing required field 'kind'"]),
    ("missing_column", _set_feature("user", source="no_such_column"),
     ["feature 'user'", "field 'source'", "'no_such_column'"]),
    ("missing_source", _set_feature("item", source=_DELETE),
     ["feature 'item'", "missing required field 'source'"]),
    ("cross_of_unknown_feature",
     _set_feature("day_x_hour", features=["day", "ghost"]),
     ["feature 'day_x_hour'", "field 'features'", "'ghost'"]),
    ("cross_of_later_feature",
     _set_feature("day_x_hour", features=["day", "nested"]),
     ["feature 'day_x_hour'", "field 'features'", "'nested'",
      "defined before"]),
    ("cross_of_numeric_feature",
     _set_feature("day_x_hour", features=["day", "score"]),
     ["feature 'day_x_hour'", "field 'features'", "numeric feature 'score'"]),
    ("cross_of_one_feature", _set_feature("day_x_hour", features=["day"]),
     ["feature 'day_x_hour'", "field 'features'", "at least two"]),
    ("cross_repeats_a_member", _set_feature("day_x_hour",
                                            features=["day", "day"]),
     ["feature 'day_x_hour'", "field 'features'", "repeats"]),
    ("hashed_cross_without_size",
     _set_feature("day_x_hour", hash_bucket_size=_DELETE),
     ["feature 'day_x_hour'", "missing required field 'hash_bucket_size'"]),
    ("vocabulary_cross_with_hash_size",
     _set_feature("age_x_genres", hash_bucket_size=10),
     ["feature 'age_x_genres'", "field 'hash_bucket_size'", "conflicts"]),
    ("vocabulary_options_on_hashed_cross",
     _set_feature("day_x_hour", top_k=3),
     ["feature 'day_x_hour'", "['top_k']", "vocabulary: true"]),
    ("cross_vocabulary_not_a_bool",
     _set_feature("age_x_genres", vocabulary="false"),
     ["feature 'age_x_genres'", "field 'vocabulary'", "true or false"]),
    ("hash_size_zero", _set_feature("item", hash_bucket_size=0),
     ["feature 'item'", "field 'hash_bucket_size'", "> 0", "got 0"]),
    ("hash_size_negative", _set_feature("item", hash_bucket_size=-5),
     ["feature 'item'", "field 'hash_bucket_size'", "got -5"]),
    ("hash_size_float", _set_feature("item", hash_bucket_size=2.5),
     ["feature 'item'", "field 'hash_bucket_size'", "integer", "2.5"]),
    ("hash_size_string", _set_feature("item", hash_bucket_size="10"),
     ["feature 'item'", "field 'hash_bucket_size'", "integer", "'10'"]),
    ("hash_size_bool", _set_feature("item", hash_bucket_size=True),
     ["feature 'item'", "field 'hash_bucket_size'", "integer"]),
    ("cross_size_zero", _set_feature("day_x_hour", hash_bucket_size=0),
     ["feature 'day_x_hour'", "field 'hash_bucket_size'", "> 0"]),
    ("identity_buckets_zero", _set_feature("age_id", num_buckets=0),
     ["feature 'age_id'", "field 'num_buckets'", "> 0"]),
    ("bucketized_one_bucket", _set_feature("age_bucket", num_buckets=1),
     ["feature 'age_bucket'", "field 'num_buckets'", ">= 2"]),
    ("top_k_zero", _set_feature("user", top_k=0),
     ["feature 'user'", "field 'top_k'", "> 0"]),
    ("frequency_threshold_negative",
     _set_feature("user", frequency_threshold=-1),
     ["feature 'user'", "field 'frequency_threshold'", ">= 0"]),
    ("no_oov_bucket", _set_feature("user", num_oov_buckets=0),
     ["feature 'user'", "field 'num_oov_buckets'", "> 0"]),
    ("embedding_dim_zero", _set_feature("user", embedding_dim=0),
     ["feature 'user'", "field 'embedding_dim'", "> 0"]),
    ("embedding_dim_word", _set_feature("user", embedding_dim="big"),
     ["feature 'user'", "field 'embedding_dim'", "'big'"]),
    ("embedding_dim_on_numeric", _set_feature("score", embedding_dim=4),
     ["feature 'score'", "field 'embedding_dim'", "numeric"]),
    ("unknown_field", _set_feature("user", buckets=3),
     ["feature 'user'", "unknown field(s) ['buckets']"]),
    ("field_of_another_kind", _set_feature("user", hash_bucket_size=10),
     ["feature 'user'", "['hash_bucket_size']", "do not apply",
      "'vocabulary'"]),
    ("duplicate_name", _add_feature(name="user", kind="hash",
                                    source="item_id", hash_bucket_size=3),
     ["feature 'user'", "field 'name'", "repeats"]),
    ("reserved_label_name", _add_feature(name="label", kind="hash",
                                         source="item_id",
                                         hash_bucket_size=3),
     ["feature 'label'", "field 'name'", "reserved"]),
    ("bad_name", _add_feature(name="two words", kind="hash",
                              source="item_id", hash_bucket_size=3),
     ["feature 'two words'", "field 'name'", "identifier"]),
    ("flag_column_of_wrong_type",
     _set_feature("flags", flag_columns=["g_a", "genres"]),
     ["feature 'flags'", "field 'flag_columns'", "'genres'", "type int"]),
    ("flag_column_missing",
     _set_feature("flags", flag_columns={"g_a": "A", "g_z": "Z"}),
     ["feature 'flags'", "field 'flag_columns'", "'g_z'"]),
    ("flag_tokens_repeat",
     _set_feature("flags", flag_columns={"g_a": "A", "g_b": "A"}),
     ["feature 'flags'", "field 'flag_columns'", "distinct"]),
    ("flag_columns_with_delimiter", _set_feature("flags", delimiter="|"),
     ["feature 'flags'", "field 'flag_columns'", "'delimiter'"]),
    ("tokens_without_delimiter", _set_feature("genres", delimiter=_DELETE),
     ["feature 'genres'", "missing required field 'delimiter'"]),
    ("tokens_empty_delimiter", _set_feature("genres", delimiter=""),
     ["feature 'genres'", "field 'delimiter'", "non-empty"]),
    ("tokens_from_int_column", _set_feature("genres", source="age"),
     ["feature 'genres'", "field 'source'", "'age'", "string"]),
    ("numeric_from_string_column", _set_feature("score", source="genres"),
     ["feature 'score'", "field 'source'", "'genres'", "string"]),
    ("time_from_float_column", _set_feature("day", source="score"),
     ["feature 'day'", "field 'source'", "'score'", "int"]),
    ("identity_from_float_column", _set_feature("age_id", source="score"),
     ["feature 'age_id'", "field 'source'", "'score'", "int"]),
    ("missing_env_var",
     lambda raw: raw["inputs"]["users"].update(path="${SPEC_TEST_UNSET}/u"),
     ["input 'users'", "field 'path'", "${SPEC_TEST_UNSET}", "not set"]),
    ("missing_env_var_in_eval_path",
     lambda raw: raw["inputs"]["ratings"].update(
         eval_path="${SPEC_TEST_UNSET}/e"),
     ["input 'ratings'", "field 'eval_path'", "${SPEC_TEST_UNSET}"]),
    ("unknown_input_field",
     lambda raw: raw["inputs"]["users"].update(sep="|"),
     ["input 'users'", "unknown field(s) ['sep']"]),
    ("unknown_format",
     lambda raw: raw["inputs"]["users"].update(format="xlsx"),
     ["input 'users'", "field 'format'", "'xlsx'"]),
    ("long_delimiter",
     lambda raw: raw["inputs"]["users"].update(delimiter="||"),
     ["input 'users'", "field 'delimiter'", "one character"]),
    ("header_not_bool",
     lambda raw: raw["inputs"]["users"].update(header="no"),
     ["input 'users'", "field 'header'", "true or false"]),
    ("unknown_column_type",
     lambda raw: raw["inputs"]["users"]["types"].update(age="int32"),
     ["input 'users'", "field 'types'", "'int32'"]),
    ("join_of_unknown_table",
     lambda raw: raw["joins"].append({"table": "movies", "by": "item_id"}),
     ["joins[2]", "field 'table'", "'movies'"]),
    ("join_by_missing_column",
     lambda raw: raw["joins"][0].update(by="uid"),
     ["joins[0]", "field 'by'", "'uid'"]),
    ("split_key_missing", lambda raw: raw["split"].update(key="nope"),
     ["split", "field 'key'", "'nope'"]),
    ("split_fraction_out_of_range",
     lambda raw: raw["split"].update(eval_fraction=1.5),
     ["split", "field 'eval_fraction'", "(0, 1)"]),
    ("split_fraction_not_a_number",
     lambda raw: raw["split"].update(eval_fraction="half"),
     ["split", "field 'eval_fraction'", "number"]),
    ("label_column_missing", lambda raw: raw["label"].update(column="stars"),
     ["label", "field 'column'", "'stars'"]),
    ("label_range_inverted", lambda raw: raw["label"].update(min=5, max=1),
     ["label", "field 'min'", "field 'max'"]),
    ("unknown_top_level_field", lambda raw: raw.update(featuers=[]),
     ["spec", "unknown field(s) ['featuers']"]),
]


@pytest.mark.parametrize("change,fragments",
                         [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_wrong_spec_fails_naming_feature_and_field(change, fragments,
                                                   monkeypatch):
  monkeypatch.delenv("SPEC_TEST_UNSET", raising=False)
  raw = _mutate(change)
  with pytest.raises(spec_lib.SpecError) as error:
    loader.parse_spec(raw)
  message = str(error.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_error_cases_all_start_from_a_valid_spec():
  # Guards the table above: the base is valid, so each error comes from the
  # one change that case makes.
  loader.parse_spec(copy.deepcopy(_base()))


def test_load_spec_reports_a_missing_file(tmp_path):
  path = str(tmp_path / "none.yaml")
  with pytest.raises(spec_lib.SpecError, match="does not exist"):
    loader.load_spec(path)


def test_load_spec_reports_invalid_yaml(tmp_path):
  path = tmp_path / "bad.yaml"
  path.write_text("features: [unclosed\n")
  with pytest.raises(spec_lib.SpecError, match="not valid YAML"):
    loader.load_spec(str(path))


def test_load_spec_validates_what_it_reads(tmp_path):
  raw = _base()
  _feature(raw, "item")["hash_bucket_size"] = -1
  path = tmp_path / "spec.yaml"
  path.write_text(yaml.safe_dump(raw))
  with pytest.raises(spec_lib.SpecError,
                     match="feature 'item': field 'hash_bucket_size'"):
    loader.load_spec(str(path))
  _feature(raw, "item")["hash_bucket_size"] = 64
  path.write_text(yaml.safe_dump(raw))
  assert loader.load_spec(str(path)).feature("item").static_size() == 64


def test_env_flags_parse_in_order_and_reject_malformed_entries():
  assert spec_lib.parse_env_flags(["A=1", "B=x=y", "A=2", "C="]) == (
      ("A", "1"), ("B", "x=y"), ("A", "2"), ("C", ""))
  assert dict(spec_lib.parse_env_flags(["A=1", "A=2"])) == {"A": "2"}
  assert spec_lib.parse_env_flags(None) == ()
  for bad in ("NOEQUALS", "=value"):
    with pytest.raises(spec_lib.SpecError, match="expected NAME=VALUE"):
      spec_lib.parse_env_flags([bad])
