"""The per-format parsers: raw batches -> typed Arrow batches, dead letters.

Each raw batch (a block of CSV lines, a Parquet table, a list of serialized
tf.Examples, a list of BigQuery row dicts) becomes one pyarrow RecordBatch
with the table's rules' schema (pipelines/rows.py) and a list of
dead-letter records for the rows that fail, plus the number of rows read
(valid rows + dead letters + blank lines) and of blank lines. A CSV line
with bytes its encoding does not decode is rejected only when a column
something reads holds them (a display column shows U+FFFD instead); the
columns nothing reads are never decoded strictly. A clean CSV block is
split with one str.split after numpy checks every line's field count on
the bytes; only a block holding a bad line falls back to parsing line by
line.
"""

import base64
import codecs
import csv
import json
import re
from typing import (Any, Dict, FrozenSet, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np
import pyarrow as pa

from pipelines import rows as rows_lib



class Parsed(NamedTuple):
  """What every parser returns for one raw batch.

  Attributes:
    rows: the valid rows (rules.schema).
    dead_letters: the rejected rows.
    read: rows read: valid rows + dead letters + blank lines.
    blank: blank lines (CSV), which are not rows.
  """
  rows: pa.RecordBatch
  dead_letters: List[Dict[str, str]]
  read: int
  blank: int = 0


# The lone surrogates "surrogateescape" decodes undecodable bytes to.
_UNDECODED = re.compile("[\udc80-\udcff]")
# Encodings in which the delimiter and newline bytes only ever stand for
# themselves, so fields can be counted on the raw bytes.
_BYTE_COUNTABLE = frozenset(("utf-8", "ascii", "iso8859-1", "cp1252",
                             "iso8859-15"))


def _decode_lines(block: bytes, encoding: str
                 ) -> Tuple[List[str], FrozenSet[int], int, bool]:
  """A block -> (non-blank lines, undecodable lines, blanks, changed?).

  A line that does not decode is kept with its bad bytes as lone
  surrogates ("surrogateescape"), so that only the fields something reads
  decide whether it is rejected (`_check_undecodable`).
  """
  try:
    text = block.decode(encoding)
    undecodable: List[int] = []
  except UnicodeDecodeError:
    text = block.decode(encoding, errors="surrogateescape")
    undecodable = None
  changed = undecodable is None
  if "\r" in text:
    text = text.replace("\r\n", "\n")
    changed = True
  lines = text.split("\n")
  if lines and not lines[-1]:
    lines.pop()
  blank = lines.count("")
  if blank:
    lines = [line for line in lines if line]
    changed = True
  if undecodable is None:
    undecodable = [i for i, line in enumerate(lines)
                   if _UNDECODED.search(line)]
  return lines, frozenset(undecodable), blank, changed


def _escaped(text: str, encoding: str) -> str:
  """Text holding escaped bad bytes as backslash escapes (b"\\xff")."""
  return text.encode(encoding, "surrogateescape").decode(
      encoding, "backslashreplace")


def _check_undecodable(rules: rows_lib.TableRules, line: str,
                       fields: List[str]
                      ) -> Tuple[Optional[Dict[str, str]], List[str]]:
  """(a dead letter, or None and the fields with display text repaired).

  A bad byte in a column that nothing reads never rejects a row; in a
  display column it becomes U+FFFD; in any other kept column the row is
  invalid_encoding.
  """
  fields = list(fields)
  for name, position in rules.positions.items():
    if not _UNDECODED.search(fields[position]):
      continue
    if name in rules.display:
      fields[position] = fields[position].encode(
          rules.encoding, "surrogateescape").decode(rules.encoding, "replace")
      continue
    return rows_lib.dead_letter(
        rules.table, rows_lib.INVALID_ENCODING,
        _escaped(line, rules.encoding),
        f"column {name!r} is not {rules.encoding}",
        key=rows_lib.row_key(rules, fields)), fields
  return None, fields


def _fields_per_line_ok(body: bytes, delimiter: bytes, expected: int) -> bool:
  """Whether every line of `body` has exactly `expected` fields."""
  data = np.frombuffer(body, dtype=np.uint8)
  line_ends = np.append(np.flatnonzero(data == 10), len(data))
  delimiters = np.flatnonzero(data == delimiter[0])
  if len(delimiters) != len(line_ends) * (expected - 1):
    return False
  before_end = np.searchsorted(delimiters, line_ends)
  return bool((np.diff(before_end, prepend=0) == expected - 1).all())


def _split_block(lines: List[str], rules: rows_lib.TableRules, block: bytes,
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


def parse_csv_block(rules: rows_lib.TableRules, block: bytes) -> Parsed:
  """Parses one block of CSV lines.

  Args:
    rules: the table's rules.
    block: whole lines as bytes (sources.ReadCsvBlocks).

  Returns:
    The Parsed batch; blank lines are counted, not parsed.
  """
  lines, undecodable, blank, changed = _decode_lines(block, rules.encoding)
  rows_read = len(lines) + blank
  columns = None
  if not undecodable:
    columns = _split_block(lines, rules, block, changed)
  good_lines = lines
  letters = []
  if columns is None:
    expected = rules.num_fields
    good_lines, good_fields = [], []
    for index, (line, fields) in enumerate(
        zip(lines, _split_fields(lines, rules.delimiter))):
      if fields is None or len(fields) != expected:
        letters.append(rows_lib.dead_letter(
            rules.table, rows_lib.WRONG_FIELD_COUNT,
            _escaped(line, rules.encoding),
            "unbalanced quotes" if fields is None
            else f"{len(fields)} fields, expected {expected}",
            key=None if fields is None else rows_lib.row_key(rules, fields)))
        continue
      if index in undecodable:
        letter, fields = _check_undecodable(rules, line, fields)
        if letter is not None:
          letters.append(letter)
          continue
        line = _escaped(line, rules.encoding)
      good_lines.append(line)
      good_fields.append(fields)
    columns = {name: [fields[position] for fields in good_fields]
               for name, position in rules.positions.items()}
  batch, more = rows_lib.validate_columns(rules, columns, good_lines,
                                          from_text=True)
  return Parsed(batch, letters + more, rows_read, blank)


def _json_row(row: Mapping[str, Any]) -> str:
  def default(value):
    if isinstance(value, bytes):
      return value.decode("utf-8", errors="backslashreplace")
    return str(value)
  return json.dumps(row, default=default, sort_keys=True)


def parse_arrow_table(rules: rows_lib.TableRules, table: pa.Table) -> Parsed:
  """Checks and types one Parquet batch (any Arrow column types).

  Args:
    rules: the table's rules.
    table: a pyarrow Table with at least the kept columns.

  Returns:
    The Parsed batch.
  """
  columns = {name: table.column(name).to_pylist() for name in rules.columns}
  raws = [_json_row(dict(zip(rules.columns, values)))
          for values in zip(*(columns[name] for name in rules.columns))]
  batch, letters = rows_lib.validate_columns(rules, columns, raws,
                                             from_text=False)
  return Parsed(batch, letters, table.num_rows)


def _base64(record: bytes) -> str:
  return base64.b64encode(record).decode("ascii")


def _decode_examples(rules: rows_lib.TableRules, records: List[bytes],
                     decoder) -> Tuple[List[pa.RecordBatch], List[bytes],
                                       List[Dict[str, str]]]:
  """(decoded batches, the records they hold, dead letters of the rest)."""
  try:
    return [decoder.DecodeBatch(records)], records, []
  except Exception:  # tfx_bsl raises a bare RuntimeError on a bad proto.
    pass
  decoded, kept, letters = [], [], []
  for record in records:
    try:
      decoded.append(decoder.DecodeBatch([record]))
      kept.append(record)
    except Exception:  # As above: any failure means "not a tf.Example".
      letters.append(rows_lib.dead_letter(
          rules.table, rows_lib.MALFORMED_RECORD, _base64(record),
          "not a serialized tf.Example"))
  return decoded, kept, letters


def parse_examples(rules: rows_lib.TableRules, records: Sequence[bytes],
                   decoder) -> Parsed:
  """Checks and types a list of serialized tf.Examples.

  Args:
    rules: the table's rules.
    records: serialized tf.Example protos.
    decoder: a tfx_bsl ExamplesToRecordBatchDecoder (no schema).

  Returns:
    The Parsed batch.
  """
  records = list(records)
  decoded, kept, letters = _decode_examples(rules, records, decoder)
  rejected = rows_lib.Rejections()
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
      if name in rules.display:
        # Shown only: any first value, or none, never rejects the row.
        values[row] = value[0] if value else None
      elif value is None or len(value) == 0:
        rejected.add(row, rows_lib.MISSING_VALUE,
                     f"feature {name!r} is absent")
        values[row] = None
      elif len(value) != 1:
        rejected.add(row, rows_lib.WRONG_FIELD_COUNT,
                     f"feature {name!r} has {len(value)} values, expected 1")
        values[row] = None
      else:
        values[row] = value[0]
  batch, more = rows_lib.validate_columns(
      rules, columns, [_base64(record) for record in kept], from_text=False,
      rejected=rejected)
  return Parsed(batch, letters + more, len(records))


def parse_row_dicts(rules: rows_lib.TableRules,
                    rows: Sequence[Mapping[str, Any]]) -> Parsed:
  """Checks and types a list of BigQuery rows (dicts from ReadFromBigQuery).

  Args:
    rules: the table's rules.
    rows: column -> Python value dicts; None is NULL.

  Returns:
    The Parsed batch; the raw
    text of a row is the JSON of its kept columns.
  """
  rows = list(rows)
  rejected = rows_lib.Rejections()
  columns = {}
  for name in rules.columns:
    is_string = rules.types[name] == "string"
    values = []
    for index, row in enumerate(rows):
      value = row.get(name)
      if name not in row:
        rejected.add(index, rows_lib.MISSING_VALUE,
                     f"column {name!r} is not in the BigQuery row")
      elif isinstance(value, (list, dict)) and name not in rules.display:
        rejected.add(index, rows_lib.WRONG_FIELD_COUNT,
                     f"column {name!r} is a REPEATED or RECORD value, "
                     f"expected one value")
        value = None
      if value is None and is_string:
        value = ""
      values.append(value)
    columns[name] = values
  raws = [_json_row({name: row[name] for name in rules.columns
                     if name in row}) for row in rows]
  batch, letters = rows_lib.validate_columns(rules, columns, raws,
                                             from_text=False,
                                             rejected=rejected)
  return Parsed(batch, letters, len(rows))
