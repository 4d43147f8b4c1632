"""Small files on the local disk or any filesystem TensorFlow's gfile knows.

Local paths go through the standard library; gs:// and the other schemes go
through `tf.io.gfile`, imported on first use by `tensorflow()`. So every job
reads and writes all of them the same way (paths are spelled by
core/layout), and a command that only reads local files, such as
`embeddings neighbors`, never pays for importing TensorFlow.
"""

import glob as glob_lib
import json
import os
import shutil
from typing import IO, Any, List, Mapping, Optional

from core import layout


def tensorflow():
  """The tensorflow module, imported on first use.

  Importing TensorFlow takes seconds; read-only commands (neighbors,
  recommend, cluster, projector) start without it, and only writing a TF
  checkpoint or a path with a scheme (gs://, s3://) needs it.

  Returns:
    The `tensorflow` module.
  """
  # pylint: disable-next=g-import-not-at-top
  import tensorflow as tf
  return tf


def exists(path: str) -> bool:
  """Whether a file or directory exists."""
  if layout.is_local(path):
    return os.path.exists(path)
  return tensorflow().io.gfile.exists(path)


def isdir(path: str) -> bool:
  """Whether `path` is a directory."""
  if layout.is_local(path):
    return os.path.isdir(path)
  return tensorflow().io.gfile.isdir(path)


def listdir(path: str) -> List[str]:
  """The entry names of a directory (without trailing slashes), sorted."""
  if layout.is_local(path):
    return sorted(os.listdir(path))
  return sorted(entry.rstrip("/")
                for entry in tensorflow().io.gfile.listdir(path))


def glob(pattern: str) -> List[str]:
  """The paths matching a glob pattern, sorted."""
  if layout.is_local(pattern):
    return sorted(glob_lib.glob(pattern))
  return sorted(tensorflow().io.gfile.glob(pattern))


def makedirs(path: str) -> None:
  """Creates a directory and its parents (no error when it exists)."""
  if layout.is_local(path):
    os.makedirs(path, exist_ok=True)
  else:
    tensorflow().io.gfile.makedirs(path)


def read_bytes(path: str) -> bytes:
  """The content of a file."""
  if layout.is_local(path):
    with open(path, "rb") as handle:
      return handle.read()
  with tensorflow().io.gfile.GFile(path, "rb") as handle:
    return handle.read()


def write_bytes(path: str, data: bytes) -> None:
  """Writes a file, creating its directory."""
  parent = layout.split(path)[0]
  if parent:
    makedirs(parent)
  if layout.is_local(path):
    with open(path, "wb") as handle:
      handle.write(data)
  else:
    with tensorflow().io.gfile.GFile(path, "wb") as handle:
      handle.write(data)


def open_text(path: str) -> IO[str]:
  """A file opened for reading text (UTF-8), line by line; close it after.

  Args:
    path: the file.

  Returns:
    A file object (a context manager), for files too big to read at once.
  """
  if layout.is_local(path):
    return open(path, encoding="utf-8", newline="")
  return tensorflow().io.gfile.GFile(path, "r")


def read_text(path: str) -> str:
  """The content of a text file (UTF-8)."""
  return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
  """Writes a text file (UTF-8), creating its directory."""
  write_bytes(path, text.encode("utf-8"))


def read_json(path: str) -> Optional[Any]:
  """A JSON file's content, or None when the file does not exist."""
  if not exists(path):
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
  if layout.is_local(path):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)
    return
  gfile = tensorflow().io.gfile
  if gfile.isdir(path):
    gfile.rmtree(path)
  elif gfile.exists(path):
    gfile.remove(path)
