"""Data windows of scheduled retraining: dated paths matching a pattern.

A window is a date, ISO (2024-01-07) or compact (20240107), optionally with
a time (2024-01-07T06), filled into a path pattern with one `{date}`, e.g.
`gs://bucket/ratings/{date}`; names sort in time order, so the newest
window is the last one listed.
"""

import re
from typing import List

import tensorflow as tf

from transforms import spec as spec_lib
from workflows.registry import RetrainError

DATE_PLACEHOLDER = "{date}"
_DATE = r"\d{4}-?\d{2}-?\d{2}(?:[T_]\d{2}(?::?\d{2}){0,2})?"


def pattern_regex(pattern: str) -> "re.Pattern":
  """The regex that finds the date in paths matching `pattern`.

  Raises:
    RetrainError: the pattern has no `{date}`, or several.
  """
  if pattern.count(DATE_PLACEHOLDER) != 1:
    raise RetrainError(f"--data_pattern {pattern!r} must contain {{date}} "
                       f"exactly once")
  before, after = pattern.split(DATE_PLACEHOLDER)
  return re.compile(re.escape(before) + f"(?P<date>{_DATE})"
                    + re.escape(after) + r"/?$")


def list_windows(pattern: str) -> List[str]:
  """Every date the pattern matches, sorted (ISO dates sort by time).

  Args:
    pattern: a path with one `{date}`, e.g. `gs://b/ratings/{date}`.

  Returns:
    The dates found, oldest first.
  """
  regex = pattern_regex(pattern)
  dates = set()
  for path in tf.io.gfile.glob(pattern.replace(DATE_PLACEHOLDER, "*")):
    match = regex.search(path)
    if match:
      dates.add(match.group("date"))
  return sorted(dates)


def no_windows_message(pattern: str) -> str:
  """Why no window was found, and how a dated window folder is named.

  Args:
    pattern: the --data_pattern that matched nothing.

  Returns:
    One line: what the pattern looked for and an example path.
  """
  return (f"no data matches --data_pattern {pattern!r}: it looks for "
          f"{pattern.replace(DATE_PLACEHOLDER, '*')!r} where * is a date "
          f"(2024-01-07, 20240107 or 2024-01-07T06); put each window in "
          f"its own dated folder, e.g. "
          f"{pattern.replace(DATE_PLACEHOLDER, '2024-01-07')!r}")


def window_path(pattern: str, window: str) -> str:
  """The data path of one window.

  Args:
    pattern: a path with one `{date}`.
    window: the date.

  Returns:
    The pattern with the date filled in.

  Raises:
    RetrainError: the pattern has no `{date}` or the window is no date.
  """
  pattern_regex(pattern)
  if not re.fullmatch(_DATE, window):
    raise RetrainError(f"window {window!r} is not a date like 2024-01-07 or "
                       f"20240107")
  return pattern.replace(DATE_PLACEHOLDER, window)


def check_file_inputs(spec: spec_lib.FeatureSpec) -> None:
  """Refuses specs whose windows cannot be found as files.

  Raises:
    RetrainError: an input is read from BigQuery.
  """
  for name in spec.used_tables:
    if spec.inputs[name].is_bigquery:
      raise RetrainError(f"input '{name}' is read from BigQuery; retrain "
                         f"finds each window as files matching "
                         f"--data_pattern")


# --- one run ---------------------------------------------------------------
