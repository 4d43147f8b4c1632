"""The model registry that scheduled retraining promotes into.

Under its root (core/layout.RegistryLayout):

  current                 {"version": V, "history": [..., V]} (the pointer)
  versions/<window>/      preprocessed/, model/, retrain.json
  runs/<window>.json      the window's marker: running, promoted, rejected
                          or failed (with the reason)

The pointer and the markers are replaced atomically, so a reader sees the
old or the new state, never a mix; `rollback` moves the pointer back one
promoted version.
"""

import dataclasses
import datetime
import os
import socket
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from core import files
from core import layout

RUNNING = "running"
PROMOTED = "promoted"
REJECTED = "rejected"
FAILED = "failed"
SKIPPED = "skipped"
DONE_STATES = (PROMOTED, REJECTED)


class RetrainError(RuntimeError):
  """A retraining run that cannot go on; the message says why."""


def now() -> str:
  """The current UTC time, ISO 8601 to the second."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Registry:
  """A model registry rooted at `root` (see the module docstring)."""
  root: str

  @property
  def layout(self) -> layout.RegistryLayout:
    return layout.RegistryLayout(self.root)

  def version_dir(self, version: str) -> str:
    return self.layout.version(version)

  def preprocessed_dir(self, version: str) -> str:
    return self.layout.preprocessed(version).root

  def model_dir(self, version: str) -> str:
    return self.layout.model(version).root

  def read_current(self) -> Optional[Dict[str, Any]]:
    """The pointer: {"version": V, "history": [...]}, or None."""
    return files.read_json(self.layout.current)

  def current_version(self) -> Optional[str]:
    """The current version's name, or None before the first promotion."""
    pointer = self.read_current()
    return pointer["version"] if pointer else None

  def set_current(self, version: str, history: Sequence[str]) -> None:
    """Points `current` at `version` with the kept promotion history."""
    files.write_json_atomic(self.layout.current, {
        "version": version, "history": list(history), "updated": now()})

  def read_marker(self, window: str) -> Optional[Dict[str, Any]]:
    """A window's marker, or None when it never ran."""
    return files.read_json(self.layout.marker(window))

  def write_marker(self, window: str, payload: Mapping[str, Any]) -> None:
    files.write_json_atomic(self.layout.marker(window), payload)

  def write_version_report(self, version: str,
                           payload: Mapping[str, Any]) -> None:
    """The report kept beside a promoted version."""
    files.write_json_atomic(self.layout.version_report(version), payload)

  def remove_version(self, version: str) -> None:
    files.remove_tree(self.version_dir(version))

  def prune(self, history: Sequence[str]) -> List[str]:
    """Deletes finished versions that fell out of the kept history.

    Args:
      history: the versions to keep.

    Returns:
      The versions deleted, sorted.
    """
    if not tf.io.gfile.isdir(self.layout.versions):
      return []
    removed = []
    for name in sorted(tf.io.gfile.listdir(self.layout.versions)):
      name = name.rstrip("/")
      marker = self.read_marker(name) or {}
      if name not in history and marker.get("status") in DONE_STATES:
        self.remove_version(name)
        removed.append(name)
    return removed

  def promote(self, version: str, keep: int) -> List[str]:
    """Makes `version` current, keeps the last `keep` promotions.

    Returns:
      The versions pruned because they fell out of the kept history.
    """
    pointer = self.read_current() or {"history": []}
    history = [v for v in pointer["history"] if v != version] + [version]
    history = history[-keep:]
    self.set_current(version, history)
    return self.prune(history)

  def claim(self, window: str) -> Optional[Tuple[Dict[str, Any], str]]:
    """Checks whether `window` needs a run.

    Args:
      window: the data window.

    Returns:
      None when the window may run (never ran, failed, or a run died before
      promoting); else (its marker, why there is no work): it is already
      promoted or rejected, or a run died right after promoting it (the
      marker is then recorded as promoted).

    Raises:
      RetrainError: a live process on this host is running the window.
    """
    marker = self.read_marker(window)
    if marker is None:
      return None
    status = marker.get("status")
    if status in DONE_STATES:
      return marker, f"window {window} is already {status}"
    if status == RUNNING:
      if (marker.get("host") == socket.gethostname()
          and _pid_alive(int(marker.get("pid", -1)))
          and int(marker["pid"]) != os.getpid()):
        raise RetrainError(f"window {window} is being retrained by process "
                           f"{marker['pid']} on this host")
      pointer = self.read_current() or {}
      if pointer.get("version") == window:
        # The earlier run died after switching `current`: it had promoted.
        recovered = dict(marker, status=PROMOTED, finished=now(),
                         reason="recovered: `current` already points here")
        self.write_marker(window, recovered)
        return recovered, recovered["reason"]
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def rollback(root: str) -> Tuple[str, str]:
  """Points `current` back to the previously promoted version.

  Args:
    root: the registry root.

  Returns:
    (the version rolled back from, the version now current).

  Raises:
    RetrainError: there is no earlier version to go back to.
  """
  registry = Registry(root)
  pointer = registry.read_current()
  if not pointer:
    raise RetrainError(f"{root!r} has no current model")
  history = list(pointer.get("history", []))
  if len(history) < 2:
    raise RetrainError(f"{root!r}: nothing to roll back to (only "
                       f"{pointer['version']!r} was kept)")
  left, target = history[-1], history[-2]
  registry.set_current(target, history[:-1])
  marker = registry.read_marker(left)
  if marker is not None:
    registry.write_marker(left, dict(marker, rolled_back=now()))
  return left, target
