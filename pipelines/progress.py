"""Progress lines of `embeddings preprocess`, printed by the Beam steps.

A run prints a line when each phase starts and, while a pass reads the main
table, at most one line every PROGRESS_EVERY_S seconds with the rows read so
far and the rate. A job that reads its main table twice (pipelines/steps.py)
has an analysis pass and a transform pass; the transform pass knows how many
rows the analysis pass read, so its lines give the share done and an ETA.
The lines come from the process that runs the step: the command's own
process on the in-process DirectRunner, the worker processes (their logs)
on other runners. Counting is per process.
"""

import sys
import threading
import time
from typing import Optional

import apache_beam as beam

PREFIX = "embeddings preprocess:"
# Seconds between two "rows read" lines at most.
PROGRESS_EVERY_S = 10.0

# The passes over the main table, as progress lines name them.
ONE_PASS = "reading"
ANALYSIS_PASS = "analysis pass"
TRANSFORM_PASS = "transform pass"

_lock = threading.Lock()
# Per pass: started (when its first rows were read), printed (when its last
# line was), rows; announced: the phase lines already printed.
_state = {"passes": {}, "announced": set()}


def say(text: str) -> None:
  """Prints one progress line.

  Args:
    text: the line, without the command's prefix.
  """
  print(f"{PREFIX} {text}", file=sys.stdout, flush=True)


def start(reread_input: bool = False) -> None:
  """Resets the counters at the start of a run and prints its first phase.

  Args:
    reread_input: the job reads its main table twice (an analysis pass,
      then a transform pass).
  """
  with _lock:
    _state.update(passes={}, announced=set())
  say("analysis pass: reading the inputs (the transform pass reads them "
      "again once the analysis is done)" if reread_input
      else "reading the inputs")


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def progress_line(phase: str, rows: int, elapsed: float,
                  total: Optional[int] = None) -> str:
  """The text of one progress line.

  Args:
    phase: the pass (ONE_PASS, ANALYSIS_PASS, TRANSFORM_PASS).
    rows: rows read so far.
    elapsed: seconds since the pass's first rows.
    total: rows the pass will read, when known.

  Returns:
    E.g. "transform pass: 2,000,000 of 8,000,000 rows (25%), 100,000
    rows/s, ETA 1m00s".
  """
  rate = rows / max(elapsed, 1e-9)
  if not total:
    return f"{phase}: {rows:,} rows read ({rate:,.0f} rows/s)"
  left = max(total - rows, 0) / max(rate, 1e-9)
  return (f"{phase}: {rows:,} of {total:,} rows "
          f"({100.0 * rows / total:.0f}%), {rate:,.0f} rows/s, "
          f"ETA {_duration(left)}")


def rows_read(phase: str, rows: int, total: Optional[int] = None) -> None:
  """Adds rows to a pass's count; prints it when its last line is old enough.

  Args:
    phase: the pass.
    rows: rows just read.
    total: rows the pass will read, when known.
  """
  with _lock:
    now = time.monotonic()
    state = _state["passes"].setdefault(
        phase, {"started": now, "printed": now, "rows": 0})
    state["rows"] += rows
    if now - state["printed"] < PROGRESS_EVERY_S:
      return
    state["printed"] = now
    line = progress_line(phase, state["rows"], now - state["started"], total)
  say(line)


def announce_once(text: str) -> None:
  """Prints `text` the first time this process asks for it in this run.

  Args:
    text: a phase line.
  """
  with _lock:
    if text in _state["announced"]:
      return
    _state["announced"].add(text)
  say(text)


class AnnounceFirst(beam.DoFn):
  """Passes elements through; the first one announces a phase."""

  def __init__(self, text: str):
    self._text = text

  def process(self, element):
    announce_once(self._text)
    yield element


def _num_rows(batch) -> int:
  return batch.num_rows


def _announce_analysis(train_rows: int) -> None:
  announce_once(f"read every input ({train_rows:,} train rows); analyzing "
                f"on train")


def announce_analysis(train_batches: beam.PCollection) -> beam.PCollection:
  """Announces the analysis once every train batch has been read.

  Args:
    train_batches: the train split's RecordBatches the analysis reads.

  Returns:
    The number of train rows, as a singleton PCollection.
  """
  train_rows = (train_batches
                | "CountTrainRows" >> beam.Map(_num_rows)
                | "SumTrainRows" >> beam.CombineGlobally(sum))
  _ = train_rows | "AnnounceAnalysis" >> beam.Map(_announce_analysis)
  return train_rows
