"""Atomic job outputs: staged in a sibling directory, accepted by _SUCCESS.

A job writes everything into a staging directory next to its final output
(`<parent>/.<name>.staging-<run id>`), writes `_SUCCESS` last, and only then
moves the staging directory to the final path. On a local filesystem the
move is one `rename` of the directory; on object stores (gs://, s3://) the
files are renamed one by one with `_SUCCESS` moved last, so a reader that
checks `_SUCCESS` first never sees a partial output. A run that fails or is
killed leaves at most a staging directory, which no consumer accepts.
"""

import json
import os
import posixpath
import shutil
import time
import uuid
from typing import Any, Mapping, Optional

import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

SUCCESS_FILE = "_SUCCESS"
_STAGING_INFIX = ".staging-"


class UnfinishedOutputError(FileNotFoundError):
  """A directory is missing, or holds no _SUCCESS marker of a finished run."""


def is_local(path: str) -> bool:
  """True for plain local paths (no `scheme://` prefix)."""
  return "://" not in path


def _join(base: str, *parts: str) -> str:
  return os.path.join(base, *parts) if is_local(base) else posixpath.join(
      base, *parts)


def _split(path: str):
  path = path.rstrip("/")
  if is_local(path):
    path = os.path.abspath(path)
    return os.path.dirname(path), os.path.basename(path)
  return posixpath.dirname(path), posixpath.basename(path)


def new_staging_dir(output: str, run_id: Optional[str] = None) -> str:
  """Creates and returns a fresh staging directory beside `output`.

  Args:
    output: the final output directory (it may exist from an earlier run).
    run_id: a unique id for this run; random when omitted.

  Returns:
    The staging directory path (a hidden sibling of `output`).
  """
  parent, name = _split(output)
  run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
  staging = _join(parent, f".{name}{_STAGING_INFIX}{run_id}")
  tf.io.gfile.makedirs(staging)
  return staging


def require_finished_output(path: str) -> str:
  """Checks that `path` is the complete output of a finished run.

  Args:
    path: an output directory of `embeddings preprocess` (or any job that
      uses this module).

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
  if not tf.io.gfile.exists(_join(path, SUCCESS_FILE)):
    raise UnfinishedOutputError(
        f"{path!r} has no {SUCCESS_FILE} marker: the run that wrote it did "
        f"not finish (it failed, was killed, or is still running); rerun it")
  return path


def _write_success(staging: str, summary: Mapping[str, Any]) -> None:
  with tf.io.gfile.GFile(_join(staging, SUCCESS_FILE), "w") as handle:
    handle.write(json.dumps(summary, sort_keys=True) + "\n")


def _commit_local(staging: str, output: str) -> None:
  output = os.path.abspath(output.rstrip("/"))
  previous = None
  if os.path.lexists(output):
    # Move the old output aside first: os.rename cannot replace a non-empty
    # directory, and readers must never see a mix of two runs.
    previous = f"{staging}.previous"
    os.rename(output, previous)
  os.rename(staging, output)
  if previous is not None:
    shutil.rmtree(previous, ignore_errors=True)


def _commit_remote(staging: str, output: str) -> None:
  marker = _join(output, SUCCESS_FILE)
  if tf.io.gfile.exists(marker):
    tf.io.gfile.remove(marker)
  if tf.io.gfile.isdir(output):
    tf.io.gfile.rmtree(output)
  sources = [m.path for m in FileSystems.match([_join(staging, "**")])[0]
             .metadata_list]
  success = _join(staging, SUCCESS_FILE)
  files = [s for s in sources if s != success]
  targets = [_join(output, s[len(staging):].lstrip("/")) for s in files]
  for target in targets:
    tf.io.gfile.makedirs(posixpath.dirname(target))
  if files:
    FileSystems.rename(files, targets)
  FileSystems.rename([success], [marker])
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
  _write_success(staging, dict(summary or {}))
  if per_file is None:
    per_file = not is_local(output)
  if per_file:
    _commit_remote(staging, output)
  else:
    _commit_local(staging, output)
  return output


def discard(staging: str) -> None:
  """Deletes a staging directory after a failed run (best effort).

  Args:
    staging: from new_staging_dir.
  """
  try:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
  except (OSError, tf.errors.OpError):
    pass
