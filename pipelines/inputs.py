"""Checks on the raw inputs before any Beam work, and each table's rules.

`plan_inputs` runs before a pipeline is built: every file pattern must
match non-empty files (not directories), CSV encodings must be
ASCII-compatible (the readers cut byte ranges at b"\\n") and CSV headers
must hold the spec's columns;
the header decides where each column sits in a line (`header_positions`),
which becomes the table's parsing rules (pipelines/rows.py).
`check_bigquery_options` refuses BigQuery reads the job's options cannot
run, and `header_warnings` flags a CSV read with `header: false` whose
first line looks like a header. Paths go through Beam's FileSystems
(local, gs://, ...).
"""

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options as beam_options

from pipelines import rows as rows_lib
from transforms import spec as spec_lib


class InputError(ValueError):
  """An input that cannot be read at all: missing, empty or inconsistent."""


def _matched_files(pattern: str, where: str):
  try:
    results = FileSystems.match([pattern])
  except Exception as error:  # Beam wraps every filesystem failure.
    raise InputError(f"{where}: cannot list {pattern!r}: {error}") from None
  files = results[0].metadata_list if results else []
  if not files:
    raise InputError(f"{where}: no file matches {pattern!r}")
  for metadata in files:
    if "://" not in metadata.path and os.path.isdir(metadata.path):
      raise InputError(f"{where}: {metadata.path!r} is a directory; give a "
                       f"file, or a pattern such as "
                       f"{os.path.join(metadata.path, '*')!r}")
  return files


def _first_line(path: str, encoding: str) -> str:
  with FileSystems.open(path) as handle:
    head = b""
    while b"\n" not in head:
      chunk = handle.read(1 << 16)
      if not chunk:
        break
      head += chunk
  line = head.split(b"\n", 1)[0].rstrip(b"\r")
  try:
    return line.decode(encoding)
  except UnicodeDecodeError as error:
    raise InputError(f"{path}: the header line does not decode as "
                     f"{encoding}: {error}") from None


def check_encoding(table: spec_lib.InputTable) -> None:
  """Rejects encodings whose line breaks are not the byte b'\\n'.

  Ranges are cut at b'\\n' bytes, which is only right for ASCII-compatible
  encodings (utf-8, latin-1, cp1252, ...), not utf-16/32.

  Args:
    table: a CSV input table.

  Raises:
    InputError: the encoding is unknown or not ASCII-compatible.
  """
  try:
    newline = "\n".encode(table.encoding)
    sample = table.delimiter.encode(table.encoding)
  except LookupError:
    raise InputError(f"input '{table.name}': unknown encoding "
                     f"{table.encoding!r}") from None
  if newline != b"\n" or len(sample) != 1:
    raise InputError(f"input '{table.name}': encoding {table.encoding!r} is "
                     f"not ASCII-compatible; re-encode the files (e.g. as "
                     f"utf-8)")


def csv_header_fields(table: spec_lib.InputTable,
                      paths: Sequence[str]) -> Tuple[str, ...]:
  """The header every file of a CSV table starts with.

  Args:
    table: a CSV input table with header: true.
    paths: its matched files.

  Returns:
    The header's field names, in file order.

  Raises:
    InputError: files disagree on the header, or it lacks spec columns.
  """
  headers = {}
  for path in paths:
    line = _first_line(path, table.encoding)
    headers.setdefault(tuple(f.strip() for f in line.split(table.delimiter)),
                       path)
  if len(headers) > 1:
    (first, first_path), (second, second_path) = list(headers.items())[:2]
    raise InputError(f"input '{table.name}': files have different headers: "
                     f"{first_path} has {list(first)}, {second_path} has "
                     f"{list(second)}")
  fields = next(iter(headers))
  missing = [c for c in table.columns if c not in fields]
  if missing:
    raise InputError(f"input '{table.name}': header {list(fields)} of "
                     f"{next(iter(headers.values()))} lacks column(s) "
                     f"{missing} named in the spec")
  return fields


def check_inputs(spec: spec_lib.FeatureSpec) -> Dict[str, Dict[str, object]]:
  """Fails fast, before any Beam work, on inputs that cannot be read.

  Args:
    spec: the feature spec.

  Returns:
    Table name -> {"paths": matched files (train pattern, then eval_path;
    empty for BigQuery tables), "header": header fields for CSV tables with
    a header, else None}.

  Raises:
    InputError: a pattern matches nothing, every matched file is empty, the
      encoding is unusable, or CSV headers disagree with the spec.
  """
  found = {}
  for name in spec.used_tables:
    table = spec.inputs[name]
    where = f"input '{name}'"
    if table.is_bigquery:
      # Whether a table or query is readable is only known to BigQuery,
      # with credentials; its export job fails the run with BigQuery's
      # own message.
      found[name] = {"paths": [], "header": None}
      continue
    patterns = [table.path] + ([table.eval_path] if table.eval_path else [])
    paths = []
    for pattern in patterns:
      files = _matched_files(pattern, where)
      if all(f.size_in_bytes == 0 for f in files):
        raise InputError(f"{where}: every file matching {pattern!r} is empty")
      paths.extend(f.path for f in files)
    header = None
    if table.format == "csv":
      check_encoding(table)
      if table.header:
        header = csv_header_fields(table, paths)
    found[name] = {"paths": paths, "header": header}
  return found


def check_bigquery_options(spec: spec_lib.FeatureSpec,
                           options: beam_options.PipelineOptions) -> None:
  """Fails fast when the job's options cannot run its BigQuery reads.

  An EXPORT read writes a snapshot to Cloud Storage under --temp_location
  and runs its export (and query) jobs in --project; without them Beam
  fails only once the pipeline is running.

  Args:
    spec: the feature spec.
    options: the job's pipeline options.

  Raises:
    InputError: a BigQuery input is used without a gs:// --temp_location, or
      without --project when its table names no project or it is a query.
  """
  cloud = options.view_as(beam_options.GoogleCloudOptions)
  for name in spec.used_tables:
    table = spec.inputs[name]
    if not table.is_bigquery:
      continue
    where = f"input '{name}'"
    if not (cloud.temp_location or "").startswith("gs://"):
      raise InputError(f"{where}: a BigQuery read exports to Cloud Storage; "
                       f"give --temp_location gs://BUCKET/PATH (got "
                       f"{cloud.temp_location!r})")
    if not cloud.project and table.bigquery_project is None:
      what = "query" if table.query is not None else "table without a project"
      raise InputError(f"{where}: a BigQuery {what} runs its jobs in "
                       f"--project; give --project PROJECT")


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _looks_like_header(table: spec_lib.InputTable,
                       fields: Sequence[str]) -> bool:
  """A first line equal to the columns, or with words where numbers go."""
  fields = [f.strip().strip('"') for f in fields]
  if tuple(fields) == tuple(table.columns):
    return True
  if len(fields) != len(table.columns):
    return False
  numeric = [field for field, column in zip(fields, table.columns)
             if table.types[column] != "string"]
  return bool(numeric) and not any(_is_number(f) for f in numeric)


def header_warnings(spec: spec_lib.FeatureSpec,
                    found: Mapping[str, Mapping[str, object]]) -> List[str]:
  """Warnings for CSV tables read with `header: false` that seem to have one.

  Such a first line would be rejected as a bad row (or, when every column
  is a string, read as data).

  Args:
    spec: the feature spec.
    found: from check_inputs.

  Returns:
    One warning per file whose first line looks like a header.
  """
  warnings = []
  for name, info in found.items():
    table = spec.inputs[name]
    if table.format != "csv" or table.header:
      continue
    for path in info["paths"]:
      try:
        line = _first_line(path, table.encoding)
      except InputError:
        continue
      if _looks_like_header(table, line.split(table.delimiter)):
        warnings.append(
            f"input '{name}': the first line of {path} looks like a header "
            f"({line[:80]!r}) but the spec says header: false; it is read as "
            f"a row (set header: true if it is one)")
  return warnings


def header_positions(table: spec_lib.InputTable,
                     header: Optional[Sequence[str]]
                    ) -> Tuple[Dict[str, int], int]:
  """Where each spec column sits in a CSV line, and the field count.

  Args:
    table: a CSV input table.
    header: the header fields (check_inputs), or None without a header.

  Returns:
    (column -> field index, expected number of fields per line).
  """
  fields: List[str] = list(header) if header else list(table.columns)
  return {column: fields.index(column) for column in table.columns}, len(fields)


def table_rules(spec: spec_lib.FeatureSpec, found: Mapping[str, Mapping]
               ) -> Dict[str, rows_lib.TableRules]:
  """Each table's rules, from what check_inputs found.

  Args:
    spec: the feature spec.
    found: from check_inputs.

  Returns:
    Table name -> TableRules.
  """
  rules = {}
  for name, info in found.items():
    table = spec.inputs[name]
    if table.format == "csv":
      positions, num_fields = header_positions(table, info["header"])
    else:
      positions = {c: i for i, c in enumerate(table.columns)}
      num_fields = len(table.columns)
    rules[name] = rows_lib.table_rules(spec, name, positions, num_fields)
  return rules


def plan_inputs(spec: spec_lib.FeatureSpec) -> Dict[str, rows_lib.TableRules]:
  """Checks every input exists and is readable; returns each table's rules.

  Runs before any Beam work, so a missing file, an empty input or a CSV
  header that disagrees with the spec fails fast.

  Args:
    spec: the feature spec.

  Returns:
    Table name -> TableRules, for the main table and every joined table.

  Raises:
    InputError: an input cannot be used.
  """
  return table_rules(spec, check_inputs(spec))
