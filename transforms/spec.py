"""The feature spec: one typed record per feature, loaded from YAML.

This module is the single source of truth shared by the preprocessing
pipeline (`pipelines/preprocess.py`), `preprocessing_fn`
(`transforms/preprocessing.py`) and the trainer (`trainer/`). A spec names
the raw inputs (files or BigQuery tables and queries, formats, column
types), how side tables join onto the main table, how rows split into
train and eval, the label, and every feature.

Every error found while loading names the feature (or section) and the field,
and is raised before any Beam work starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

# Feature kinds. Categorical kinds end as int64 ids in [0, size); numeric ends
# as a float32 z-score.
VOCABULARY = "vocabulary"
IDENTITY = "identity"
HASH = "hash"
BUCKETIZED = "bucketized"
NUMERIC = "numeric"
TOKENS = "tokens"
CROSS = "cross"
DAY_OF_WEEK = "day_of_week"
HOUR_OF_DAY = "hour_of_day"

FEATURE_KINDS = (VOCABULARY, IDENTITY, HASH, BUCKETIZED, NUMERIC, TOKENS,
                 CROSS, DAY_OF_WEEK, HOUR_OF_DAY)
CATEGORICAL_KINDS = tuple(k for k in FEATURE_KINDS if k != NUMERIC)
TIME_KINDS = {DAY_OF_WEEK: 7, HOUR_OF_DAY: 24}

COLUMN_TYPES = ("string", "int", "float")
BIGQUERY = "bigquery"
FILE_FORMATS = ("csv", "parquet", "tfrecord")
INPUT_FORMATS = FILE_FORMATS + (BIGQUERY,)
TASKS = ("regression", "binary")

# The transformed column that carries the label; no feature may take the name.
LABEL_KEY = "label"

# The fourth-root rule gives a starting point; the tuning range around it is
# what `embeddings tune` searches.
AUTO_DIM_RANGE = (0.6, 1.4)

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# [PROJECT:|PROJECT.]DATASET.TABLE, as Beam's bigquery_tools parses it (a
# domain-scoped project is "example.com:project"; a table may carry a
# "$YYYYMMDD" partition decorator).
_BIGQUERY_TABLE = re.compile(
    r"^(?:(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9])[:.])?"
    r"\w{1,1024}\.[^.:`\s][^.:`]{0,1023}$")


class SpecError(ValueError):
  """A feature spec that cannot be used; the message names what and where."""


@dataclasses.dataclass(frozen=True)
class InputTable:
  """One raw input table.

  Attributes:
    name: table name used by joins.
    format: csv, parquet, tfrecord (tf.Example) or bigquery.
    path: file pattern (local, gs:// or any Beam filesystem); None for
      bigquery.
    columns: column names in file order (CSV) or the columns to read.
    types: column name -> string | int | float.
    delimiter: CSV field delimiter.
    header: whether the CSV's first line is a header to skip.
    encoding: text encoding of CSV files and of bytes values (tf.Example,
      BigQuery BYTES); rows that do not decode are dead-lettered.
    key: join key column for side tables.
    eval_path: for the main table, an explicit eval file pattern (then
      `split` is not used).
    table: bigquery only: "PROJECT:DATASET.TABLE" or "PROJECT.DATASET.TABLE"
      (or "DATASET.TABLE" in the job's --project).
    query: bigquery only, instead of `table`: a query whose result is read.
    use_standard_sql: bigquery `query` only: standard SQL (true) or legacy
      SQL.
  """
  name: str
  format: str
  path: Optional[str]
  columns: Tuple[str, ...]
  types: Mapping[str, str]
  delimiter: str = ","
  header: bool = False
  encoding: str = "utf-8"
  key: Optional[str] = None
  eval_path: Optional[str] = None
  table: Optional[str] = None
  query: Optional[str] = None
  use_standard_sql: bool = True

  @property
  def is_bigquery(self) -> bool:
    return self.format == BIGQUERY

  @property
  def bigquery_project(self) -> Optional[str]:
    """The project a bigquery `table` names, or None (then --project's)."""
    if self.table is None:
      return None
    return _BIGQUERY_TABLE.match(self.table).group("project")


@dataclasses.dataclass(frozen=True)
class Join:
  """Joins side table `table` onto the main table where main.by == table.key.

  (`by`, not `on`: YAML 1.1 reads a bare `on` as the boolean true.)
  """
  table: str
  by: str
  how: str = "broadcast"  # broadcast (side input) or shuffle (CoGroupByKey)


@dataclasses.dataclass(frozen=True)
class Split:
  """Deterministic train/eval split by a hash of the `key` columns.

  One column keeps all rows sharing it on one side (split by user: eval
  users are unseen in training); several columns, e.g. (user_id, item_id),
  split the ratings themselves, so eval users also have training rows.
  """
  key: Tuple[str, ...]
  eval_fraction: float = 0.2
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Label:
  """The training target and its valid range (rows outside are rejected)."""
  column: str
  task: str = "regression"
  min: Optional[float] = None
  max: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
  """Where a pretrained embedding table comes from (issue: frozen transfer)."""
  path: str
  tensor: str
  trainable: bool = False


@dataclasses.dataclass(frozen=True)
class Feature:
  """One feature: how it is computed from raw columns and how it is embedded.

  Attributes:
    name: output feature name; also the vocabulary file name for kinds with
      a learned vocabulary.
    kind: one of FEATURE_KINDS.
    source: raw column the feature reads (not for cross; for tokens unless
      flag_columns is set).
    top_k, frequency_threshold, num_oov_buckets: vocabulary options
      (vocabulary, tokens, and cross with `vocabulary: true`).
    num_buckets: identity ids' range [0, num_buckets) (out-of-range ids go
      to one extra default row), or the number of quantile buckets.
    hash_bucket_size: hash and hashed-cross table size.
    delimiter: tokens split on this delimiter.
    flag_columns: tokens from 0/1 columns; maps column -> token.
    features: cross member feature names.
    vocabulary: a cross backed by a learned vocabulary instead of a hash.
    embedding_dim: explicit int, or None for the fourth-root rule.
    from_checkpoint: a pretrained table to load.
  """
  name: str
  kind: str
  source: Optional[str] = None
  top_k: Optional[int] = None
  frequency_threshold: Optional[int] = None
  num_oov_buckets: int = 1
  num_buckets: Optional[int] = None
  hash_bucket_size: Optional[int] = None
  delimiter: Optional[str] = None
  flag_columns: Optional[Tuple[Tuple[str, str], ...]] = None
  features: Tuple[str, ...] = ()
  vocabulary: bool = False
  embedding_dim: Optional[int] = None
  from_checkpoint: Optional[CheckpointSource] = None

  @property
  def is_categorical(self) -> bool:
    return self.kind in CATEGORICAL_KINDS

  @property
  def has_learned_vocabulary(self) -> bool:
    """True when tf.Transform writes a vocabulary file named `self.name`."""
    return self.kind in (VOCABULARY, TOKENS) or (
        self.kind == CROSS and self.vocabulary)

  @property
  def source_columns(self) -> Tuple[str, ...]:
    """Raw columns this feature reads directly (crosses read features)."""
    if self.kind == CROSS:
      return ()
    if self.flag_columns:
      return tuple(column for column, _ in self.flag_columns)
    return (self.source,)

  def static_size(self) -> Optional[int]:
    """Table size known without analysis, or None for learned vocabularies."""
    if self.has_learned_vocabulary or self.kind == NUMERIC:
      return None
    if self.kind in TIME_KINDS:
      return TIME_KINDS[self.kind]
    if self.kind in (HASH, CROSS):
      return self.hash_bucket_size
    if self.kind == IDENTITY:
      # One extra row, the default bucket, receives out-of-range ids.
      return self.num_buckets + 1
    return self.num_buckets


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """A whole spec: inputs, joins, split, label, features and model options."""
  name: str
  inputs: Mapping[str, InputTable]
  main: str
  joins: Tuple[Join, ...]
  split: Optional[Split]
  label: Label
  features: Tuple[Feature, ...]
  model: Mapping[str, Any]
  max_rejected_fraction: float = 0.01

  @property
  def main_table(self) -> InputTable:
    return self.inputs[self.main]

  def feature(self, name: str) -> Feature:
    """The feature called `name`.

    Args:
      name: a feature name.

    Returns:
      Its Feature record.

    Raises:
      KeyError: no feature has that name.
    """
    for feature in self.features:
      if feature.name == name:
        return feature
    raise KeyError(f"no feature named {name!r} in spec {self.name!r}")

  @property
  def categorical_features(self) -> Tuple[Feature, ...]:
    return tuple(f for f in self.features if f.is_categorical)

  @property
  def numeric_features(self) -> Tuple[Feature, ...]:
    return tuple(f for f in self.features if f.kind == NUMERIC)

  def is_multivalent(self, name: str) -> bool:
    """Whether a feature yields a variable number of ids per row.

    Args:
      name: a feature name.

    Returns:
      True for tokens and for crosses with a multivalent member (their
      output is a SparseTensor), else False.
    """
    feature = self.feature(name)
    if feature.kind == TOKENS:
      return True
    if feature.kind == CROSS:
      return any(self.is_multivalent(member) for member in feature.features)
    return False

  def raw_column_types(self) -> Dict[str, str]:
    """Column -> type of the joined row that preprocessing_fn receives.

    Returns:
      Every column the features and the label read (in spec order, label
      first), with its type resolved across the main and side tables. Split
      and join keys are used before tf.Transform and appear only when a
      feature reads them.
    """
    available = {}
    for table in self.inputs.values():
      available.update(table.types)
    needed = [self.label.column]
    for feature in self.features:
      needed.extend(feature.source_columns)
    return {column: available[column] for column in dict.fromkeys(needed)}


def auto_embedding_dim(size: int) -> int:
  """The fourth-root rule: round(size ** 0.25), at least 1.

  Args:
    size: the table's final row count (vocabulary + OOV buckets, or buckets).

  Returns:
    The suggested embedding dimension (500,000 -> 27, 1,682 -> 6).
  """
  return max(1, int(round(size ** 0.25)))


def embedding_dim_range(dim: int) -> Tuple[int, int]:
  """The tuning range around a suggested dimension (about 0.6x .. 1.4x).

  Args:
    dim: the suggested dimension.

  Returns:
    (low, high), inclusive, low >= 1.
  """
  low, high = AUTO_DIM_RANGE
  return max(1, int(math.floor(dim * low))), max(1, int(math.ceil(dim * high)))


def _expand_env(value: str, where: str, overrides: Mapping[str, str]) -> str:
  def substitute(match):
    var, default = match.group(1), match.group(2)
    if var in overrides:
      return overrides[var]
    if var in os.environ:
      return os.environ[var]
    if default is not None:
      return default
    raise SpecError(f"{where}: environment variable ${{{var}}} is not set "
                    f"(set it, or give a default as ${{{var}:-value}})")
  return _ENV_VAR.sub(substitute, value)


def _require(mapping: Mapping[str, Any], field: str, where: str) -> Any:
  if field not in mapping or mapping[field] is None:
    raise SpecError(f"{where}: missing required field '{field}'")
  return mapping[field]


def _positive_int(value: Any, field: str, where: str,
                  allow_zero: bool = False) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise SpecError(f"{where}: field '{field}' must be an integer, "
                    f"got {value!r}")
  if value < 0 or (value == 0 and not allow_zero):
    raise SpecError(f"{where}: field '{field}' must be "
                    f"{'>= 0' if allow_zero else '> 0'}, got {value}")
  return value


def _bool(value: Any, field: str, where: str) -> bool:
  # bool("false") is True: only real YAML booleans are accepted.
  if not isinstance(value, bool):
    raise SpecError(f"{where}: field '{field}' must be true or false, "
                    f"got {value!r}")
  return value


def _number(value: Any, field: str, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise SpecError(f"{where}: field '{field}' must be a number, "
                    f"got {value!r}")
  return float(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
  if not isinstance(value, Mapping):
    raise SpecError(f"{where}: must be a mapping, got {value!r}")
  return value


def _check_keys(mapping: Mapping[str, Any], allowed: Sequence[str],
                where: str) -> None:
  unknown = sorted(set(mapping) - set(allowed))
  if unknown:
    raise SpecError(f"{where}: unknown field(s) {unknown}; "
                    f"allowed: {sorted(allowed)}")


_BIGQUERY_ONLY_FIELDS = ("table", "query", "use_standard_sql")
_FILE_ONLY_FIELDS = ("path", "eval_path", "delimiter", "header")
_INPUT_FIELDS = ("format", "columns", "types", "encoding", "key"
                ) + _FILE_ONLY_FIELDS + _BIGQUERY_ONLY_FIELDS


def _parse_bigquery_source(raw: Mapping[str, Any], where: str,
                           overrides: Mapping[str, str]
                          ) -> Tuple[Optional[str], Optional[str], bool]:
  """(table, query, use_standard_sql) of a bigquery input, validated."""
  given = [field for field in ("table", "query") if raw.get(field) is not None]
  if len(given) != 1:
    raise SpecError(
        f"{where}: format 'bigquery' needs exactly one of field 'table' or "
        f"field 'query', got {'both' if given else 'neither'}")
  field = given[0]
  value = raw[field]
  if not isinstance(value, str) or not value.strip():
    raise SpecError(f"{where}: field {field!r} must be a non-empty string, "
                    f"got {value!r}")
  value = _expand_env(value, f"{where}: field {field!r}", overrides)
  if field == "table":
    if not _BIGQUERY_TABLE.match(value):
      raise SpecError(f"{where}: field 'table' must be PROJECT:DATASET.TABLE, "
                      f"PROJECT.DATASET.TABLE or DATASET.TABLE, got {value!r}")
    if "use_standard_sql" in raw:
      raise SpecError(f"{where}: field 'use_standard_sql' applies only to "
                      f"field 'query'")
    return value, None, True
  standard = _bool(raw.get("use_standard_sql", True), "use_standard_sql",
                   where)
  return None, value.strip(), standard


def _parse_input(name: str, raw: Mapping[str, Any],
                 overrides: Mapping[str, str]) -> InputTable:
  where = f"input '{name}'"
  _mapping(raw, where)
  _check_keys(raw, _INPUT_FIELDS, where)
  fmt = _require(raw, "format", where)
  if fmt not in INPUT_FORMATS:
    raise SpecError(f"{where}: field 'format' must be one of {INPUT_FORMATS}, "
                    f"got {fmt!r}")
  misplaced = sorted(set(raw) & set(
      _FILE_ONLY_FIELDS if fmt == BIGQUERY else _BIGQUERY_ONLY_FIELDS))
  if misplaced:
    raise SpecError(f"{where}: field(s) {misplaced} do not apply to format "
                    f"{fmt!r}")
  path = bq_table = query = None
  standard_sql = True
  if fmt == BIGQUERY:
    bq_table, query, standard_sql = _parse_bigquery_source(raw, where,
                                                           overrides)
  else:
    path = _expand_env(str(_require(raw, "path", where)),
                       f"{where}: field 'path'", overrides)
  columns = _require(raw, "columns", where)
  if not isinstance(columns, (list, tuple)) or not all(
      isinstance(column, str) for column in columns):
    raise SpecError(f"{where}: field 'columns' must be a list of names")
  columns = tuple(columns)
  if not columns or len(set(columns)) != len(columns):
    raise SpecError(f"{where}: field 'columns' must be non-empty and unique")
  types = dict(_mapping(raw.get("types") or {}, f"{where}: field 'types'"))
  for column, column_type in types.items():
    if column not in columns:
      raise SpecError(f"{where}: field 'types' names column {column!r} that "
                      f"is not in 'columns'")
    if column_type not in COLUMN_TYPES:
      raise SpecError(f"{where}: field 'types' gives column {column!r} type "
                      f"{column_type!r}; allowed: {COLUMN_TYPES}")
  full_types = {column: types.get(column, "string") for column in columns}
  key = raw.get("key")
  if key is not None and key not in columns:
    raise SpecError(f"{where}: field 'key' names column {key!r} that is not "
                    f"in 'columns'")
  eval_path = raw.get("eval_path")
  if eval_path is not None:
    eval_path = _expand_env(str(eval_path), f"{where}: field 'eval_path'",
                            overrides)
  delimiter = raw.get("delimiter", ",")
  if not isinstance(delimiter, str) or len(delimiter) != 1:
    raise SpecError(f"{where}: field 'delimiter' must be one character, "
                    f"got {delimiter!r}")
  return InputTable(name=name, format=fmt, path=path, columns=columns,
                    types=full_types, delimiter=delimiter,
                    header=_bool(raw.get("header", False), "header", where),
                    encoding=str(raw.get("encoding", "utf-8")), key=key,
                    eval_path=eval_path, table=bq_table, query=query,
                    use_standard_sql=standard_sql)


_FEATURE_FIELDS = ("name", "kind", "source", "top_k", "frequency_threshold",
                   "num_oov_buckets", "num_buckets", "hash_bucket_size",
                   "delimiter", "flag_columns", "features", "vocabulary",
                   "embedding_dim", "from_checkpoint")

# Fields each kind accepts beyond name/kind/embedding_dim/from_checkpoint.
_KIND_FIELDS = {
    VOCABULARY: ("source", "top_k", "frequency_threshold", "num_oov_buckets"),
    IDENTITY: ("source", "num_buckets"),
    HASH: ("source", "hash_bucket_size"),
    BUCKETIZED: ("source", "num_buckets"),
    NUMERIC: ("source",),
    TOKENS: ("source", "delimiter", "flag_columns", "top_k",
             "frequency_threshold", "num_oov_buckets"),
    CROSS: ("features", "hash_bucket_size", "vocabulary", "top_k",
            "frequency_threshold", "num_oov_buckets"),
    DAY_OF_WEEK: ("source",),
    HOUR_OF_DAY: ("source",),
}


def _parse_feature(raw: Mapping[str, Any], index: int,
                   column_types: Mapping[str, str],
                   earlier: Mapping[str, Feature]) -> Feature:
  if not isinstance(raw, Mapping):
    raise SpecError(f"features[{index}]: must be a mapping")
  name = raw.get("name")
  where = f"feature '{name}'" if name else f"features[{index}]"
  name = _require(raw, "name", where)
  if not isinstance(name, str) or not _NAME.match(name):
    raise SpecError(f"{where}: field 'name' must be an identifier "
                    f"(letters, digits, _), got {name!r}")
  if name in earlier:
    raise SpecError(f"{where}: field 'name' repeats an earlier feature")
  if name == LABEL_KEY:
    raise SpecError(f"{where}: field 'name' {LABEL_KEY!r} is reserved for "
                    f"the transformed label")
  _check_keys(raw, _FEATURE_FIELDS, where)
  kind = _require(raw, "kind", where)
  if kind not in FEATURE_KINDS:
    raise SpecError(f"{where}: field 'kind' must be one of {FEATURE_KINDS}, "
                    f"got {kind!r}")
  allowed = _KIND_FIELDS[kind] + ("name", "kind", "embedding_dim",
                                  "from_checkpoint")
  misplaced = sorted(set(raw) - set(allowed))
  if misplaced:
    raise SpecError(f"{where}: field(s) {misplaced} do not apply to kind "
                    f"{kind!r}")

  values: Dict[str, Any] = {"name": name, "kind": kind}
  flag_columns = raw.get("flag_columns")
  if kind == CROSS:
    members = raw.get("features")
    if not isinstance(members, (list, tuple)) or len(members) < 2:
      raise SpecError(f"{where}: field 'features' must list at least two "
                      f"features to cross")
    for member in members:
      if member not in earlier:
        raise SpecError(f"{where}: field 'features' names {member!r}, which "
                        f"is not a feature defined before this cross")
      if earlier[member].kind == NUMERIC:
        raise SpecError(f"{where}: field 'features' names numeric feature "
                        f"{member!r}; bucketize it to cross it")
    if len(set(members)) != len(members):
      raise SpecError(f"{where}: field 'features' repeats a feature")
    values["features"] = tuple(members)
    values["vocabulary"] = _bool(raw.get("vocabulary", False), "vocabulary",
                                 where)
    if not values["vocabulary"]:
      values["hash_bucket_size"] = _positive_int(
          _require(raw, "hash_bucket_size", where), "hash_bucket_size", where)
    elif "hash_bucket_size" in raw:
      raise SpecError(f"{where}: field 'hash_bucket_size' conflicts with "
                      f"'vocabulary: true'")
  elif kind == TOKENS and flag_columns is not None:
    if "source" in raw or "delimiter" in raw:
      raise SpecError(f"{where}: field 'flag_columns' excludes 'source' and "
                      f"'delimiter'")
    if isinstance(flag_columns, Mapping):
      pairs = tuple((str(c), str(t)) for c, t in flag_columns.items())
    elif isinstance(flag_columns, (list, tuple)):
      pairs = tuple((str(c), str(c)) for c in flag_columns)
    else:
      raise SpecError(f"{where}: field 'flag_columns' must be a list of "
                      f"columns or a mapping column -> token")
    if not pairs:
      raise SpecError(f"{where}: field 'flag_columns' is empty")
    tokens = [token for _, token in pairs]
    if "" in tokens or len(set(tokens)) != len(tokens):
      raise SpecError(f"{where}: field 'flag_columns' must give each column "
                      f"a distinct, non-empty token")
    for column, _ in pairs:
      if column not in column_types:
        raise SpecError(f"{where}: field 'flag_columns' names column "
                        f"{column!r}, which no input table has")
      if column_types[column] != "int":
        raise SpecError(f"{where}: field 'flag_columns' column {column!r} "
                        f"must have type int (0/1)")
    values["flag_columns"] = pairs
  else:
    source = _require(raw, "source", where)
    if source not in column_types:
      raise SpecError(f"{where}: field 'source' names column {source!r}, "
                      f"which no input table has")
    values["source"] = source
    if kind in (NUMERIC, BUCKETIZED) and column_types[source] == "string":
      raise SpecError(f"{where}: field 'source' column {source!r} is a "
                      f"string; kind {kind!r} needs an int or float column")
    # Ids and unix seconds must be exact: a float32 timestamp is off by up
    # to two minutes today.
    if kind in (IDENTITY, DAY_OF_WEEK, HOUR_OF_DAY) and (
        column_types[source] != "int"):
      raise SpecError(f"{where}: field 'source' column {source!r} has type "
                      f"{column_types[source]!r}; kind {kind!r} needs an int "
                      f"column")
    if kind == TOKENS:
      delimiter = _require(raw, "delimiter", where)
      if not isinstance(delimiter, str) or not delimiter:
        raise SpecError(f"{where}: field 'delimiter' must be a non-empty "
                        f"string, got {delimiter!r}")
      values["delimiter"] = delimiter
      if column_types[source] != "string":
        raise SpecError(f"{where}: field 'source' column {source!r} must be "
                        f"a string to split on a delimiter")

  if kind in (IDENTITY, BUCKETIZED):
    values["num_buckets"] = _positive_int(
        _require(raw, "num_buckets", where), "num_buckets", where)
    if kind == BUCKETIZED and values["num_buckets"] < 2:
      raise SpecError(f"{where}: field 'num_buckets' must be >= 2")
  if kind == HASH:
    values["hash_bucket_size"] = _positive_int(
        _require(raw, "hash_bucket_size", where), "hash_bucket_size", where)
  learned = kind in (VOCABULARY, TOKENS) or (
      kind == CROSS and values.get("vocabulary"))
  if learned:
    if raw.get("top_k") is not None:
      values["top_k"] = _positive_int(raw["top_k"], "top_k", where)
    if raw.get("frequency_threshold") is not None:
      values["frequency_threshold"] = _positive_int(
          raw["frequency_threshold"], "frequency_threshold", where,
          allow_zero=True)
    # At least one OOV bucket: an unseen token must still map to a row.
    values["num_oov_buckets"] = _positive_int(
        raw.get("num_oov_buckets", 1), "num_oov_buckets", where)
  elif kind == CROSS:
    options = sorted(set(raw) & {"top_k", "frequency_threshold",
                                 "num_oov_buckets"})
    if options:
      raise SpecError(f"{where}: field(s) {options} need 'vocabulary: true'")

  dim = raw.get("embedding_dim", "auto")
  if kind == NUMERIC:
    if "embedding_dim" in raw:
      raise SpecError(f"{where}: field 'embedding_dim' does not apply to a "
                      f"numeric feature")
    dim = None
  elif dim == "auto" or dim is None:
    dim = None
  else:
    dim = _positive_int(dim, "embedding_dim", where)
  values["embedding_dim"] = dim

  source_ckpt = raw.get("from_checkpoint")
  if source_ckpt is not None:
    ckpt_where = f"{where}: field 'from_checkpoint'"
    if not isinstance(source_ckpt, Mapping):
      raise SpecError(f"{ckpt_where} must be a mapping with path and tensor")
    _check_keys(source_ckpt, ("path", "tensor", "trainable"), ckpt_where)
    values["from_checkpoint"] = CheckpointSource(
        path=str(_require(source_ckpt, "path", ckpt_where)),
        tensor=str(_require(source_ckpt, "tensor", ckpt_where)),
        trainable=_bool(source_ckpt.get("trainable", False), "trainable",
                        ckpt_where))
  return Feature(**values)


def parse_spec(raw: Mapping[str, Any],
               env: Optional[Mapping[str, str]] = None) -> FeatureSpec:
  """Builds and validates a FeatureSpec from parsed YAML.

  Args:
    raw: the YAML document as Python data.
    env: variables that override the environment in `${VAR}` paths.

  Returns:
    The validated FeatureSpec.

  Raises:
    SpecError: naming the feature or section and the field at fault.
  """
  env = dict(env or {})
  if not isinstance(raw, Mapping):
    raise SpecError("spec: the document must be a mapping")
  _check_keys(raw, ("name", "inputs", "main", "joins", "split", "label",
                    "features", "model", "max_rejected_fraction"), "spec")
  name = str(raw.get("name", "spec"))
  raw_inputs = _require(raw, "inputs", "spec")
  if not isinstance(raw_inputs, Mapping) or not raw_inputs:
    raise SpecError("spec: field 'inputs' must map table names to tables")
  inputs = {n: _parse_input(n, t, env) for n, t in raw_inputs.items()}
  main = raw.get("main", next(iter(inputs)))
  if main not in inputs:
    raise SpecError(f"spec: field 'main' names table {main!r}, which is not "
                    f"in 'inputs'")

  joins = []
  raw_joins = raw.get("joins") or ()
  if not isinstance(raw_joins, (list, tuple)):
    raise SpecError("spec: field 'joins' must be a list")
  for index, raw_join in enumerate(raw_joins):
    where = f"joins[{index}]"
    _mapping(raw_join, where)
    _check_keys(raw_join, ("table", "by", "how"), where)
    table = _require(raw_join, "table", where)
    if table not in inputs or table == main:
      raise SpecError(f"{where}: field 'table' names {table!r}, which is not "
                      f"a side table in 'inputs'")
    if inputs[table].key is None:
      raise SpecError(f"{where}: input {table!r} needs a 'key' to be joined")
    by = _require(raw_join, "by", where)
    if by not in inputs[main].columns:
      raise SpecError(f"{where}: field 'by' names column {by!r}, which the "
                      f"main table {main!r} does not have")
    how = raw_join.get("how", "broadcast")
    if how not in ("broadcast", "shuffle"):
      raise SpecError(f"{where}: field 'how' must be broadcast or shuffle")
    joins.append(Join(table=table, by=by, how=how))

  # Columns visible after the joins: the main table's, then each side table's
  # (its key is the join column already present).
  column_types: Dict[str, str] = dict(inputs[main].types)
  for join in joins:
    side = inputs[join.table]
    for column, column_type in side.types.items():
      if column == side.key:
        continue
      if column in column_types:
        raise SpecError(f"input '{join.table}': column {column!r} also "
                        f"exists in another joined table; rename one")
      column_types[column] = column_type

  split = None
  main_table = inputs[main]
  if main_table.eval_path is None:
    raw_split = _mapping(_require(raw, "split", "spec"), "split")
    _check_keys(raw_split, ("key", "eval_fraction", "seed"), "split")
    key = _require(raw_split, "key", "split")
    key = (key,) if isinstance(key, str) else key
    if (not isinstance(key, (list, tuple)) or not key
        or not all(isinstance(column, str) for column in key)):
      raise SpecError(f"split: field 'key' must be a column or a list of "
                      f"columns, got {key!r}")
    for column in key:
      if column not in column_types:
        raise SpecError(f"split: field 'key' names column {column!r}, which "
                        f"no joined table has")
    key = tuple(dict.fromkeys(key))
    fraction = _number(raw_split.get("eval_fraction", 0.2), "eval_fraction",
                       "split")
    if not 0.0 < fraction < 1.0:
      raise SpecError(f"split: field 'eval_fraction' must be in (0, 1), "
                      f"got {fraction}")
    seed = _positive_int(raw_split.get("seed", 0), "seed", "split",
                         allow_zero=True)
    split = Split(key=key, eval_fraction=fraction, seed=seed)

  raw_label = _mapping(_require(raw, "label", "spec"), "label")
  _check_keys(raw_label, ("column", "task", "min", "max"), "label")
  label_column = _require(raw_label, "column", "label")
  if label_column not in column_types:
    raise SpecError(f"label: field 'column' names {label_column!r}, which no "
                    f"joined table has")
  if column_types[label_column] == "string":
    raise SpecError(f"label: column {label_column!r} must be int or float")
  task = raw_label.get("task", "regression")
  if task not in TASKS:
    raise SpecError(f"label: field 'task' must be one of {TASKS}")
  bounds = {field: None if raw_label.get(field) is None else
            _number(raw_label[field], field, "label")
            for field in ("min", "max")}
  if (bounds["min"] is not None and bounds["max"] is not None
      and bounds["min"] > bounds["max"]):
    raise SpecError(f"label: field 'min' ({bounds['min']}) is above field "
                    f"'max' ({bounds['max']})")
  label = Label(column=label_column, task=task, **bounds)

  raw_features = _require(raw, "features", "spec")
  if not isinstance(raw_features, (list, tuple)) or not raw_features:
    raise SpecError("spec: field 'features' must be a non-empty list")
  features: Dict[str, Feature] = {}
  for index, raw_feature in enumerate(raw_features):
    feature = _parse_feature(raw_feature, index, column_types, features)
    if feature.name == label.column:
      raise SpecError(f"feature '{feature.name}': field 'name' collides with "
                      f"the label column")
    features[feature.name] = feature

  model = dict(_mapping(raw.get("model") or {}, "spec: field 'model'"))
  fraction = _number(raw.get("max_rejected_fraction", 0.01),
                     "max_rejected_fraction", "spec")
  if not 0.0 <= fraction <= 1.0:
    raise SpecError("spec: field 'max_rejected_fraction' must be in [0, 1]")
  return FeatureSpec(name=name, inputs=inputs, main=main, joins=tuple(joins),
                     split=split, label=label,
                     features=tuple(features.values()), model=model,
                     max_rejected_fraction=fraction)


def parse_env_flags(pairs: Optional[Sequence[str]]
                   ) -> Tuple[Tuple[str, str], ...]:
  """Parses repeated `--env NAME=VALUE` flags (values for `${NAME}` in paths).

  Args:
    pairs: the flag values.

  Returns:
    (name, value) tuples in the order given; `dict()` of it lets later
    flags win.

  Raises:
    SpecError: an entry without '=' or with an empty name.
  """
  result = []
  for pair in pairs or ():
    name, equals, value = pair.partition("=")
    if not equals or not name:
      raise SpecError(f"--env {pair!r}: expected NAME=VALUE")
    result.append((name, value))
  return tuple(result)


def load_spec(path: str, env: Optional[Mapping[str, str]] = None
             ) -> FeatureSpec:
  """Loads and validates a YAML feature spec.

  Args:
    path: the YAML file.
    env: variables that override the environment in `${VAR}` paths.

  Returns:
    The validated FeatureSpec.

  Raises:
    SpecError: the file is missing, is not YAML, or fails validation.
  """
  try:
    with open(path, "r", encoding="utf-8") as handle:
      text = handle.read()
  except FileNotFoundError:
    raise SpecError(f"spec file {path!r} does not exist") from None
  try:
    raw = yaml.safe_load(text)
  except yaml.YAMLError as error:
    raise SpecError(f"spec file {path!r} is not valid YAML: {error}") from None
  return parse_spec(raw, env)
