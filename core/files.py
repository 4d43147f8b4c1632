"""Paths and small files on any filesystem TensorFlow's gfile knows.

Local paths, gs:// and the other schemes go through `tf.io.gfile`, so every
job reads and writes them the same way. Paths with a scheme are joined with
"/" (object stores have no other separator), local ones with os.path.
"""

import json
import os
import posixpath
from typing import Any, Mapping, Optional

import tensorflow as tf


def is_local(path: str) -> bool:
  """True for plain local paths (no `scheme://` prefix)."""
  return "://" not in path


def join(base: str, *parts: str) -> str:
  """Joins path parts the way `base`'s filesystem spells paths.

  Args:
    base: a local path or a URL such as gs://bucket/dir.
    *parts: names to append.

  Returns:
    The joined path.
  """
  if is_local(base):
    return os.path.join(base, *parts)
  return posixpath.join(base, *parts)


def split(path: str):
  """(parent, name) of a path; local paths are made absolute first."""
  path = path.rstrip("/")
  if is_local(path):
    path = os.path.abspath(path)
    return os.path.dirname(path), os.path.basename(path)
  return posixpath.dirname(path), posixpath.basename(path)


def read_text(path: str) -> str:
  """The content of a text file (UTF-8)."""
  with tf.io.gfile.GFile(path) as handle:
    return handle.read()


def write_text(path: str, text: str) -> None:
  """Writes a text file, creating its directory."""
  parent = split(path)[0]
  if parent and not tf.io.gfile.exists(parent):
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(path, "w") as handle:
    handle.write(text)


def read_json(path: str) -> Optional[Any]:
  """A JSON file's content, or None when the file does not exist."""
  if not tf.io.gfile.exists(path):
    return None
  return json.loads(read_text(path))


def write_json(path: str, payload: Any, indent: Optional[int] = 2) -> None:
  """Writes `payload` as JSON (values JSON cannot hold as their str())."""
  write_text(path, json.dumps(payload, indent=indent, default=str) + "\n")


def write_json_atomic(path: str, payload: Mapping[str, Any]) -> None:
  """Replaces a JSON file so readers see the old or the new content, never a mix.

  Locally: a temporary file in the same directory, then rename (atomic on
  POSIX). On object stores (gs://, s3://) a single object write already is
  atomic for readers.

  Args:
    path: the file.
    payload: what it holds.
  """
  text = json.dumps(payload, indent=2, sort_keys=True, default=str)
  if not is_local(path):
    write_text(path, text)
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
  with open(temp, "w", encoding="utf-8") as handle:
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())
  os.replace(temp, path)


def remove_tree(path: str) -> None:
  """Deletes a file or directory tree when it exists."""
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)
