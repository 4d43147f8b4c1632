"""Loading a feature spec from YAML into the typed records of spec.py.

Every error found while loading names the feature (or section) and the
field, and is raised before any Beam work starts. Inputs, joins, the split
and the label are checked here; each feature's own fields are checked by
its kind (transforms/kinds/).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from transforms import fields
from transforms import kinds
from transforms.kinds import base as kinds_base
from transforms.spec import (BIGQUERY, BIGQUERY_TABLE, COLUMN_TYPES,
                             INPUT_FORMATS, LABEL_KEY, NEW_ROWS, TASKS,
                             TRAINABLE_MODES, CheckpointSource,
                             Feature, FeatureSpec, InputTable, Join, Label,
                             Split, SpecError)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BIGQUERY_ONLY_FIELDS = ("table", "query", "use_standard_sql")
_FILE_ONLY_FIELDS = ("path", "eval_path", "delimiter", "header")
_INPUT_FIELDS = ("format", "columns", "types", "encoding", "key",
                 "display_column", "group_feature"
                ) + _FILE_ONLY_FIELDS + _BIGQUERY_ONLY_FIELDS
_SPEC_FIELDS = ("name", "inputs", "main", "joins", "split", "label",
                "features", "model", "max_rejected_fraction")
# Every field some kind accepts, in a stable order for messages.
_FEATURE_FIELDS = tuple(dict.fromkeys(
    kinds_base.COMMON_FIELDS[:2]
    + tuple(field for kind in kinds.KINDS.values() for field in kind.FIELDS)
    + kinds_base.COMMON_FIELDS[2:]))


def _parse_bigquery_source(raw: Mapping[str, Any], where: str,
                           overrides: Mapping[str, str],
                           used: Dict[str, str]
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
  value = fields.expand_env(value, f"{where}: field {field!r}", overrides,
                            used)
  if field == "table":
    if not BIGQUERY_TABLE.match(value):
      raise SpecError(f"{where}: field 'table' must be PROJECT:DATASET.TABLE, "
                      f"PROJECT.DATASET.TABLE or DATASET.TABLE, got {value!r}")
    if "use_standard_sql" in raw:
      raise SpecError(f"{where}: field 'use_standard_sql' applies only to "
                      f"field 'query'")
    return value, None, True
  standard = fields.boolean(raw.get("use_standard_sql", True),
                            "use_standard_sql", where)
  return None, value.strip(), standard


def _parse_columns(raw: Mapping[str, Any], where: str
                  ) -> Tuple[Tuple[str, ...], Dict[str, str]]:
  columns = fields.require(raw, "columns", where)
  if not isinstance(columns, (list, tuple)) or not all(
      isinstance(column, str) for column in columns):
    raise SpecError(f"{where}: field 'columns' must be a list of names")
  columns = tuple(columns)
  if not columns or len(set(columns)) != len(columns):
    raise SpecError(f"{where}: field 'columns' must be non-empty and unique")
  types = dict(fields.mapping(raw.get("types") or {},
                              f"{where}: field 'types'"))
  for column, column_type in types.items():
    if column not in columns:
      raise SpecError(f"{where}: field 'types' names column {column!r} that "
                      f"is not in 'columns'")
    if column_type not in COLUMN_TYPES:
      raise SpecError(f"{where}: field 'types' gives column {column!r} type "
                      f"{column_type!r}; allowed: {COLUMN_TYPES}")
  return columns, {column: types.get(column, "string") for column in columns}


def _parse_display_column(raw: Mapping[str, Any], where: str,
                          columns: Tuple[str, ...], types: Mapping[str, str],
                          key: Optional[str]) -> Optional[str]:
  display = raw.get("display_column")
  if display is None:
    return None
  if key is None:
    raise SpecError(f"{where}: field 'display_column' names the rows of a "
                    f"side table; it needs field 'key'")
  if display not in columns:
    raise SpecError(f"{where}: field 'display_column' names column "
                    f"{display!r} that is not in 'columns'")
  if types[display] != "string":
    raise SpecError(f"{where}: field 'display_column' column {display!r} "
                    f"must have type string")
  return display


def _parse_input(name: str, raw: Mapping[str, Any],
                 overrides: Mapping[str, str],
                 used: Dict[str, str]) -> InputTable:
  where = f"input '{name}'"
  fields.mapping(raw, where)
  fields.check_keys(raw, _INPUT_FIELDS, where)
  fmt = fields.require(raw, "format", where)
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
                                                           overrides, used)
  else:
    path = fields.expand_env(str(fields.require(raw, "path", where)),
                             f"{where}: field 'path'", overrides, used)
  columns, types = _parse_columns(raw, where)
  key = raw.get("key")
  if key is not None and key not in columns:
    raise SpecError(f"{where}: field 'key' names column {key!r} that is not "
                    f"in 'columns'")
  eval_path = raw.get("eval_path")
  if eval_path is not None:
    eval_path = fields.expand_env(str(eval_path), f"{where}: field 'eval_path'",
                                  overrides, used)
  delimiter = raw.get("delimiter", ",")
  if not isinstance(delimiter, str) or len(delimiter) != 1:
    raise SpecError(f"{where}: field 'delimiter' must be one character, "
                    f"got {delimiter!r}")
  return InputTable(name=name, format=fmt, path=path, columns=columns,
                    types=types, delimiter=delimiter,
                    header=fields.boolean(raw.get("header", False), "header",
                                          where),
                    encoding=str(raw.get("encoding", "utf-8")), key=key,
                    eval_path=eval_path, table=bq_table, query=query,
                    use_standard_sql=standard_sql,
                    display_column=_parse_display_column(raw, where, columns,
                                                         types, key),
                    group_feature=raw.get("group_feature"))


def _parse_embedding_dim(raw: Mapping[str, Any], kind, where: str
                        ) -> Optional[int]:
  dim = raw.get("embedding_dim", "auto")
  if not kind.categorical:
    if "embedding_dim" in raw:
      raise SpecError(f"{where}: field 'embedding_dim' does not apply to a "
                      f"numeric feature")
    return None
  if dim == "auto" or dim is None:
    return None
  return fields.positive_int(dim, "embedding_dim", where)


def _parse_checkpoint_source(raw: Mapping[str, Any], where: str
                            ) -> Optional[CheckpointSource]:
  source = raw.get("from_checkpoint")
  if source is None:
    return None
  where = f"{where}: field 'from_checkpoint'"
  if not isinstance(source, Mapping):
    raise SpecError(f"{where} must be a mapping with path and tensor")
  fields.check_keys(source, ("path", "tensor", "trainable"), where)
  trainable = source.get("trainable", False)
  if trainable not in TRAINABLE_MODES or not isinstance(trainable,
                                                        (bool, str)):
    raise SpecError(f"{where}: field 'trainable' must be true, false or "
                    f"{NEW_ROWS}, got {trainable!r}")
  return CheckpointSource(
      path=str(fields.require(source, "path", where)),
      tensor=str(fields.require(source, "tensor", where)),
      trainable=trainable)


def _parse_feature(raw: Mapping[str, Any], index: int,
                   column_types: Mapping[str, str],
                   earlier: Mapping[str, Feature]) -> Feature:
  if not isinstance(raw, Mapping):
    raise SpecError(f"features[{index}]: must be a mapping")
  name = raw.get("name")
  where = f"feature '{name}'" if name else f"features[{index}]"
  name = fields.require(raw, "name", where)
  if not isinstance(name, str) or not _NAME.match(name):
    raise SpecError(f"{where}: field 'name' must be an identifier "
                    f"(letters, digits, _), got {name!r}")
  if name in earlier:
    raise SpecError(f"{where}: field 'name' repeats an earlier feature")
  if name == LABEL_KEY:
    raise SpecError(f"{where}: field 'name' {LABEL_KEY!r} is reserved for "
                    f"the transformed label")
  fields.check_keys(raw, _FEATURE_FIELDS, where)
  kind_name = fields.require(raw, "kind", where)
  if kind_name not in kinds.KINDS:
    raise SpecError(f"{where}: field 'kind' must be one of {kinds.NAMES}, "
                    f"got {kind_name!r}")
  kind = kinds.get(kind_name)
  misplaced = sorted(set(raw) - set(kind.FIELDS + kinds_base.COMMON_FIELDS))
  if misplaced:
    raise SpecError(f"{where}: field(s) {misplaced} do not apply to kind "
                    f"{kind_name!r}")
  values = kind.parse(raw, kinds_base.ParseContext(
      where=where, column_types=column_types, earlier=earlier))
  return Feature(name=name, kind=kind, **values,
                 embedding_dim=_parse_embedding_dim(raw, kind, where),
                 from_checkpoint=_parse_checkpoint_source(raw, where))


def _parse_joins(raw: Mapping[str, Any], inputs: Mapping[str, InputTable],
                 main: str) -> Tuple[Join, ...]:
  joins = []
  raw_joins = raw.get("joins") or ()
  if not isinstance(raw_joins, (list, tuple)):
    raise SpecError("spec: field 'joins' must be a list")
  for index, raw_join in enumerate(raw_joins):
    where = f"joins[{index}]"
    fields.mapping(raw_join, where)
    if True in raw_join:
      raise SpecError(f"{where}: YAML reads the key 'on' as the boolean "
                      f"true; name the main table's join column with "
                      f"'by:' instead")
    fields.check_keys(raw_join, ("table", "by", "how"), where)
    table = fields.require(raw_join, "table", where)
    if table not in inputs or table == main:
      raise SpecError(f"{where}: field 'table' names {table!r}, which is not "
                      f"a side table in 'inputs'")
    if inputs[table].key is None:
      raise SpecError(f"{where}: input {table!r} needs a 'key' to be joined")
    by = fields.require(raw_join, "by", where)
    if by not in inputs[main].columns:
      raise SpecError(f"{where}: field 'by' names column {by!r}, which the "
                      f"main table {main!r} does not have")
    how = raw_join.get("how", "broadcast")
    if how not in ("broadcast", "shuffle"):
      raise SpecError(f"{where}: field 'how' must be broadcast or shuffle")
    joins.append(Join(table=table, by=by, how=how))
  return tuple(joins)


def _joined_column_types(inputs: Mapping[str, InputTable], main: str,
                         joins: Tuple[Join, ...]) -> Dict[str, str]:
  """Columns visible after the joins: the main table's, then each side's.

  A side table's key is the join column already present.
  """
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
  return column_types


def _parse_split(raw: Mapping[str, Any],
                 column_types: Mapping[str, str]) -> Split:
  raw_split = fields.mapping(fields.require(raw, "split", "spec"), "split")
  fields.check_keys(raw_split, ("key", "eval_fraction", "seed"), "split")
  key = fields.require(raw_split, "key", "split")
  key = (key,) if isinstance(key, str) else key
  if (not isinstance(key, (list, tuple)) or not key
      or not all(isinstance(column, str) for column in key)):
    raise SpecError(f"split: field 'key' must be a column or a list of "
                    f"columns, got {key!r}")
  for column in key:
    if column not in column_types:
      raise SpecError(f"split: field 'key' names column {column!r}, which "
                      f"no joined table has")
  fraction = fields.number(raw_split.get("eval_fraction", 0.2),
                           "eval_fraction", "split")
  if not 0.0 < fraction < 1.0:
    raise SpecError(f"split: field 'eval_fraction' must be in (0, 1), "
                    f"got {fraction}")
  seed = fields.positive_int(raw_split.get("seed", 0), "seed", "split",
                             allow_zero=True)
  return Split(key=tuple(dict.fromkeys(key)), eval_fraction=fraction,
               seed=seed)


def _parse_split_or_eval_path(raw: Mapping[str, Any],
                              inputs: Mapping[str, InputTable], main: str,
                              column_types: Mapping[str, str]
                             ) -> Optional[Split]:
  """The split, or None when the main table gives its eval rows as files."""
  for name, table in inputs.items():
    if name != main and table.eval_path is not None:
      raise SpecError(f"input '{name}': field 'eval_path' applies only to "
                      f"the main table {main!r}")
  if inputs[main].eval_path is None:
    return _parse_split(raw, column_types)
  if raw.get("split") is not None:
    raise SpecError(f"spec: field 'split' and input '{main}' field "
                    f"'eval_path' both choose the eval rows; keep one")
  return None


def _check_display_tables(inputs: Mapping[str, InputTable], main: str,
                          features: Tuple[Feature, ...]) -> None:
  """Checks each table's display_column and group_feature."""
  by_name = {feature.name: feature for feature in features}
  for name, table in inputs.items():
    where = f"input '{name}'"
    if table.display_column is not None and name == main:
      raise SpecError(f"{where}: field 'display_column' names the rows of a "
                      f"side table, not of the main table")
    if table.group_feature is None:
      continue
    if table.display_column is None:
      raise SpecError(f"{where}: field 'group_feature' needs field "
                      f"'display_column'")
    feature = by_name.get(table.group_feature)
    if feature is None or not feature.kind.GIVES_VALUE_TOKENS:
      raise SpecError(f"{where}: field 'group_feature' must name a tokens or "
                      f"vocabulary feature, got {table.group_feature!r}")
    outside = [c for c in feature.source_columns if c not in table.columns]
    if outside:
      raise SpecError(f"{where}: field 'group_feature' feature "
                      f"{feature.name!r} reads column(s) {outside}, which "
                      f"this table does not have")


def _parse_label(raw: Mapping[str, Any],
                 column_types: Mapping[str, str]) -> Label:
  raw_label = fields.mapping(fields.require(raw, "label", "spec"), "label")
  fields.check_keys(raw_label, ("column", "task", "min", "max"), "label")
  column = fields.require(raw_label, "column", "label")
  if column not in column_types:
    raise SpecError(f"label: field 'column' names {column!r}, which no "
                    f"joined table has")
  if column_types[column] == "string":
    raise SpecError(f"label: column {column!r} must be int or float")
  task = raw_label.get("task", "regression")
  if task not in TASKS:
    raise SpecError(f"label: field 'task' must be one of {TASKS}")
  bounds = {field: None if raw_label.get(field) is None else
            fields.number(raw_label[field], field, "label")
            for field in ("min", "max")}
  if (bounds["min"] is not None and bounds["max"] is not None
      and bounds["min"] > bounds["max"]):
    raise SpecError(f"label: field 'min' ({bounds['min']}) is above field "
                    f"'max' ({bounds['max']})")
  return Label(column=column, task=task, **bounds)


def _parse_features(raw: Mapping[str, Any], column_types: Mapping[str, str],
                    label: Label) -> Tuple[Feature, ...]:
  raw_features = fields.require(raw, "features", "spec")
  if not isinstance(raw_features, (list, tuple)) or not raw_features:
    raise SpecError("spec: field 'features' must be a non-empty list")
  features: Dict[str, Feature] = {}
  for index, raw_feature in enumerate(raw_features):
    feature = _parse_feature(raw_feature, index, column_types, features)
    if feature.name == label.column:
      raise SpecError(f"feature '{feature.name}': field 'name' collides with "
                      f"the label column")
    features[feature.name] = feature
  return tuple(features.values())


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
  fields.check_keys(raw, _SPEC_FIELDS, "spec")
  name = str(raw.get("name", "spec"))
  raw_inputs = fields.require(raw, "inputs", "spec")
  if not isinstance(raw_inputs, Mapping) or not raw_inputs:
    raise SpecError("spec: field 'inputs' must map table names to tables")
  used_env: Dict[str, str] = {}
  inputs = {n: _parse_input(n, t, env, used_env)
            for n, t in raw_inputs.items()}
  main = raw.get("main", next(iter(inputs)))
  if main not in inputs:
    raise SpecError(f"spec: field 'main' names table {main!r}, which is not "
                    f"in 'inputs'")
  joins = _parse_joins(raw, inputs, main)
  column_types = _joined_column_types(inputs, main, joins)
  split = _parse_split_or_eval_path(raw, inputs, main, column_types)
  label = _parse_label(raw, column_types)
  features = _parse_features(raw, column_types, label)
  _check_display_tables(inputs, main, features)
  model = dict(fields.mapping(raw.get("model") or {}, "spec: field 'model'"))
  fraction = fields.number(raw.get("max_rejected_fraction", 0.01),
                           "max_rejected_fraction", "spec")
  if not 0.0 <= fraction <= 1.0:
    raise SpecError("spec: field 'max_rejected_fraction' must be in [0, 1]")
  return FeatureSpec(name=name, inputs=inputs, main=main, joins=joins,
                     split=split, label=label, features=features, model=model,
                     max_rejected_fraction=fraction, env=used_env)


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
