"""The feature spec's records: one typed, frozen record per part of the YAML.

A spec names the raw inputs (files or BigQuery tables and queries, formats,
column types), how side tables join onto the main table, how rows split into
train and eval, the label, and every feature. `transforms/loader.py` builds
these records from YAML and rejects a wrong spec before any Beam work
starts; everything else (the pipeline, `preprocessing_fn`, the trainer, the
tuner, retraining) reads them.

A feature's `kind` is the kind object itself (transforms/kinds/): a string
equal to the spec's `kind:` value that also carries everything that depends
on the kind (validation, transform, size, row names, hashing), so nothing
outside transforms/kinds/ branches on kind names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

COLUMN_TYPES = ("string", "int", "float")
BIGQUERY = "bigquery"
FILE_FORMATS = ("csv", "parquet", "tfrecord")
INPUT_FORMATS = FILE_FORMATS + (BIGQUERY,)
TASKS = ("regression", "binary")

# The transformed column that carries the label; no feature may take the name.
LABEL_KEY = "label"

# [PROJECT:|PROJECT.]DATASET.TABLE, as Beam's bigquery_tools parses it (a
# domain-scoped project is "example.com:project"; a table may carry a
# "$YYYYMMDD" partition decorator).
BIGQUERY_TABLE = re.compile(
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
    display_column: a side table's column that names each row for people
      (a movie's title); display-only, so a bad value never rejects a row.
    group_feature: a tokens or vocabulary feature read from this table
      whose first token groups the rows in plots (a movie's first genre).
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
  display_column: Optional[str] = None
  group_feature: Optional[str] = None

  @property
  def is_bigquery(self) -> bool:
    return self.format == BIGQUERY

  @property
  def bigquery_project(self) -> Optional[str]:
    """The project a bigquery `table` names, or None (then --project's)."""
    if self.table is None:
      return None
    return BIGQUERY_TABLE.match(self.table).group("project")


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


# `from_checkpoint.trainable`: rows carried from the checkpoint stay frozen,
# rows new to the vocabulary train.
NEW_ROWS = "new_rows"
TRAINABLE_MODES = (False, True, NEW_ROWS)


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
  """Where a pretrained embedding table comes from (`from_checkpoint`).

  Attributes:
    path: an artifact directory, a checkpoint directory or a prefix.
    tensor: the table's tensor name in the checkpoint.
    trainable: False freezes the whole table, True fine-tunes it, NEW_ROWS
      freezes the carried rows and trains the rows new to the vocabulary.
  """
  path: str
  tensor: str
  trainable: Union[bool, str] = False


@dataclasses.dataclass(frozen=True)
class Feature:
  """One feature: how it is computed from raw columns and how it is embedded.

  Attributes:
    name: output feature name; also the vocabulary file name for kinds with
      a learned vocabulary.
    kind: the kind object (transforms/kinds/); equal to the spec's `kind:`
      string.
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
  kind: Any
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
    """Whether the feature ends as ids into an embedding table."""
    return self.kind.categorical

  @property
  def has_learned_vocabulary(self) -> bool:
    """True when tf.Transform writes a vocabulary file named `self.name`."""
    return self.kind.learned_vocabulary(self)

  @property
  def source_columns(self) -> Tuple[str, ...]:
    """Raw columns this feature reads directly (crosses read features)."""
    return self.kind.source_columns(self)

  def static_size(self) -> Optional[int]:
    """Table size known without analysis, or None for learned vocabularies."""
    return self.kind.static_size(self)

  def as_dict(self) -> Dict[str, Any]:
    """The feature as plain JSON data, unset and unused fields dropped."""
    described = {key: value for key, value in dataclasses.asdict(self).items()
                 if value is not None and value != () and value is not False}
    described["kind"] = str(self.kind)
    if not self.has_learned_vocabulary:
      # A default of the dataclass that only vocabularies use.
      described.pop("num_oov_buckets", None)
    return described


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
  # Every ${VAR} the spec references -> the value it was given (from --env,
  # the environment or the ${VAR:-default}).
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def main_table(self) -> InputTable:
    return self.inputs[self.main]

  def named_tables(self) -> Dict[str, str]:
    """Features whose source column is a named side table's key.

    Returns:
      Feature name -> the side table (with a `display_column`) whose rows
      name that feature's tokens.
    """
    named = {}
    for join in self.joins:
      side = self.inputs[join.table]
      if side.display_column is None:
        continue
      for feature in self.features:
        if feature.source is not None and feature.source in (join.by,
                                                             side.key):
          named[feature.name] = join.table
    return named

  @property
  def used_tables(self) -> Tuple[str, ...]:
    """The main table, then every joined side table."""
    return (self.main,) + tuple(join.table for join in self.joins)

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
    return tuple(f for f in self.features if not f.is_categorical)

  def is_multivalent(self, name: str) -> bool:
    """Whether a feature yields a variable number of ids per row.

    Args:
      name: a feature name.

    Returns:
      True for tokens and for crosses with a multivalent member (their
      output is a SparseTensor), else False.
    """
    feature = self.feature(name)
    return feature.kind.multivalent(feature, self)

  def hash_parameters(self, name: str) -> Optional[Dict[str, Any]]:
    """How feature `name` maps values to rows (None unless it hashes)."""
    feature = self.feature(name)
    return feature.kind.hash_parameters(feature, self)

  def column_types(self) -> Dict[str, str]:
    """Column -> type over every input table."""
    available: Dict[str, str] = {}
    for table in self.inputs.values():
      available.update(table.types)
    return available

  def raw_column_types(self) -> Dict[str, str]:
    """Column -> type of the joined row that preprocessing_fn receives.

    Returns:
      Every column the features and the label read (in spec order, label
      first), with its type resolved across the main and side tables. Split
      and join keys are used before tf.Transform and appear only when a
      feature reads them.
    """
    available = self.column_types()
    needed = [self.label.column]
    for feature in self.features:
      needed.extend(feature.source_columns)
    return {column: available[column] for column in dict.fromkeys(needed)}


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
