"""The preprocessing job's row counts: summary and rejection check.

The Beam steps emit (kind, ...) -> rows pairs, summed per key and written
as one JSON file (layout.PreprocessedLayout.counts):

  ("read", table)               rows a table's reader produced, blank
                                lines included
  ("blank", table)              blank lines (CSV), which are not rows
  ("written", split)            rows written to a split (train, eval, and
                                eval_raw with raw_eval)
  ("rejected", table, reason)   dead letters per table and reason
  ("lost", table, side table)   main rows rejected because their side row
                                was (rejected_side_row)
  ("analyzed", "train")         train rows the analysis read; equal to the
                                train rows written, also when the job read
                                its main table twice

For the main table, rows read = rows written + rows rejected + blank
lines: `check_rejections` refuses an output where they do not add up.

After the pipeline, `summarize_counts` shapes them into the run report's
sections and `check_rejections` decides whether the output is accepted.
"""

import json
from typing import Dict, Iterable, Mapping, Sequence, Tuple

from core import files
from core import layout

READ = "read"
BLANK = "blank"
WRITTEN = "written"
REJECTED = "rejected"
LOST = "lost"
ANALYZED = "analyzed"

Counts = Mapping[Tuple[str, ...], int]


class RejectedRowsError(RuntimeError):
  """Too many rows were rejected; the output was not accepted."""


class EmptyInputError(ValueError):
  """An input, or the train split, ended up with no rows."""


class UnreconciledCountsError(RuntimeError):
  """The main table's rows read are not its rows written + rejected + blank."""


def counts_json(pairs: Iterable[Tuple[Tuple[str, ...], int]]) -> str:
  """The counts file's text: a sorted JSON list of [key, rows] pairs.

  Args:
    pairs: (key tuple, rows) pairs, one per key.

  Returns:
    The JSON text.
  """
  return json.dumps(sorted([list(key), value] for key, value in pairs))


def read_counts(path: str) -> Dict[Tuple[str, ...], int]:
  """Reads a counts file written from `counts_json`.

  Args:
    path: the file (any filesystem tf.io.gfile knows).

  Returns:
    Key tuple -> rows.
  """
  return {tuple(key): value for key, value in json.loads(files.read_text(path))}


def summarize_counts(counts: Counts, tables: Sequence[str],
                     raw_splits: Sequence[str] = ()) -> Dict[str, object]:
  """Shapes raw (kind, ...) -> n counts into the run report's sections.

  Args:
    counts: ("read", table), ("written", split), ("rejected", table, reason)
      -> rows.
    tables: every input table the job read.
    raw_splits: the raw-row outputs the job wrote (layout.RAW_EVAL), kept
      apart from rows_written so that rows read = rows written + rows
      rejected still holds there.

  Returns:
    {"rows_read": {table: n}, "rows_blank": {table: n}, "rows_written":
    {split: n} (train and eval), "raw_rows_written": {raw split: n},
    "rows_rejected": {table: {reason: n}}, "rows_rejected_total": {table:
    n}, "rows_lost_to_rejected_side_rows": {table: {side table: n}}}.
  """
  read = {table: counts.get((READ, table), 0) for table in tables}
  blank = {table: counts.get((BLANK, table), 0) for table in tables}
  written = {name: counts.get((WRITTEN, name), 0) for name in layout.SPLITS}
  raw = {name: counts.get((WRITTEN, name), 0) for name in raw_splits}
  rejected: Dict[str, Dict[str, int]] = {table: {} for table in tables}
  lost: Dict[str, Dict[str, int]] = {table: {} for table in tables}
  for key, value in sorted(counts.items()):
    if key[0] == REJECTED:
      rejected.setdefault(key[1], {})[key[2]] = value
    elif key[0] == LOST:
      lost.setdefault(key[1], {})[key[2]] = value
  totals = {table: sum(reasons.values()) for table, reasons in rejected.items()}
  return {"rows_read": read, "rows_blank": blank, "rows_written": written,
          "rows_analyzed": counts.get((ANALYZED, layout.TRAIN)),
          "raw_rows_written": raw, "rows_rejected": rejected,
          "rows_rejected_total": totals,
          "rows_lost_to_rejected_side_rows": lost}


def _top_reasons(reasons: Mapping[str, int]) -> str:
  ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
  return ", ".join(f"{reason}: {n}" for reason, n in ranked)


def check_rejections(summary: Mapping[str, Mapping], main_table: str,
                     max_fraction: float) -> None:
  """Fails when a table rejected too many rows or nothing reached train.

  Args:
    summary: from summarize_counts.
    main_table: the spec's main table.
    max_fraction: the highest acceptable rejected / read per table.

  Rows lost to a rejected side row count for the main table (they are its
  rows), and blank lines for no table.

  Raises:
    RejectedRowsError: a table's rejected fraction is above max_fraction.
    EmptyInputError: a table had no rows at all.
    UnreconciledCountsError: the main table's counts do not add up, or
      the analysis saw other train rows than the transform wrote.
  """
  blank = summary.get("rows_blank", {})
  for table, read in summary["rows_read"].items():
    rows = read - blank.get(table, 0)
    if rows == 0:
      raise EmptyInputError(f"input '{table}' has no rows")
    rejected = summary["rows_rejected_total"].get(table, 0)
    if rejected / rows > max_fraction:
      lost = summary.get("rows_lost_to_rejected_side_rows", {}).get(table)
      because = "".join(f"; {n} lost because their row of '{side}' was "
                        f"rejected" for side, n in sorted((lost or {}).items()))
      raise RejectedRowsError(
          f"input '{table}': {rejected} of {rows} rows "
          f"({100.0 * rejected / rows:.2f}%) were rejected, more than "
          f"max_rejected_fraction {max_fraction} allows "
          f"({_top_reasons(summary['rows_rejected'][table])}){because}")
  written = sum(summary["rows_written"].values())
  accounted = (written + summary["rows_rejected_total"].get(main_table, 0)
               + blank.get(main_table, 0))
  if accounted != summary["rows_read"][main_table]:
    raise UnreconciledCountsError(
        f"input '{main_table}': {summary['rows_read'][main_table]} rows read "
        f"but {written} written + "
        f"{summary['rows_rejected_total'].get(main_table, 0)} rejected + "
        f"{blank.get(main_table, 0)} blank = {accounted}")
  analyzed = summary.get("rows_analyzed")
  if (analyzed is not None
      and analyzed != summary["rows_written"][layout.TRAIN]):
    raise UnreconciledCountsError(
        f"input '{main_table}': the analysis read {analyzed} train rows but "
        f"the transform wrote {summary['rows_written'][layout.TRAIN]}; the "
        f"input changed while the job read it twice (see --input_passes)")
  if summary["rows_written"][layout.TRAIN] == 0:
    raise EmptyInputError(f"no row of input '{main_table}' reached the train "
                          f"split")
