"""Progress lines of `embeddings preprocess`, printed by the Beam steps.

A run prints a line when each phase starts (reading; analyzing on train,
once every train row was read; transforming and writing) and, while it
reads, at most one line every PROGRESS_EVERY_S seconds with the rows read
so far and the rate. The lines come from the process that runs the step:
the command's own process on the in-process DirectRunner, the worker
processes (their logs) on other runners. Counting is per process.
"""

import sys
import threading
import time

import apache_beam as beam

PREFIX = "embeddings preprocess:"
# Seconds between two "rows read" lines at most.
PROGRESS_EVERY_S = 10.0

_lock = threading.Lock()
# started: when the first rows were read (None before); printed: when the
# last "rows read" line was.
_state = {"started": None, "printed": None, "rows": 0, "announced": set()}


def say(text: str) -> None:
  """Prints one progress line.

  Args:
    text: the line, without the command's prefix.
  """
  print(f"{PREFIX} {text}", file=sys.stdout, flush=True)


def start() -> None:
  """Resets the counters at the start of a run and prints its first phase."""
  with _lock:
    _state.update(started=None, printed=None, rows=0, announced=set())
  say("reading the inputs")


def rows_read(rows: int) -> None:
  """Adds rows to the count; prints it when the last line is old enough.

  Args:
    rows: rows just read.
  """
  with _lock:
    _state["rows"] += rows
    now = time.monotonic()
    if _state["started"] is None:
      _state["started"] = _state["printed"] = now
    if now - _state["printed"] < PROGRESS_EVERY_S:
      return
    _state["printed"] = now
    total, elapsed = _state["rows"], now - _state["started"]
  say(f"read {total:,} rows ({total / max(elapsed, 1e-9):,.0f} rows/s)")


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


def announce_analysis(train_batches: beam.PCollection) -> None:
  """Announces the analysis once every train batch has been read.

  Args:
    train_batches: the train split's RecordBatches.
  """
  _ = (train_batches
       | "CountTrainRows" >> beam.Map(_num_rows)
       | "SumTrainRows" >> beam.CombineGlobally(sum)
       | "AnnounceAnalysis" >> beam.Map(_announce_analysis))
