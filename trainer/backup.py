"""Resume only what matches: a backup's fingerprint against the new run's.

A run that checkpoints for resume (ModelLayout.backup) first writes
ModelLayout.backup_fingerprint: the TrainerConfig fields that change what it
trains (TrainerConfig.training_fields), and content hashes of the
preprocessed data's run_report.json and feature_info.json and of the spec
file. A later run in the same model_dir resumes the backup only when its own
fingerprint is the same; otherwise it stops before building anything and
says what differs (a backup without a fingerprint differs from every run),
unless --restart discards the backup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf

from core import files
from core import layout
from trainer import config as config_lib


class BackupMismatchError(ValueError):
  """A backup made with other settings, data or spec than this run's."""


@dataclasses.dataclass(frozen=True)
class Resume:
  """The backup a run resumes from.

  Attributes:
    backup: the backup directory.
    step: the training step of its last checkpoint.
  """
  backup: str
  step: int

  def line(self, steps_per_epoch: int) -> str:
    """`resuming from the backup in DIR (epoch N)`: N is the epoch it
    continues in."""
    return (f"resuming from the backup in {self.backup} (epoch "
            f"{self.step // steps_per_epoch + 1})")


def _digest(path: str) -> Optional[str]:
  if not files.exists(path):
    return None
  return hashlib.sha256(files.read_bytes(path)).hexdigest()


def fingerprint(config: config_lib.TrainerConfig) -> Dict[str, Any]:
  """What a run trains, as its backup records it.

  Args:
    config: the run's configuration.

  Returns:
    {"config": training fields, "data": file -> sha256, "spec": sha256}.
  """
  data = layout.PreprocessedLayout(config.preprocessed_dir)
  return {
      "config": config.training_fields(),
      "data": {"run_report.json": _digest(data.report),
               "feature_info.json": _digest(data.feature_info)},
      "spec": _digest(config.spec_path),
  }


def _text(value: Any) -> str:
  if isinstance(value, list):
    return ",".join(_text(item) for item in value) or "none"
  return "unset" if value is None else str(value)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
  """What differs between two fingerprints, for people.

  Args:
    old: the backup's fingerprint.
    new: this run's.

  Returns:
    `field old -> new` per differing setting, then the data and the spec
    when their content differs.
  """
  result = []
  old_config, new_config = old.get("config", {}), new["config"]
  for name in new_config:
    if name not in old_config:
      result.append(f"{name} (not recorded) -> {_text(new_config[name])}")
    elif old_config[name] != new_config[name]:
      result.append(f"{name} {_text(old_config[name])} -> "
                    f"{_text(new_config[name])}")
  if old.get("data") != new["data"]:
    result.append("the preprocessed data (its run_report.json or "
                  "feature_info.json)")
  if old.get("spec") != new["spec"]:
    result.append("the spec file's content")
  return result


_ITERATIONS = re.compile(r"optimizer/_?iter(ations)?/\.ATTRIBUTES/"
                         r"VARIABLE_VALUE$")


def _last_checkpoint(backup: str) -> Optional[str]:
  """The newest checkpoint a killed run left (parameter-server step
  checkpoints in the backup itself, BackupAndRestore's in its chief/)."""
  for directory in (backup, layout.join(backup, "chief")):
    if files.isdir(directory):
      path = tf.train.latest_checkpoint(directory)
      if path:
        return path
  return None


def _step(checkpoint: str) -> int:
  for name, _ in tf.train.list_variables(checkpoint):
    if _ITERATIONS.search(name):
      return int(tf.train.load_variable(checkpoint, name))
  return 0


def prepare(config: config_lib.TrainerConfig, writes: bool = True
           ) -> Optional[Resume]:
  """Decides whether a run resumes the backup in its model_dir.

  A backup without a checkpoint (a run killed before its first one) or one
  --restart discards is removed; the run then starts from scratch.

  Args:
    config: the run's configuration.
    writes: this process writes the run's files (the chief of several
      workers): only it removes a backup.

  Returns:
    The Resume when a backup made with the same fingerprint is there, else
    None.

  Raises:
    BackupMismatchError: the backup was made with other settings, data or
      spec, or records none (the message names them and --restart).
  """
  out = layout.ModelLayout(config.model_dir)
  checkpoint = None if config.restart else _last_checkpoint(out.backup)
  if checkpoint is None:
    if writes:
      files.remove_tree(out.backup)
    return None
  recorded = files.read_json(out.backup_fingerprint)
  advice = "pass --restart to discard it and start over"
  if recorded is None:
    raise BackupMismatchError(
        f"{out.backup} is a killed run whose settings were not recorded (no "
        f"{layout.split(out.backup_fingerprint)[1]}); {advice}")
  changed = differences(recorded, fingerprint(config))
  if changed:
    raise BackupMismatchError(
        f"{out.backup} is a killed run with other settings "
        f"({', '.join(changed)}); {advice}")
  return Resume(backup=out.backup, step=_step(checkpoint))


def record(config: config_lib.TrainerConfig) -> None:
  """Writes the run's fingerprint into its backup (before any checkpoint).

  Args:
    config: the run's configuration.
  """
  files.write_json_atomic(layout.ModelLayout(config.model_dir)
                          .backup_fingerprint, fingerprint(config))
