"""Atomic job outputs: staged in a sibling directory, accepted by _SUCCESS.

A job writes everything into a staging directory next to its final output
(`<parent>/.<name>.staging-<run id>`), writes `_SUCCESS` last, and only then
moves the staging directory to the final path. On a local filesystem the
move is one `rename` of the directory; on object stores (gs://, s3://) the
files are renamed one by one with `_SUCCESS` moved last, so a reader that
checks `_SUCCESS` first never sees a partial output. A run that fails or is
killed leaves at most a staging directory, which no consumer accepts and
the next run to the same output removes (`remove_stale_staging`), as it
removes the temporary folders Beam's file sinks leave behind
(`remove_beam_temp`).
"""

import json
import os
import re
import shutil
import time
import uuid
from typing import Any, List, Mapping, Optional

import tensorflow as tf

from core import files
from core import layout

STAGING_INFIX = ".staging-"
# A run id has no dot, so `.<name>.staging-<id>` never matches the staging
# folder of another output whose name starts with `<name>.staging-`.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")
# What _commit_local appends to a staging folder while it swaps outputs.
_PREVIOUS_SUFFIX = ".previous"
# Beam's file sinks write into `beam-temp-<prefix>-<uuid>` beside the files.
BEAM_TEMP_PREFIX = "beam-temp-"


class UnfinishedOutputError(FileNotFoundError):
  """A directory is missing, or holds no _SUCCESS marker of a finished run."""


def new_staging_dir(output: str, run_id: Optional[str] = None) -> str:
  """Creates and returns a fresh staging directory beside `output`.

  Args:
    output: the final output directory (it may exist from an earlier run).
    run_id: a unique id for this run; random when omitted.

  Returns:
    The staging directory path (a hidden sibling of `output`).

  Raises:
    ValueError: run_id holds other than letters, digits, '-' and '_'.
  """
  parent, name = layout.split(output)
  run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
  if not _RUN_ID.match(run_id):
    raise ValueError(f"run id {run_id!r}: use letters, digits, '-' and '_'")
  staging = layout.join(parent, f".{name}{STAGING_INFIX}{run_id}")
  tf.io.gfile.makedirs(staging)
  return staging


def _is_staging_of(entry: str, name: str) -> bool:
  prefix = f".{name}{STAGING_INFIX}"
  if not entry.startswith(prefix):
    return False
  run_id = entry[len(prefix):]
  if run_id.endswith(_PREVIOUS_SUFFIX):
    run_id = run_id[:-len(_PREVIOUS_SUFFIX)]
  return bool(_RUN_ID.match(run_id))


def remove_stale_staging(output: str) -> List[str]:
  """Removes the staging folders earlier runs to `output` left behind.

  A killed or failed run leaves `<parent>/.<name>.staging-<run id>` (and,
  killed while committing, `....previous`); only those of `output` itself
  are removed, never another output's.

  Args:
    output: the final output directory of the run about to start.

  Returns:
    The removed folders, sorted.
  """
  parent, name = layout.split(output)
  if not files.isdir(parent):
    return []
  stale = [layout.join(parent, entry) for entry in files.listdir(parent)
           if _is_staging_of(entry, name)]
  for path in stale:
    files.remove_tree(path)
  return sorted(stale)


def remove_beam_temp(root: str) -> List[str]:
  """Removes the `beam-temp-*` folders anywhere under `root`.

  Beam's file sinks write into them and delete them when they finalize;
  a killed or retried run can leave them behind, and they are no part of
  an output.

  Args:
    root: a staging or output directory (missing is fine).

  Returns:
    The removed folders, sorted.
  """
  if not files.isdir(root):
    return []
  found = []
  for directory, subdirectories, _ in tf.io.gfile.walk(root):
    for entry in subdirectories:
      entry = entry.rstrip("/")
      if entry.startswith(BEAM_TEMP_PREFIX):
        found.append(layout.join(directory, entry))
  for path in found:
    files.remove_tree(path)
  return sorted(found)


def require_finished_output(path: str) -> str:
  """Checks that `path` is the complete output of a finished run.

  Args:
    path: an output directory of `embeddings preprocess` (or any job that
      commits through this module).

  Returns:
    `path`, unchanged, so callers can write `d = require_finished_output(d)`.

  Raises:
    UnfinishedOutputError: the directory does not exist or has no _SUCCESS
      marker (the run failed, was killed, or is still going).
  """
  if not tf.io.gfile.isdir(path):
    raise UnfinishedOutputError(
        f"{path!r} does not exist: run `embeddings preprocess --output "
        f"{path}` first")
  if not tf.io.gfile.exists(layout.join(path, layout.SUCCESS_FILE)):
    raise UnfinishedOutputError(
        f"{path!r} has no {layout.SUCCESS_FILE} marker: the run that wrote it "
        f"did not finish (it failed, was killed, or is still running); rerun "
        f"it")
  return path


def is_finished(path: str) -> bool:
  """Whether `path` holds a finished output (its _SUCCESS marker)."""
  return tf.io.gfile.exists(layout.join(path, layout.SUCCESS_FILE))


def _commit_local(staging: str, output: str) -> None:
  output = os.path.abspath(output.rstrip("/"))
  previous = None
  if os.path.lexists(output):
    # Move the old output aside first: os.rename cannot replace a non-empty
    # directory, and readers must never see a mix of two runs.
    previous = f"{staging}{_PREVIOUS_SUFFIX}"
    os.rename(output, previous)
  os.rename(staging, output)
  if previous is not None:
    shutil.rmtree(previous, ignore_errors=True)


def _commit_per_file(staging: str, output: str) -> None:
  marker = layout.join(output, layout.SUCCESS_FILE)
  if tf.io.gfile.exists(marker):
    tf.io.gfile.remove(marker)
  files.remove_tree(output)
  success = layout.join(staging, layout.SUCCESS_FILE)
  for directory, _, names in tf.io.gfile.walk(staging):
    relative = directory[len(staging):].lstrip("/")
    target_dir = layout.join(output, relative) if relative else output
    tf.io.gfile.makedirs(target_dir)
    for name in names:
      source = layout.join(directory, name)
      if source != success:
        tf.io.gfile.rename(source, layout.join(target_dir, name))
  tf.io.gfile.rename(success, marker)
  tf.io.gfile.rmtree(staging)


def commit(staging: str, output: str,
           summary: Optional[Mapping[str, Any]] = None,
           per_file: Optional[bool] = None) -> str:
  """Marks a staging directory finished and moves it to `output`.

  An earlier output at `output` is replaced.

  Args:
    staging: from new_staging_dir, holding every output file.
    output: the final directory.
    summary: small JSON-able facts written into _SUCCESS.
    per_file: move file by file with _SUCCESS last (what object stores
      need) instead of renaming the directory; default: per file exactly
      for non-local paths.

  Returns:
    `output`.
  """
  files.write_text(layout.join(staging, layout.SUCCESS_FILE),
                   json.dumps(dict(summary or {}), sort_keys=True) + "\n")
  if per_file is None:
    per_file = not layout.is_local(output)
  if per_file:
    _commit_per_file(staging, output)
  else:
    _commit_local(staging, output)
  return output


def discard(staging: str) -> None:
  """Deletes a staging directory after a failed run (best effort).

  Args:
    staging: from new_staging_dir.
  """
  try:
    files.remove_tree(staging)
  except (OSError, tf.errors.OpError):
    pass
