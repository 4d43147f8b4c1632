"""Small files on any filesystem TensorFlow's gfile knows.

Local paths, gs:// and the other schemes go through `tf.io.gfile`, so every
job reads and writes them the same way (paths are spelled by core/layout).
"""

import json
import os
from typing import Any, Mapping, Optional

import tensorflow as tf

from core import layout


def read_text(path: str) -> str:
  """The content of a text file (UTF-8)."""
  with tf.io.gfile.GFile(path) as handle:
    return handle.read()


def write_text(path: str, text: str) -> None:
  """Writes a text file, creating its directory."""
  parent = layout.split(path)[0]
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
  """Replaces a JSON file: readers see the old or the new content, never a mix.

  Locally: a temporary file in the same directory, then rename (atomic on
  POSIX). On object stores (gs://, s3://) a single object write already is
  atomic for readers.

  Args:
    path: the file.
    payload: what it holds.
  """
  text = json.dumps(payload, indent=2, sort_keys=True, default=str)
  if not layout.is_local(path):
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
