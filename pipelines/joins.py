"""Joining side tables onto the main table's batches, as Beam steps.

Two strategies, chosen per join by the spec's `how`:

* broadcast: the side table is collected into one Arrow table and handed to
  every worker as a side input (AsSingleton); main batches are joined a
  batch at a time with a key -> row index lookup. Right when the side table
  fits in a worker's memory (users, items).
* shuffle: main rows and side rows are keyed and grouped with
  CoGroupByKey, then re-batched. Right when the side table is too big to
  copy to every worker.

Both behave the same on bad data:
* a side key on more than one row is ambiguous: every row with that key
  is dead-lettered as `duplicate_key` (no row is silently picked);
* a main row whose side row was rejected (a duplicate key, or any reason
  the side table's parser gave, `rejected_keys`) is dead-lettered as
  `rejected_side_row`, naming the side table: the main table loses it
  because of the side table, and the run report says so;
* a main row whose key is in no side row at all is dead-lettered as
  `missing_join_key`.
"""

from typing import (Any, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple,
                    Optional, Tuple)

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import rows as rows_lib

DEAD_LETTER_TAG = "dead_letter"
# Side tables up to this many times a batch's rows are looked up with
# pyarrow's index_in (re-hashed per batch); bigger ones through a dict index
# built once per worker.
_VECTOR_LOOKUP_RATIO = 8


class SideTable(NamedTuple):
  """A validated side table ready for broadcast joins.

  Attributes:
    table: the side rows with unique keys (key column first, no raw column).
    duplicate_keys: keys that appeared on several rows (all rejected).
  """
  table: pa.Table
  duplicate_keys: FrozenSet[str]


def _as_strings(array) -> List[str]:
  if not pa.types.is_string(array.type):
    array = pc.cast(array, pa.string())
  return array.to_pylist()


def keys_kept(keys: List[str], duplicates: FrozenSet[str]) -> List[str]:
  """The keys left after dropping every duplicated one, in order.

  Args:
    keys: a side table's keys, one per row.
    duplicates: the keys on more than one row.

  Returns:
    `keys` without the duplicated ones.
  """
  return [k for k in keys if k not in duplicates] if duplicates else keys


def build_side_table(batches: Iterable[pa.RecordBatch],
                     rules: rows_lib.TableRules
                    ) -> Tuple[SideTable, List[Dict[str, str]]]:
  """Combines a side table's parsed batches and rejects duplicate keys.

  Args:
    batches: parsed batches (rules.schema).
    rules: the side table's rules; its first column is the key.

  Returns:
    (the SideTable, dead letters for every row of a duplicated key).
  """
  table = pa.Table.from_batches(list(batches), schema=rules.schema)
  key = rules.columns[0]
  keys = _as_strings(table.column(key).combine_chunks())
  counts: Dict[str, int] = {}
  for value in keys:
    counts[value] = counts.get(value, 0) + 1
  duplicates = frozenset(k for k, n in counts.items() if n > 1)
  letters = []
  if duplicates:
    raws = table.column(rows_lib.RAW_COLUMN).to_pylist()
    keep = []
    for row, value in enumerate(keys):
      if value in duplicates:
        letters.append(rows_lib.dead_letter(
            rules.table, rows_lib.DUPLICATE_KEY, raws[row],
            f"key {key!r} = {value!r} is on {counts[value]} rows"))
      else:
        keep.append(row)
    table = table.take(pa.array(keep, pa.int64()))
  table = table.drop_columns([rows_lib.RAW_COLUMN])
  # Keys are matched as text, whatever their declared type.
  table = table.set_column(0, key, pa.array(keys_kept(keys, duplicates),
                                             pa.string()))
  return SideTable(table=table.combine_chunks(),
                   duplicate_keys=duplicates), letters


class BuildSideTable(beam.DoFn):
  """[batches] -> SideTable (main output) + dead letters (tagged)."""

  def __init__(self, rules: rows_lib.TableRules):
    self._rules = rules

  def process(self, batches):
    side, letters = build_side_table(batches, self._rules)
    for letter in letters:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
    yield side


def joined_schema(main_schema: pa.Schema,
                  side_rules: rows_lib.TableRules) -> pa.Schema:
  """Schema after a join: main columns, then the side columns but its key.

  Args:
    main_schema: the batches' schema before the join.
    side_rules: the side table's rules (key first).

  Returns:
    The joined batches' schema.
  """
  side = [pa.field(c, rows_lib.ARROW_TYPES[side_rules.types[c]])
          for c in side_rules.columns[1:]]
  return pa.schema(list(main_schema) + side)


def rejected_keys(side_letters: beam.PCollection,
                  label: str) -> beam.pvalue.AsSingleton:
  """Side input: key -> reason of every side row its parser rejected.

  Args:
    side_letters: the side table's dead letters (those with a "key").
    label: a unique step label.

  Returns:
    An AsSingleton of the dict ({} when nothing was rejected).
  """
  return beam.pvalue.AsSingleton(
      side_letters
      | f"{label}Keys" >> beam.FlatMap(_letter_key_reason)
      | f"{label}ToDict" >> beam.combiners.ToDict())


def _letter_key_reason(letter: Mapping[str, str]):
  if letter.get("key") is not None:
    yield letter["key"], letter["reason"]


def lost_row_letter(main_table: str, side_table: str, by: str, key: str,
                    raw: str, duplicates: FrozenSet[str],
                    rejected: Mapping[str, str]) -> Dict[str, str]:
  """The dead letter of a main row that found no side row.

  Args:
    main_table: the main table's name.
    side_table: the side table's name.
    by: the main table's join column.
    key: the row's join key.
    raw: the main row's raw text.
    duplicates: side keys on several rows (all rejected).
    rejected: side key -> reason, for rows the side parser rejected.

  Returns:
    A rejected_side_row letter when the side row was rejected, else a
    missing_join_key one.
  """
  side_reason = (rows_lib.DUPLICATE_KEY if key in duplicates
                 else rejected.get(key))
  if side_reason is None:
    return rows_lib.dead_letter(main_table, rows_lib.MISSING_JOIN_KEY, raw,
                                f"{by} = {key!r} is not in {side_table!r}")
  return rows_lib.dead_letter(
      main_table, rows_lib.REJECTED_SIDE_ROW, raw,
      f"{by} = {key!r}: its row of {side_table!r} was rejected as "
      f"{side_reason}", side_table=side_table)


class BroadcastJoin(beam.DoFn):
  """Joins main batches with a SideTable side input, a batch at a time."""

  def __init__(self, side_name: str, by: str, main_table: str):
    self._side_name = side_name
    self._by = by
    self._main_table = main_table
    self._side = None
    self._index: Dict[str, int] = {}

  def _lookup(self, side: SideTable) -> Dict[str, int]:
    # Runners hand the same side-input object to every bundle of a worker;
    # the index is built once per object.
    if side is not self._side:
      keys = _as_strings(side.table.column(0).combine_chunks())
      self._index = {key: row for row, key in enumerate(keys)}
      self._side = side
    return self._index

  def _side_rows(self, keys: pa.Array, side: SideTable) -> pa.Array:
    """Side row of each key (null where missing), as an int array."""
    if side.table.num_rows <= _VECTOR_LOOKUP_RATIO * len(keys):
      # Small side table: hashing it per batch in C++ beats a Python loop.
      return pc.index_in(keys, value_set=side.table.column(0))
    index = self._lookup(side)
    return pa.array([index.get(key) for key in keys.to_pylist()], pa.int64())

  def process(self, batch: pa.RecordBatch, side: SideTable,
              rejected: Optional[Mapping[str, str]] = None):
    keys = batch.column(self._by)
    if not pa.types.is_string(keys.type):
      keys = pc.cast(keys, pa.string())
    rows = self._side_rows(keys, side)
    if rows.null_count:
      missing = rows.is_null().to_numpy(zero_copy_only=False)
      raws = batch.column(rows_lib.RAW_COLUMN)
      for row in np.flatnonzero(missing):
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, lost_row_letter(
            self._main_table, self._side_name, self._by, keys[row].as_py(),
            raws[row].as_py(), side.duplicate_keys, rejected or {}))
      if missing.all():
        return
      keep = pa.array(~missing)
      batch = batch.filter(keep)
      rows = rows.filter(keep)
    matched = side.table.take(rows)
    arrays = list(batch.columns)
    names = list(batch.schema.names)
    for name in side.table.column_names[1:]:
      arrays.append(matched.column(name).combine_chunks())
      names.append(name)
    yield pa.RecordBatch.from_arrays(arrays, names=names)


def _keyed_rows(batch: pa.RecordBatch, key_column: str
               ) -> Iterable[Tuple[str, Tuple[Any, ...]]]:
  keys = _as_strings(batch.column(key_column))
  columns = [column.to_pylist() for column in batch.columns]
  return zip(keys, zip(*columns))


class _KeyMainRows(beam.DoFn):
  def __init__(self, by: str):
    self._by = by

  def process(self, batch):
    yield from _keyed_rows(batch, self._by)


class _KeySideRows(beam.DoFn):
  def __init__(self, key: str):
    self._key = key

  def process(self, batch):
    yield from _keyed_rows(batch, self._key)


class _JoinGroup(beam.DoFn):
  """(key, {main: rows, side: rows}) -> joined row tuples or dead letters."""

  def __init__(self, main_table: str, side_rules: rows_lib.TableRules,
               by: str, main_raw_index: int):
    self._main_table = main_table
    self._side_rules = side_rules
    self._by = by
    self._main_raw_index = main_raw_index

  def process(self, element, rejected: Optional[Mapping[str, str]] = None):
    key, grouped = element
    mains, sides = list(grouped["main"]), list(grouped["side"])
    raw_index = len(self._side_rules.columns)
    if len(sides) > 1:
      for side in sides:
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, rows_lib.dead_letter(
            self._side_rules.table, rows_lib.DUPLICATE_KEY, side[raw_index],
            f"key {self._side_rules.columns[0]!r} = {key!r} is on "
            f"{len(sides)} rows"))
    if len(sides) != 1:
      duplicates = frozenset([key]) if sides else frozenset()
      for main in mains:
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, lost_row_letter(
            self._main_table, self._side_rules.table, self._by, key,
            main[self._main_raw_index], duplicates, rejected or {}))
      return
    extra = sides[0][1:raw_index]
    for main in mains:
      yield main + extra


class _RowsToBatch(beam.DoFn):
  def __init__(self, schema: pa.Schema):
    self._schema = schema

  def process(self, row_tuples):
    columns = list(zip(*row_tuples))
    arrays = [pa.array(list(values), field.type)
              for values, field in zip(columns, self._schema)]
    yield pa.RecordBatch.from_arrays(arrays, schema=self._schema)


class ShuffleJoin(beam.PTransform):
  """Joins main batches with side batches through CoGroupByKey.

  Returns a DoOutputsTuple-like dict: {"joined": batches, DEAD_LETTER_TAG:
  dead letters}.
  """

  def __init__(self, side_batches: beam.PCollection,
               side_rules: rows_lib.TableRules, by: str, main_table: str,
               main_schema: pa.Schema, rejected=None, batch_size: int = 8192):
    """Builds the join.

    Args:
      side_batches: the side table's parsed batches.
      side_rules: the side table's rules (key first).
      by: the main table's join column.
      main_table: the main table's name, for dead letters.
      main_schema: the schema of the main batches.
      rejected: the side input `rejected_keys` gives, or None.
      batch_size: rows per re-built batch.
    """
    super().__init__()
    self._side_batches = side_batches
    self._side_rules = side_rules
    self._by = by
    self._main_table = main_table
    self._main_schema = main_schema
    self._rejected = rejected
    self._batch_size = batch_size

  def expand(self, main_batches):
    main_rows = main_batches | "KeyMain" >> beam.ParDo(_KeyMainRows(self._by))
    side_rows = self._side_batches | "KeySide" >> beam.ParDo(
        _KeySideRows(self._side_rules.columns[0]))
    joined = (
        {"main": main_rows, "side": side_rows}
        | "CoGroup" >> beam.CoGroupByKey()
        | "Join" >> beam.ParDo(_JoinGroup(
            self._main_table, self._side_rules, self._by,
            self._main_schema.get_field_index(rows_lib.RAW_COLUMN)),
                               rejected=self._rejected)
        .with_outputs(DEAD_LETTER_TAG, main="joined"))
    schema = joined_schema(self._main_schema, self._side_rules)
    batches = (joined.joined
               | "Batch" >> beam.BatchElements(
                   min_batch_size=self._batch_size,
                   max_batch_size=self._batch_size)
               | "ToRecordBatch" >> beam.ParDo(_RowsToBatch(schema)))
    return {"joined": batches, DEAD_LETTER_TAG: joined[DEAD_LETTER_TAG]}
