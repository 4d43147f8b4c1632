"""Per-table parsing and validation: raw batches -> typed Arrow batches.

Each raw batch (a block of CSV lines, a Parquet table, a list of serialized
tf.Examples, a list of BigQuery row dicts) becomes one pyarrow RecordBatch
of typed columns plus the raw row text (RAW_COLUMN, kept for dead letters
raised later by joins), and a list of dead-letter records for the rows
that fail. A clean CSV block is split with one str.split after numpy
checks every line's field count on the bytes; numbers parse a column at a
time (`map(float, column)`) and the other checks run as Arrow compute
kernels. Only a block or a column holding a bad value falls back to
row-by-row work.

Only the columns something reads are parsed and checked: the features'
sources, the label, join keys and the split key. A row is rejected with
the first problem found: row-level problems first (encoding, field count,
malformed record), then column by column in table order, then the label:

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

A BigQuery NULL in a string column reads as the empty CSV field it stands
for (BigQuery's CSV load turns empty fields into NULL): accepted, unless
the column must not be empty (empty_key). In an int or float column it is
a missing_value.

Joins (pipelines/joins.py) add missing_join_key and duplicate_key.
"""

import base64
import codecs
import csv
import dataclasses
import json
from typing import (Any, Dict, FrozenSet, List, Mapping, Optional, Sequence,
                    Tuple)

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

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}


def dead_letter(table: str, reason: str, raw: str,
                detail: str = "") -> Dict[str, str]:
  """One rejected row, as written to dead_letter/*.jsonl.

  Args:
    table: the input table the row came from.
    reason: one of the reason constants of this module.
    raw: the raw row (CSV line text; JSON of a Parquet row; base64 of a
      serialized tf.Example).
    detail: which column and value, for people reading the file.

  Returns:
    The record as a dict.
  """
  return {"table": table, "reason": reason, "detail": detail, "raw": raw}


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
  """Columns that must not be empty: join keys, split key, vocab sources."""
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
  kept = [c for c in table.columns if c in needed or c == table.key]
  if table.key is not None and name != spec.main:
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
                    encoding=table.encoding)


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


class _Rejections:
  """Row index -> (reason, detail); the first reason of a row wins."""

  def __init__(self):
    self.by_row: Dict[int, Tuple[str, str]] = {}

  def add(self, row: int, reason: str, detail: str) -> None:
    self.by_row.setdefault(row, (reason, detail))


def _check_string(name: str, values: List[Any], rules: TableRules,
                  from_text: bool, rejected: _Rejections) -> pa.Array:
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


def _check_number(name: str, values: List[Any], kind: str, rules: TableRules,
                  from_text: bool, rejected: _Rejections) -> pa.Array:
  convert = int if kind == "int" else float
  parsed = None
  if from_text:
    try:
      parsed = list(map(convert, values))
    except ValueError:
      parsed = None
  if parsed is None:
    slow = _to_int if kind == "int" else _to_float
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
                     f"column {name!r}: {value!r} is not {kind}")
        parsed.append(0)
  if kind == "float":
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
                 rejected: _Rejections) -> None:
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


def validate_columns(rules: TableRules, columns: Mapping[str, List[Any]],
                     raws: List[str], from_text: bool,
                     rejected: Optional[_Rejections] = None
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
  rejected = rejected or _Rejections()
  arrays = []
  for name in rules.columns:
    kind = rules.types[name]
    if kind == "string":
      arrays.append(_check_string(name, columns[name], rules, from_text,
                                  rejected))
    else:
      arrays.append(_check_number(name, columns[name], kind, rules,
                                  from_text, rejected))
  if rules.label is not None:
    _check_label(arrays[rules.columns.index(rules.label[0])], rules, rejected)
  arrays.append(pa.array(raws, pa.string()))
  batch = pa.RecordBatch.from_arrays(arrays, schema=rules.schema)
  letters = [dead_letter(rules.table, reason, raws[row], detail)
             for row, (reason, detail) in sorted(rejected.by_row.items())]
  if rejected.by_row:
    keep = np.ones(len(raws), dtype=bool)
    keep[list(rejected.by_row)] = False
    batch = batch.filter(pa.array(keep))
  return batch, letters


# Encodings in which the delimiter and newline bytes only ever stand for
# themselves, so fields can be counted on the raw bytes.
_BYTE_COUNTABLE = frozenset(("utf-8", "ascii", "iso8859-1", "cp1252",
                             "iso8859-15"))


def _decode_lines(block: bytes, encoding: str, table: str
                 ) -> Tuple[List[str], List[Dict[str, str]], bool]:
  """A block -> (non-empty lines, undecodable rows, lines changed?)."""
  try:
    text = block.decode(encoding)
  except UnicodeDecodeError:
    lines, letters = [], []
    for raw in block.split(b"\n"):
      try:
        lines.append(raw.decode(encoding))
      except UnicodeDecodeError as error:
        text = raw.rstrip(b"\r").decode(encoding, errors="backslashreplace")
        letters.append(dead_letter(table, INVALID_ENCODING, text,
                                   f"not {encoding}: {error.reason} at byte "
                                   f"{error.start}"))
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [line for line in lines if line], letters, True
  changed = False
  if "\r" in text:
    text = text.replace("\r\n", "\n")
    changed = True
  lines = text.split("\n")
  if lines and not lines[-1]:
    lines.pop()
  if "" in lines:
    # Blank lines (e.g. a trailing empty line) are not rows.
    lines = [line for line in lines if line]
    changed = True
  return lines, [], changed


def _fields_per_line_ok(body: bytes, delimiter: bytes, expected: int) -> bool:
  """Whether every line of `body` has exactly `expected` fields."""
  data = np.frombuffer(body, dtype=np.uint8)
  line_ends = np.append(np.flatnonzero(data == 10), len(data))
  delimiters = np.flatnonzero(data == delimiter[0])
  if len(delimiters) != len(line_ends) * (expected - 1):
    return False
  before_end = np.searchsorted(delimiters, line_ends)
  return bool((np.diff(before_end, prepend=0) == expected - 1).all())


def _split_block(lines: List[str], rules: TableRules, block: bytes,
                 changed: bool) -> Optional[Dict[str, List[str]]]:
  """Column -> field values of every line, or None when a line is off.

  One str.split over the whole block instead of one per line; the field
  count of every line is checked on the bytes first.
  """
  if not lines or codecs.lookup(rules.encoding).name not in _BYTE_COUNTABLE:
    return None
  body = "\n".join(lines)
  if '"' in body:
    return None
  delimiter = rules.delimiter
  raw = body.encode(rules.encoding) if changed else block.rstrip(b"\n")
  if not _fields_per_line_ok(raw, delimiter.encode(rules.encoding),
                             rules.num_fields):
    return None
  fields = body.replace("\n", delimiter).split(delimiter)
  width = rules.num_fields
  return {name: fields[position::width]
          for name, position in rules.positions.items()}


def _split_fields(lines: List[str],
                  delimiter: str) -> List[Optional[List[str]]]:
  fields = []
  for line in lines:
    if '"' not in line:
      fields.append(line.split(delimiter))
      continue
    try:
      fields.append(next(csv.reader([line], delimiter=delimiter, strict=True)))
    except csv.Error:
      fields.append(None)
  return fields


def parse_csv_block(rules: TableRules, block: bytes
                   ) -> Tuple[pa.RecordBatch, List[Dict[str, str]], int]:
  """Parses one block of CSV lines.

  Args:
    rules: the table's rules.
    block: whole lines as bytes (sources.ReadCsvBlocks).

  Returns:
    (RecordBatch of valid rows, dead-letter records, rows read), where rows
    read = valid rows + dead letters.
  """
  lines, letters, changed = _decode_lines(block, rules.encoding, rules.table)
  rows_read = len(lines) + len(letters)
  columns = None if letters else _split_block(lines, rules, block, changed)
  good_lines = lines
  if columns is None:
    expected = rules.num_fields
    good_lines, good_fields = [], []
    for line, fields in zip(lines, _split_fields(lines, rules.delimiter)):
      if fields is None:
        letters.append(dead_letter(rules.table, WRONG_FIELD_COUNT, line,
                                   "unbalanced quotes"))
      elif len(fields) != expected:
        letters.append(dead_letter(
            rules.table, WRONG_FIELD_COUNT, line,
            f"{len(fields)} fields, expected {expected}"))
      else:
        good_lines.append(line)
        good_fields.append(fields)
    columns = {name: [fields[position] for fields in good_fields]
               for name, position in rules.positions.items()}
  batch, more = validate_columns(rules, columns, good_lines, from_text=True)
  return batch, letters + more, rows_read


def _json_row(row: Mapping[str, Any]) -> str:
  def default(value):
    if isinstance(value, bytes):
      return value.decode("utf-8", errors="backslashreplace")
    return str(value)
  return json.dumps(row, default=default, sort_keys=True)


def parse_arrow_table(rules: TableRules, table: pa.Table
                     ) -> Tuple[pa.RecordBatch, List[Dict[str, str]], int]:
  """Checks and types one Parquet batch (any Arrow column types).

  Args:
    rules: the table's rules.
    table: a pyarrow Table with at least the kept columns.

  Returns:
    (RecordBatch of valid rows, dead-letter records, rows read).
  """
  columns = {name: table.column(name).to_pylist() for name in rules.columns}
  raws = [_json_row(dict(zip(rules.columns, values)))
          for values in zip(*(columns[name] for name in rules.columns))]
  batch, letters = validate_columns(rules, columns, raws, from_text=False)
  return batch, letters, table.num_rows


def parse_examples(rules: TableRules, records: Sequence[bytes], decoder
                  ) -> Tuple[pa.RecordBatch, List[Dict[str, str]], int]:
  """Checks and types a list of serialized tf.Examples.

  Args:
    rules: the table's rules.
    records: serialized tf.Example protos.
    decoder: a tfx_bsl ExamplesToRecordBatchDecoder (no schema).

  Returns:
    (RecordBatch of valid rows, dead-letter records, rows read).
  """
  letters = []
  records = list(records)
  try:
    decoded = [decoder.DecodeBatch(records)]
    kept = records
  except Exception:  # tfx_bsl raises a bare RuntimeError on a bad proto.
    decoded, kept = [], []
    for record in records:
      try:
        decoded.append(decoder.DecodeBatch([record]))
        kept.append(record)
      except Exception:
        letters.append(dead_letter(rules.table, MALFORMED_RECORD,
                                   base64.b64encode(record).decode("ascii"),
                                   "not a serialized tf.Example"))
  raws = [base64.b64encode(record).decode("ascii") for record in kept]
  rejected = _Rejections()
  columns = {name: [] for name in rules.columns}
  for batch in decoded:
    for name in rules.columns:
      index = batch.schema.get_field_index(name)
      lists = (batch.column(index).to_pylist() if index >= 0
               else [None] * batch.num_rows)
      columns[name].extend(lists)
  for name in rules.columns:
    values = columns[name]
    for row, value in enumerate(values):
      if value is None or len(value) == 0:
        rejected.add(row, MISSING_VALUE, f"feature {name!r} is absent")
        values[row] = None
      elif len(value) != 1:
        rejected.add(row, WRONG_FIELD_COUNT,
                     f"feature {name!r} has {len(value)} values, expected 1")
        values[row] = None
      else:
        values[row] = value[0]
  batch, more = validate_columns(rules, columns, raws, from_text=False,
                                 rejected=rejected)
  return batch, letters + more, len(records)


def parse_row_dicts(rules: TableRules, rows: Sequence[Mapping[str, Any]]
                   ) -> Tuple[pa.RecordBatch, List[Dict[str, str]], int]:
  """Checks and types a list of BigQuery rows (dicts from ReadFromBigQuery).

  Args:
    rules: the table's rules.
    rows: column -> Python value dicts; None is NULL.

  Returns:
    (RecordBatch of valid rows, dead-letter records, rows read); the raw
    text of a row is the JSON of its kept columns.
  """
  rows = list(rows)
  rejected = _Rejections()
  columns = {}
  for name in rules.columns:
    is_string = rules.types[name] == "string"
    values = []
    for index, row in enumerate(rows):
      value = row.get(name)
      if name not in row:
        rejected.add(index, MISSING_VALUE,
                     f"column {name!r} is not in the BigQuery row")
      elif isinstance(value, (list, dict)):
        rejected.add(index, WRONG_FIELD_COUNT,
                     f"column {name!r} is a REPEATED or RECORD value, "
                     f"expected one value")
        value = None
      if value is None and is_string:
        value = ""
      values.append(value)
    columns[name] = values
  raws = [_json_row({name: row[name] for name in rules.columns
                     if name in row}) for row in rows]
  batch, letters = validate_columns(rules, columns, raws, from_text=False,
                                    rejected=rejected)
  return batch, letters, len(rows)
