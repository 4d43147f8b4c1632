"""Display names of side-table rows: `names/<feature>.tsv`.

A side table that names a `display_column` (a movie's title) and maybe a
`group_feature` (a tokens or vocabulary feature read from that table, such
as a movie's genres) gets one TSV per feature whose source column is its
key (PreprocessedLayout.names):

  token<TAB>name<TAB>group
  1<TAB>Toy Story (1995)<TAB>Animation

one line per valid side row (a key on several rows names nothing, as it
joins nothing), sorted by token (as numbers when every token is an
integer). The group is the row's first token of the group feature, empty
when it has none. Tabs and line breaks inside a name become spaces.
Export copies these names and groups into the embedding tables.
"""

import re
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import pyarrow as pa

from core import files
from core import layout
from pipelines import rows as rows_lib
from transforms import spec as spec_lib

HEADER = ("token", "name", "group")
_SEPARATORS = re.compile(r"[\t\r\n]+")


def _cell(value: str) -> str:
  return _SEPARATORS.sub(" ", value).strip()


def _sort_key(tokens: List[str]):
  if all(re.fullmatch(r"-?\d+", token) for token in tokens):
    return lambda token: int(token)
  return lambda token: token


def names_text(batches: Iterable[pa.RecordBatch], rules: rows_lib.TableRules,
               display_column: str,
               group: Optional[spec_lib.Feature] = None) -> str:
  """The TSV text of a side table's names.

  Args:
    batches: the side table's parsed batches (rules.schema).
    rules: the side table's rules; its first column is the key.
    display_column: the column holding each row's name.
    group: the table's group feature, or None.

  Returns:
    The file's text: the header, then one line per row with a unique key.
  """
  rows: Dict[str, List[str]] = {}
  duplicated = set()
  for batch in batches:
    columns = {name: batch.column(name).to_pylist()
               for name in batch.schema.names}
    for index, key in enumerate(columns[rules.key]):
      token = str(key)
      if token in rows:
        duplicated.add(token)
      group_tokens = []
      if group is not None:
        group_tokens = group.kind.value_tokens(
            group, {c: columns[c][index] for c in group.source_columns})
      rows[token] = [token, _cell(columns[display_column][index]),
                     _cell(group_tokens[0]) if group_tokens else ""]
  tokens = sorted((t for t in rows if t not in duplicated),
                  key=_sort_key(list(rows)))
  lines = ["\t".join(HEADER)] + ["\t".join(rows[t]) for t in tokens]
  return "\n".join(lines) + "\n"


class _WriteNames(beam.DoFn):
  """[batches] -> the names file of each named feature."""

  def __init__(self, rules: rows_lib.TableRules, display_column: str,
               group: Optional[spec_lib.Feature], paths: List[str]):
    self._rules = rules
    self._display_column = display_column
    self._group = group
    self._paths = paths

  def process(self, batches):
    text = names_text(batches, self._rules, self._display_column, self._group)
    for path in self._paths:
      files.write_text(path, text)
    yield len(self._paths)


def write_names(side_rows: beam.PCollection, spec: spec_lib.FeatureSpec,
                table_name: str, rules: rows_lib.TableRules,
                out: layout.PreprocessedLayout) -> None:
  """Adds the steps writing the names files a side table gives.

  Does nothing when the table names no display column or no feature reads
  its key.

  Args:
    side_rows: the side table's parsed batches (with its display column).
    spec: the feature spec.
    table_name: the side table.
    rules: its rules.
    out: the (staging) output.
  """
  table = spec.inputs[table_name]
  features = sorted(feature for feature, named in spec.named_tables().items()
                    if named == table_name)
  if table.display_column is None or not features:
    return
  group = (spec.feature(table.group_feature)
           if table.group_feature is not None else None)
  label = table_name.capitalize()
  _ = (side_rows
       | f"Collect{label}Names" >> beam.combiners.ToList()
       | f"Write{label}Names" >> beam.ParDo(_WriteNames(
           rules, table.display_column, group,
           [out.names(feature) for feature in features])))
