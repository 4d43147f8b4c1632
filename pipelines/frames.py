"""A spec's input tables as pandas DataFrames, typed the way preprocessing is.

For notebooks and for scoring raw rows with a trained model
(embeddings.TrainedModel.score): a table is read with its spec's format,
delimiter, encoding, header and column types, through the very parsers
`embeddings preprocess` uses (pipelines/parsers.py, pipelines/rows.py), so
a value converts here exactly as it did there and a row the job would
dead-letter is a dead letter here too, never a silently dropped row.
Side tables join onto main rows by the same rules as pipelines/joins.py:
keys match as text, a key on several side rows is ambiguous (all its rows
rejected), and a main row whose key has no side row is an error naming how
many rows and a sample key.

Files are read whole into memory: this is for tables a notebook holds,
not for a job's inputs. BigQuery tables are refused (read them with the
BigQuery client).
"""

import dataclasses
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tfx_bsl.coders import example_coder

from core import layout
from pipelines import inputs
from pipelines import joins
from pipelines import parsers
from pipelines import rows as rows_lib
from pipelines import split as split_lib
from transforms import spec as spec_lib

# How many offending values an error message quotes.
_SAMPLES = 3
_TFRECORD_COMPRESSION = {CompressionTypes.UNCOMPRESSED: "",
                         CompressionTypes.GZIP: "GZIP"}


class FrameError(ValueError):
  """Rows or tables that cannot be read or joined; one line says why."""


@dataclasses.dataclass(frozen=True)
class TableFrame:
  """One input table read into pandas.

  Attributes:
    frame: the valid rows (of the split asked for), one column per kept
      spec column, typed as the spec says (string -> text, int -> int64,
      float -> float64).
    dead_letters: the rejected rows, as `embeddings preprocess` writes them
      to dead_letter/ (table, reason, detail, raw).
    rows_read: rows in the files read (valid rows + dead letters; blank
      lines are not rows), before a split by hash.
  """
  frame: pd.DataFrame
  dead_letters: List[Dict[str, str]]
  rows_read: int


def _matched_paths(pattern: str, where: str) -> List[str]:
  try:
    results = FileSystems.match([pattern])
  except Exception as error:  # Beam wraps every filesystem failure.
    raise FrameError(f"{where}: cannot list {pattern!r}: {error}") from None
  paths = sorted(f.path for f in (results[0].metadata_list if results else ()))
  if not paths:
    raise FrameError(f"{where}: no file matches {pattern!r}")
  return paths


def _read_bytes(path: str) -> bytes:
  # Compression is detected from the extension, as the job's readers do.
  with FileSystems.open(path) as handle:
    return handle.read()


def _rules(spec: spec_lib.FeatureSpec, name: str, paths: Sequence[str],
           all_columns: bool) -> rows_lib.TableRules:
  """The table's parsing rules, for its needed columns or all of them."""
  table = spec.inputs[name]
  if table.format == "csv":
    inputs.check_encoding(table)
    header = inputs.csv_header_fields(table, paths) if table.header else None
    positions, num_fields = inputs.header_positions(table, header)
  else:
    positions = {c: i for i, c in enumerate(table.columns)}
    num_fields = len(table.columns)
  rules = rows_lib.table_rules(spec, name, positions, num_fields)
  if not all_columns:
    return rules
  columns = list(table.columns)
  if table.key is not None and name != spec.main:
    # Side tables lead with their key, as joins.build_side_table expects.
    columns.remove(table.key)
    columns.insert(0, table.key)
  return dataclasses.replace(
      rules, columns=tuple(columns),
      types={c: table.types[c] for c in columns},
      positions={c: positions[c] for c in columns})


def _parse_file(rules: rows_lib.TableRules, table: spec_lib.InputTable,
                path: str, decoder) -> parsers.Parsed:
  if table.format == "csv":
    block = _read_bytes(path)
    if table.header:
      newline = block.find(b"\n")
      block = b"" if newline < 0 else block[newline + 1:]
    return parsers.parse_csv_block(rules, block)
  if table.format == "parquet":
    with FileSystems.open(path) as handle:
      arrow = pq.read_table(handle, columns=list(rules.columns))
    return parsers.parse_arrow_table(rules, arrow)
  compression = CompressionTypes.detect_compression_type(path)
  if compression not in _TFRECORD_COMPRESSION:
    raise FrameError(f"input '{table.name}': {path} is compressed as "
                     f"{compression}; TFRecords are read plain or gzipped")
  records = [record.numpy() for record in tf.data.TFRecordDataset(
      path, compression_type=_TFRECORD_COMPRESSION[compression])]
  return parsers.parse_examples(rules, records, decoder)


def _split_pattern(spec: spec_lib.FeatureSpec, name: str,
                   split: Optional[str]) -> str:
  """The file pattern holding a table's rows of `split`."""
  table = spec.inputs[name]
  where = f"input '{name}'"
  if split is None:
    return table.path
  if split not in layout.SPLITS:
    raise FrameError(f"split {split!r}: expected one of {layout.SPLITS} or "
                     f"None (every row)")
  if name != spec.main:
    raise FrameError(f"{where} is a side table: only the main table "
                     f"'{spec.main}' has train and eval rows")
  if table.eval_path:
    return table.eval_path if split == layout.EVAL else table.path
  if spec.split is None:
    raise FrameError(f"spec {spec.name!r} has neither an eval_path nor a "
                     f"split: it has no eval rows")
  absent = [c for c in spec.split.key if c not in table.columns]
  if absent:
    raise FrameError(f"the split key {absent} is not in {where}: its splits "
                     f"are only known after the join")
  return table.path


def _in_split(spec: spec_lib.FeatureSpec, arrow: pa.Table,
              split: str) -> pa.Table:
  """The rows of `arrow` (the main table's path) that `split` holds."""
  batch = arrow.combine_chunks().to_batches()
  if not batch:
    return arrow
  in_eval = split_lib.eval_mask(
      split_lib.split_keys(batch[0], spec.split.key),
      spec.split.eval_fraction, spec.split.seed)
  return arrow.filter(pa.array(in_eval if split == layout.EVAL
                               else ~in_eval))


def _parsed_table(spec: spec_lib.FeatureSpec, name: str,
                  split: Optional[str], all_columns: bool):
  """(rules, pyarrow Table with RAW_COLUMN, dead letters, rows read)."""
  if name not in spec.inputs:
    raise FrameError(f"spec {spec.name!r} has no input {name!r}; its inputs: "
                     f"{', '.join(spec.inputs)}")
  table = spec.inputs[name]
  where = f"input '{name}'"
  if table.is_bigquery:
    raise FrameError(f"{where} is a BigQuery table, which is not read into "
                     f"pandas here: query it with the BigQuery client")
  pattern = _split_pattern(spec, name, split)
  try:
    paths = _matched_paths(pattern, where)
    rules = _rules(spec, name, paths, all_columns)
  except inputs.InputError as error:
    raise FrameError(str(error)) from None
  decoder = (example_coder.ExamplesToRecordBatchDecoder()
             if table.format == "tfrecord" else None)
  batches, letters, rows_read = [], [], 0
  for path in paths:
    parsed = _parse_file(rules, table, path, decoder)
    batches.append(parsed.rows)
    letters.extend(parsed.dead_letters)
    # Blank lines are counted by the parsers but are not rows.
    rows_read += parsed.read - parsed.blank
  arrow = pa.Table.from_batches(batches, schema=rules.schema)
  if split is not None and not table.eval_path:
    arrow = _in_split(spec, arrow, split)
  return rules, arrow, letters, rows_read


def read_table(spec: spec_lib.FeatureSpec, name: str,
               split: Optional[str] = None,
               all_columns: bool = True) -> TableFrame:
  """Reads one input table of a spec into pandas.

  Args:
    spec: the feature spec.
    name: the input table, e.g. "ratings" or "items".
    split: None reads every row of the table's `path`; layout.TRAIN or
      layout.EVAL (main table only) that split's rows: its `path` or
      `eval_path` when it has one, else the rows of `path` the spec's split
      hashes to that side (the same rows preprocessing puts there, but for
      rows its joins reject).
    all_columns: every column the spec lists for the table (True), or only
      those preprocessing reads (features, label, keys), which is what
      scoring needs; rows are rejected by the same rules either way.

  Returns:
    The TableFrame: typed valid rows, dead letters and rows read (of the
    whole file pattern, before a split).

  Raises:
    FrameError: the table is BigQuery, no file matches, a CSV header lacks
      spec columns, or the table has no such split.
  """
  _, arrow, letters, rows_read = _parsed_table(spec, name, split, all_columns)
  frame = arrow.drop_columns([rows_lib.RAW_COLUMN]).to_pandas()
  return TableFrame(frame=frame, dead_letters=letters, rows_read=rows_read)


@dataclasses.dataclass(frozen=True)
class SideRows:
  """A side table as the preprocessing join sees it.

  Attributes:
    table: the rows with unique keys: the columns the join carries, the
      key (as text) first (joins.build_side_table).
    duplicate_keys: keys that were on several rows (all rejected).
    rejected: key -> reason of every row its parser rejected (when the
      key could be read), which main rows with that key are lost for.
  """
  table: pa.Table
  duplicate_keys: FrozenSet[str]
  rejected: Mapping[str, str]


def read_side_table(spec: spec_lib.FeatureSpec, name: str) -> SideRows:
  """A side table ready to join: the columns the join carries, unique keys.

  Args:
    spec: the feature spec.
    name: a joined side table.

  Returns:
    The SideRows: rejected rows and every row of a duplicated key left
    out, as the preprocessing join leaves them out.

  Raises:
    FrameError: see read_table.
  """
  rules, arrow, letters, _ = _parsed_table(spec, name, None,
                                           all_columns=False)
  # Display columns only name rows (names/<feature>.tsv); the join does
  # not carry them.
  join_rules = rules.without_display()
  arrow = arrow.select(list(join_rules.schema.names))
  side, _ = joins.build_side_table(arrow.to_batches(), join_rules)
  rejected = {letter["key"]: letter["reason"] for letter in letters
              if letter.get("key") is not None}
  return SideRows(table=side.table, duplicate_keys=side.duplicate_keys,
                  rejected=rejected)


def _column_values(series: pd.Series) -> list:
  """Python values of a column, missing ones (NaN, None, NaT) as None."""
  values = series.astype(object)
  return values.where(series.notna(), None).tolist()


def columns_to_join(spec: spec_lib.FeatureSpec, columns: Sequence[str]
                   ) -> Tuple[Tuple[spec_lib.Join, ...], Tuple[str, ...]]:
  """What it takes to give main rows the raw `columns`.

  Args:
    spec: the feature spec.
    columns: raw columns wanted on each row (e.g. the ones a model reads).

  Returns:
    (the joins whose side tables hold one of them, in spec order; the
    main-table columns needed: those of `columns` there, and the join
    columns of those joins).
  """
  wanted = set(columns)
  used = []
  # Backwards: a join's `by` may be a column an earlier join brings.
  for join in reversed(spec.joins):
    side = spec.inputs[join.table]
    if wanted & (set(side.columns) - {side.key}):
      used.insert(0, join)
      wanted.add(join.by)
  main = tuple(c for c in spec.main_table.columns if c in wanted)
  return tuple(used), main


def typed_main_rows(spec: spec_lib.FeatureSpec, frame: pd.DataFrame,
                    columns: Sequence[str]) -> pa.Table:
  """Main-table rows from a DataFrame, typed and checked as preprocessing does.

  Args:
    spec: the feature spec.
    frame: one row per main-table row; columns other than `columns` are
      ignored.
    columns: the main-table columns to take (columns_to_join).

  Returns:
    A pyarrow Table of `columns` with the spec's types, in frame order.

  Raises:
    FrameError: a column is missing, or rows that preprocessing would
      reject (naming how many, the first few by index, and why).
  """
  main = spec.main_table
  columns = tuple(columns)
  missing = [c for c in columns if c not in frame.columns]
  if missing:
    raise FrameError(f"the frame lacks column(s) {missing} of input "
                     f"'{spec.main}'")
  rules = rows_lib.table_rules(spec, spec.main,
                               {c: i for i, c in enumerate(main.columns)},
                               len(main.columns))
  rules = dataclasses.replace(
      rules, columns=columns, types={c: main.types[c] for c in columns},
      label=None)
  batch, letters = rows_lib.validate_columns(
      rules, {c: _column_values(frame[c]) for c in columns},
      [repr(index) for index in frame.index.tolist()], from_text=False)
  if letters:
    samples = "; ".join(f"index {letter['raw']}: {letter['detail']}"
                        for letter in letters[:_SAMPLES])
    raise FrameError(f"{len(letters)} of {len(frame)} rows are not valid "
                     f"'{spec.main}' rows ({samples})")
  return pa.Table.from_batches([batch]).drop_columns([rows_lib.RAW_COLUMN])


def join_side_tables(main: pa.Table, joined: Sequence[spec_lib.Join],
                     sides: Mapping[str, SideRows]) -> pa.Table:
  """Adds side tables' columns to main rows, as preprocessing joins them.

  Args:
    main: typed main rows (typed_main_rows).
    joined: the joins to make, in spec order.
    sides: side table name -> SideRows (read_side_table), for each join.

  Returns:
    `main` with each side table's columns but its key, row for row.

  Raises:
    FrameError: rows whose key has no side row (or only a rejected one),
      naming how many and a sample key.
  """
  for join in joined:
    side = sides[join.table]
    keys = main.column(join.by).combine_chunks()
    if not pa.types.is_string(keys.type):
      keys = pc.cast(keys, pa.string())
    side_rows = pc.index_in(keys, value_set=side.table.column(0))
    if side_rows.null_count:
      _raise_lost_rows(join, keys, side_rows, side)
    matched = side.table.take(side_rows)
    for name in side.table.column_names[1:]:
      main = main.append_column(name, matched.column(name))
  return main


def _raise_lost_rows(join: spec_lib.Join, keys: pa.Array,
                     side_rows: pa.Array, side: SideRows) -> None:
  """Raises the FrameError for rows whose key found no side row."""
  absent = pc.unique(keys.filter(side_rows.is_null())).to_pylist()
  sample = absent[0]
  if sample in side.duplicate_keys:
    why = f" (its rows there were rejected as {rows_lib.DUPLICATE_KEY})"
  elif sample in side.rejected:
    why = f" (its row there was rejected as {side.rejected[sample]})"
  else:
    why = ""
  raise FrameError(
      f"{side_rows.null_count} of {len(keys)} rows have a {join.by!r} that "
      f"is no key of input '{join.table}', e.g. {sample!r}{why}")


def joined_rows(spec: spec_lib.FeatureSpec, frame: pd.DataFrame,
                columns: Optional[Sequence[str]] = None) -> pa.Table:
  """Raw main-table rows typed and joined with the side tables they need.

  Args:
    spec: the feature spec.
    frame: raw main-table rows (see typed_main_rows).
    columns: the raw columns wanted (default: every column the features
      read); only the side tables holding one of them are joined.

  Returns:
    The typed, joined rows: at least `columns`.

  Raises:
    FrameError: see typed_main_rows, read_side_table, join_side_tables.
  """
  if columns is None:
    columns = [c for c in spec.raw_column_types() if c != spec.label.column]
  joined, main_columns = columns_to_join(spec, columns)
  sides = {join.table: read_side_table(spec, join.table) for join in joined}
  return join_side_tables(typed_main_rows(spec, frame, main_columns), joined,
                          sides)
