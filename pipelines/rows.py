"""Per-table rules and validation: typed Arrow columns, rejected rows.

Each input table gets TableRules: the columns something reads (the
features' sources, the label, join keys, the split key and a side table's
display column), their types,
which must not be empty, the label's range and, for CSV, where each column
sits in a line. `validate_columns` types and checks a batch's columns
(numbers a column at a time, the other checks as Arrow compute kernels;
only a column holding a bad value falls back to row-by-row work) and
splits the good rows, plus the raw row text (RAW_COLUMN, kept for dead
letters raised later by joins), from the dead letters. The per-format
parsers that feed it are in pipelines/parsers.py.

A row is rejected with the first problem found: row-level problems first
(encoding, field count, malformed record), then column by column in table
order, then the label:

  invalid_encoding     the line does not decode with the table's encoding
  wrong_field_count    a CSV line with more or fewer fields than the header
                       (or spec columns), or unbalanced quotes; a
                       tf.Example feature with other than one value; a
                       BigQuery REPEATED or RECORD value
  malformed_record     a TFRecord entry that is not a tf.Example
  missing_value        a null (Parquet), absent (tf.Example, BigQuery) or
                       NULL int/float (BigQuery) value
  unparsable_number    an int/float column that does not parse (also empty)
  non_finite_number    NaN or +-inf in a float column
  empty_key            an empty or blank join key, split key, or
                       vocabulary/hash feature source
  label_out_of_range   the label outside [label.min, label.max]

Only kept columns are checked: a column nothing reads never rejects a row,
and a display column (a side table's `display_column`) never does either:
its bad bytes become U+FFFD and a missing value an empty name.

A BigQuery NULL in a string column reads as the empty CSV field it stands
for (BigQuery's CSV load turns empty fields into NULL): accepted, unless
the column must not be empty (empty_key). In an int or float column it is
a missing_value.

Joins (pipelines/joins.py) add missing_join_key, duplicate_key and
rejected_side_row (a main row whose side row was rejected). A side
table's dead letters carry the row's `key` when it could be read, which
is how a join tells a rejected side row from a missing one.
"""

import dataclasses
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec as spec_lib

RAW_COLUMN = "__raw__"
SPLIT_COLUMN = "__split__"

INVALID_ENCODING = "invalid_encoding"
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_VALUE = "missing_value"
UNPARSABLE_NUMBER = "unparsable_number"
NON_FINITE_NUMBER = "non_finite_number"
EMPTY_KEY = "empty_key"
LABEL_OUT_OF_RANGE = "label_out_of_range"
MALFORMED_RECORD = "malformed_record"
MISSING_JOIN_KEY = "missing_join_key"
DUPLICATE_KEY = "duplicate_key"
REJECTED_SIDE_ROW = "rejected_side_row"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}


def dead_letter(table: str, reason: str, raw: str, detail: str = "",
                key: Optional[str] = None,
                side_table: Optional[str] = None) -> Dict[str, str]:
  """One rejected row, as written to dead_letter/*.jsonl.

  Args:
    table: the input table the row came from.
    reason: one of the reason constants of this module.
    raw: the raw row (CSV line text; JSON of a Parquet row; base64 of a
      serialized tf.Example).
    detail: which column and value, for people reading the file.
    key: a side table row's key, when it could be read.
    side_table: for rejected_side_row, the side table whose row was
      rejected.

  Returns:
    The record as a dict ("key" and "side_table" only when given).
  """
  letter = {"table": table, "reason": reason, "detail": detail, "raw": raw}
  if key is not None:
    letter["key"] = key
  if side_table is not None:
    letter["side_table"] = side_table
  return letter


@dataclasses.dataclass(frozen=True)
class TableRules:
  """What to parse from one table and how to check it.

  Attributes:
    table: the table name.
    columns: the columns to keep, in output order.
    types: column -> string | int | float.
    nonempty: string columns that must not be empty or blank.
    label: (column, min, max) when the label lives in this table.
    positions: CSV field index of each kept column.
    num_fields: CSV fields per line.
    delimiter: CSV delimiter.
    encoding: text encoding of CSV lines and tf.Example bytes values.
    key: a side table's key column (its first column), else None.
    display: kept columns that are only shown (never reject a row).
  """
  table: str
  columns: Tuple[str, ...]
  types: Mapping[str, str]
  nonempty: FrozenSet[str]
  label: Optional[Tuple[str, Optional[float], Optional[float]]]
  positions: Mapping[str, int]
  num_fields: int
  delimiter: str = ","
  encoding: str = "utf-8"
  key: Optional[str] = None
  display: FrozenSet[str] = frozenset()

  def without_display(self) -> "TableRules":
    """The rules of the rows a join carries on: display columns dropped."""
    if not self.display:
      return self
    return dataclasses.replace(
        self, columns=tuple(c for c in self.columns if c not in self.display),
        display=frozenset())

  @property
  def schema(self) -> pa.Schema:
    """Arrow schema of parsed batches: kept columns, then RAW_COLUMN."""
    return pa.schema([(c, ARROW_TYPES[self.types[c]]) for c in self.columns]
                     + [(RAW_COLUMN, pa.string())])


def needed_columns(spec: spec_lib.FeatureSpec) -> Tuple[str, ...]:
  """Every joined column the job reads: features, label, keys, split key.

  Args:
    spec: the feature spec.

  Returns:
    Column names without duplicates, in a stable order.
  """
  columns = list(spec.raw_column_types())
  columns.extend(join.by for join in spec.joins)
  if spec.split is not None:
    columns.extend(spec.split.key)
  return tuple(dict.fromkeys(columns))


def key_columns(spec: spec_lib.FeatureSpec) -> FrozenSet[str]:
  """Columns that must not be empty: join keys, split key, vocab sources.

  Args:
    spec: the feature spec.

  Returns:
    The column names; each feature kind names the sources it needs
    non-empty.
  """
  keys = {join.by for join in spec.joins}
  keys.update(spec.inputs[join.table].key for join in spec.joins)
  if spec.split is not None:
    keys.update(spec.split.key)
  for feature in spec.features:
    keys.update(feature.kind.nonempty_columns(feature))
  return frozenset(keys)


def table_rules(spec: spec_lib.FeatureSpec, name: str,
                positions: Mapping[str, int], num_fields: int) -> TableRules:
  """The rules for input table `name` of `spec`.

  Args:
    spec: the feature spec.
    name: the main table or a joined side table.
    positions: column -> CSV field index (sources.header_positions).
    num_fields: CSV fields per line.

  Returns:
    TableRules keeping the table's needed columns (its key first for a side
    table).
  """
  table = spec.inputs[name]
  needed = set(needed_columns(spec))
  is_side = table.key is not None and name != spec.main
  display = frozenset(
      [table.display_column] if is_side and table.display_column
      and table.display_column not in needed else [])
  kept = [c for c in table.columns
          if c in needed or c == table.key or c in display]
  if is_side:
    kept.remove(table.key)
    kept.insert(0, table.key)
  label = None
  if spec.label.column in kept:
    label = (spec.label.column, spec.label.min, spec.label.max)
  nonempty = frozenset(c for c in key_columns(spec)
                       if c in kept and table.types[c] == "string")
  return TableRules(table=name, columns=tuple(kept),
                    types={c: table.types[c] for c in kept},
                    nonempty=nonempty, label=label,
                    positions={c: positions[c] for c in kept},
                    num_fields=num_fields, delimiter=table.delimiter,
                    encoding=table.encoding,
                    key=table.key if is_side else None, display=display)


def row_key(rules: TableRules, fields: List[str]) -> Optional[str]:
  """A side row's key from its CSV fields, when the line has a usable one.

  Args:
    rules: the table's rules.
    fields: the line's fields (maybe the wrong number of them).

  Returns:
    The key's text, or None (no key column, no such field, blank, or
    bytes that did not decode).
  """
  if rules.key is None:
    return None
  position = rules.positions[rules.key]
  if position >= len(fields):
    return None
  value = fields[position]
  if not value.strip() or any("\udc80" <= c <= "\udcff" for c in value):
    return None
  return value


def _value_text(value: Any, encoding: str) -> str:
  """A non-text value as text; bytes decoded (UnicodeDecodeError escapes)."""
  if isinstance(value, bytes):
    return value.decode(encoding)
  return value if isinstance(value, str) else str(value)


def _to_int(value: Any, encoding: str) -> int:
  if isinstance(value, bool):
    raise ValueError("a boolean is not an int")
  if isinstance(value, int):
    return value
  if isinstance(value, float):
    if not value.is_integer():
      raise ValueError(f"{value!r} is not a whole number")
    return int(value)
  return int(_value_text(value, encoding))


def _to_float(value: Any, encoding: str) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  return float(_value_text(value, encoding))


class Rejections:
  """Row index -> (reason, detail); the first reason of a row wins."""

  def __init__(self):
    self.by_row: Dict[int, Tuple[str, str]] = {}

  def add(self, row: int, reason: str, detail: str) -> None:
    """Rejects `row` for `reason`, unless it already was."""
    self.by_row.setdefault(row, (reason, detail))


def _display_text(values: List[Any], encoding: str) -> pa.Array:
  """A display column's values as text: never a reason to reject a row."""
  texts = []
  for value in values:
    if value is None:
      value = ""
    elif isinstance(value, bytes):
      value = value.decode(encoding, errors="replace")
    texts.append(value if isinstance(value, str) else str(value))
  return pa.array(texts, pa.string())


def _check_string(name: str, values: List[Any], rules: TableRules,
                  from_text: bool, rejected: Rejections) -> pa.Array:
  if name in rules.display:
    return _display_text(values, rules.encoding)
  if not from_text:
    converted = []
    for row, value in enumerate(values):
      if value is None:
        rejected.add(row, MISSING_VALUE, f"column {name!r} has no value")
        converted.append("")
        continue
      try:
        converted.append(_value_text(value, rules.encoding))
      except UnicodeDecodeError:
        rejected.add(row, INVALID_ENCODING,
                     f"column {name!r} is not {rules.encoding}")
        converted.append("")
    values = converted
  array = pa.array(values, pa.string())
  if name in rules.nonempty:
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(array)), 0)
    if pc.any(blank).as_py():
      for row in np.flatnonzero(blank.to_numpy(zero_copy_only=False)):
        rejected.add(int(row), EMPTY_KEY, f"key column {name!r} is empty")
  return array


def _check_number(name: str, values: List[Any], column_type: str,
                  rules: TableRules, from_text: bool,
                  rejected: Rejections) -> pa.Array:
  convert = int if column_type == "int" else float
  parsed = None
  if from_text:
    try:
      parsed = list(map(convert, values))
    except ValueError:
      parsed = None
  if parsed is None:
    slow = _to_int if column_type == "int" else _to_float
    parsed = []
    for row, value in enumerate(values):
      if value is None:
        rejected.add(row, MISSING_VALUE, f"column {name!r} has no value")
        parsed.append(0)
        continue
      try:
        parsed.append(slow(value, rules.encoding))
      except UnicodeDecodeError:
        rejected.add(row, INVALID_ENCODING,
                     f"column {name!r} is not {rules.encoding}")
        parsed.append(0)
      except (ValueError, TypeError, OverflowError):
        rejected.add(row, UNPARSABLE_NUMBER,
                     f"column {name!r}: {value!r} is not {column_type}")
        parsed.append(0)
  if column_type == "float":
    array = pa.array(parsed, pa.float64())
    finite = pc.is_finite(array)
    if not pc.all(finite).as_py():
      for row in np.flatnonzero(~finite.to_numpy(zero_copy_only=False)):
        rejected.add(int(row), NON_FINITE_NUMBER,
                     f"column {name!r} is {parsed[row]!r}")
    return array
  try:
    return pa.array(parsed, pa.int64())
  except OverflowError:
    for row, value in enumerate(parsed):
      if not _INT64_MIN <= value <= _INT64_MAX:
        rejected.add(row, UNPARSABLE_NUMBER,
                     f"column {name!r}: {value} is outside int64")
        parsed[row] = 0
    return pa.array(parsed, pa.int64())


def _check_label(array: pa.Array, rules: TableRules,
                 rejected: Rejections) -> None:
  name, low, high = rules.label
  outside = None
  if low is not None:
    outside = pc.less(array, low)
  if high is not None:
    above = pc.greater(array, high)
    outside = above if outside is None else pc.or_(outside, above)
  if outside is None or not pc.any(outside).as_py():
    return
  for row in np.flatnonzero(outside.to_numpy(zero_copy_only=False)):
    row = int(row)
    if row not in rejected.by_row:
      rejected.add(row, LABEL_OUT_OF_RANGE,
                   f"label {name!r} = {array[row].as_py()!r} is outside "
                   f"[{low}, {high}]")


def _key_text(keys: Optional[List[Any]], row: int,
              encoding: str) -> Optional[str]:
  if keys is None or keys[row] is None:
    return None
  value = keys[row]
  if isinstance(value, bytes):
    try:
      value = value.decode(encoding)
    except UnicodeDecodeError:
      return None
  value = str(value)
  return value if value.strip() else None


def validate_columns(rules: TableRules, columns: Mapping[str, List[Any]],
                     raws: List[str], from_text: bool,
                     rejected: Optional[Rejections] = None
                    ) -> Tuple[pa.RecordBatch, List[Dict[str, str]]]:
  """Types and checks column-major values; splits good rows from bad.

  Args:
    rules: the table's rules.
    columns: kept column -> values, one per row (str from CSV; Python
      values or None from Parquet/tf.Example).
    raws: the raw text of each row.
    from_text: values are CSV text (enables the fast path).
    rejected: rows already rejected upstream, to merge with.

  Returns:
    (a RecordBatch of the good rows with rules.schema, dead-letter records).
  """
  rejected = rejected or Rejections()
  arrays = []
  for name in rules.columns:
    column_type = rules.types[name]
    if column_type == "string":
      arrays.append(_check_string(name, columns[name], rules, from_text,
                                  rejected))
    else:
      arrays.append(_check_number(name, columns[name], column_type, rules,
                                  from_text, rejected))
  if rules.label is not None:
    _check_label(arrays[rules.columns.index(rules.label[0])], rules, rejected)
  arrays.append(pa.array(raws, pa.string()))
  batch = pa.RecordBatch.from_arrays(arrays, schema=rules.schema)
  keys = columns[rules.key] if rules.key is not None else None
  letters = [dead_letter(rules.table, reason, raws[row], detail,
                         key=_key_text(keys, row, rules.encoding))
             for row, (reason, detail) in sorted(rejected.by_row.items())]
  if rejected.by_row:
    keep = np.ones(len(raws), dtype=bool)
    keep[list(rejected.by_row)] = False
    batch = batch.filter(pa.array(keep))
  return batch, letters
