"""Benchmarks: performance claims, measured as ratios against a baseline
measured in the same run (never as timed assertions in tests/).

Layout and contract:
  * Each benchmark is a module `benchmarks/<name>_bench.py` exposing
    `run(quick: bool) -> dict`. `quick=True` is a small, minutes-at-most
    version of the same measurement (for smoke runs); `quick=False` is the
    measurement the README quotes.
  * The returned dict is JSON-serializable. If it has a "table" entry (a
    list of flat dicts, one per printed row), `python -m benchmarks.run`
    prints it as a table; everything is saved to
    benchmarks/results/<name>.json (git-ignored).
  * `python -m benchmarks.run [--only NAME] [--quick]` (also `make bench`)
    discovers and runs every *_bench.py module; see benchmarks/run.py.
  * Modules may also have their own command line
    (`python -m benchmarks.<name>_bench --help`) for larger sweeps.

Helpers shared by benchmark modules live here: `results_dir()` and
`PeakRss`, a psutil sampler of the peak resident memory of a process and
all of its children.
"""

import os
import threading
import time
from typing import Optional

import psutil

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results")


def results_dir(*parts: str) -> str:
  """benchmarks/results[/parts...], created if missing.

  Args:
    *parts: sub-folders.

  Returns:
    The folder's path.
  """
  path = os.path.join(RESULTS_DIR, *parts)
  os.makedirs(path, exist_ok=True)
  return path


def tree_rss(process: psutil.Process) -> int:
  """Resident bytes of a process plus all its descendants (0 once gone).

  Shared pages count once per process, so for multi-process runners this
  overstates the physical memory a little; it is the number `top` users
  add up.
  """
  total = 0
  try:
    procs = [process] + process.children(recursive=True)
  except psutil.Error:
    return 0
  for proc in procs:
    try:
      total += proc.memory_info().rss
    except psutil.Error:
      continue
  return total


class PeakRss:
  """Samples a process tree's RSS in a background thread; keeps the peak.

  Usage:
    with PeakRss(pid) as peak:
      ...            # the work
    peak.peak_bytes

  Args:
    pid: the root process (default: this process).
    interval: seconds between samples.
  """

  def __init__(self, pid: Optional[int] = None, interval: float = 0.05):
    self._process = psutil.Process(pid or os.getpid())
    self._interval = interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self.peak_bytes = 0
    self.samples = 0

  def _sample(self) -> None:
    while not self._stop.is_set():
      self.peak_bytes = max(self.peak_bytes, tree_rss(self._process))
      self.samples += 1
      time.sleep(self._interval)

  def __enter__(self) -> "PeakRss":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()

  @property
  def peak_mb(self) -> float:
    return round(self.peak_bytes / (1 << 20), 1)
