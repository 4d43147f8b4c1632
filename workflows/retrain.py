"""`embeddings retrain` and `embeddings rollback`: scheduled retraining.

    embeddings retrain --spec configs/synthetic.yaml \\
        --data_pattern 'data/{date}' --root registry [--window 2024-01-07] \\
        [--tolerance 0.01] [--keep 5] [--train_args '--epochs 3'] \\
        [--preprocess_args '--preset dataflow --project ...']
    embeddings rollback --root registry

Each window is a dated folder: --data_pattern 'data/{date}' finds
data/2024-01-07, data/20240108, data/2024-01-09T06 (workflows/windows.py).
A run ends with one line: the window, the versions compared, promoted or
not, and where the model or the run's report is; --verbose adds the drift
and warm start numbers.

One run handles one data window (the newest date the pattern matches, or
--window):

  1. preprocess the window (pipelines/preprocess.py, the spec variable
     --data_env set to the window's path), writing the eval split's raw
     rows too (`raw_eval`);
  2. warm-start from the current model: its tables are mapped to the new
     vocabularies by token (trainer/warmstart.py), so kept users and movies
     keep their vectors and new ones get rows, at the current model's
     dimensions (--freeze_carried_rows: the kept rows stay frozen and only
     the new rows train);
  3. train (trainer/task.py);
  4. evaluate the candidate and the current model on the same held-out
     rows: the window's raw eval rows as the preprocessing job wrote them,
     sent through each model's own serving signature (raw tf.Examples ->
     its transform graph -> model), so each model sees the rows through its
     own vocabulary. Rows either model trained on (same user and item ids
     as a row of its train split) are left out (workflows/gate.py says
     when an earlier window's train split holds them);
  5. promote the candidate only if its metric is not worse than the current
     one's by more than --tolerance (a negative tolerance demands an
     improvement); the `current` pointer changes atomically;
  6. report drift between the current and the candidate embeddings
     (workflows/drift.py).

The registry (--root) is workflows/registry.py's. A window whose marker
says promoted or rejected is not retrained (idempotent); a failed one is
retried, reusing its finished preprocessing output. Any failure leaves
`current` untouched and marks the run failed with its reason. The last
--keep promoted versions are kept; rejected candidates are deleted once
their metrics are in the marker.
"""

import dataclasses
import logging
import os
import socket
import sys
import time
import traceback
from typing import Any, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from core import files
from core import flags
from core import layout
from core import outputs
from pipelines import preprocess as preprocess_lib
from trainer import config as config_lib
from trainer import export
from trainer import metrics as metrics_lib
from trainer import models
from trainer import task
from trainer import warmstart
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib
from workflows import drift as drift_lib
from workflows import gate as gate_lib
from workflows import registry as registry_lib
from workflows import retrain_options
from workflows import windows
from workflows.registry import Registry, RetrainError
from workflows.retrain_options import RetrainOptions


@dataclasses.dataclass
class RetrainResult:
  """What a run did.

  Attributes:
    window: the data window.
    status: promoted, rejected, failed, or skipped (already done).
    version: the candidate version (the window), if one was trained.
    reason: the gate's verdict, the failure, or why it was skipped.
    report: the run's full report (also in runs/<window>.json).
  """
  window: str
  status: str
  version: Optional[str]
  reason: str
  report: Dict[str, Any]


class _Attempt:
  """One attempt at a window: its stages, each recorded in the report."""

  def __init__(self, options: RetrainOptions, registry: Registry,
               window: str, data_path: str, report: Dict[str, Any]):
    self.options = options
    self.registry = registry
    self.version = window
    self.data_path = data_path
    self.report = report
    self.stage = "start"
    self.env = dict(options.env, **{options.data_env: data_path})
    self.current = registry.current_version()
    self.spec = None
    self.preprocessed = registry.preprocessed_dir(window)
    self.result = None

  def preprocess(self) -> None:
    """Preprocesses the window, or reuses a failed attempt's finished output."""
    if not tf.io.gfile.exists(self.data_path):
      raise RetrainError(f"no data for window {self.version}: "
                         f"{self.data_path!r} does not exist")
    self.report["current"] = self.current
    self.stage = "preprocess"
    self.spec = loader.load_spec(self.options.spec_path, self.env)
    windows.check_file_inputs(self.spec)
    reused = outputs.is_finished(self.preprocessed)
    self.report["preprocess_reused"] = reused
    if not reused:
      preprocess_lib.preprocess(preprocess_lib.PreprocessOptions(
          spec=self.options.spec_path, output=self.preprocessed,
          env=tuple(self.env.items()), raw_eval=True),
          self.options.preprocess_args)

  def _config(self) -> config_lib.TrainerConfig:
    args, unknown = task.flag_parser().parse_known_args(
        ["--spec", self.options.spec_path, "--preprocessed", self.preprocessed,
         "--model_dir", self.registry.model_dir(self.version)]
        + [flag for pair in self.env.items()
           for flag in ("--env", "=".join(pair))]
        + list(self.options.train_args))
    if unknown:
      raise RetrainError(f"--train_args: unknown trainer flags {unknown}")
    config = task.config_from_args(args)
    given = config_lib.values_from_args(args)
    pinned = {}
    if self.current is not None and not {"embedding_dims", "mf_dim"} & set(
        given):
      # The fourth-root rule would resize a table whose vocabulary grew past
      # a rounding step; a warm start keeps the current model's dimensions.
      pinned = export.read_trained_model(self.registry.model_dir(
          self.current)).report.get("embedding_dims") or {}
      config = config.with_table_dims(pinned)
    self.report["warm_start"] = {"from": None, "tables": {}}
    if self.current is not None:
      self.report["warm_start"]["embedding_dims"] = pinned
    return config

  def _warm_start(self, config: config_lib.TrainerConfig):
    infos = feature_info_lib.read_feature_info(self.preprocessed)
    names = [name for name in models.model_features(config, self.spec)
             if infos[name].size]
    table_dims = config.table_dims(infos, names)
    targets = {name: dataclasses.replace(
        target, dimension=table_dims.get(name, target.dimension))
               for name, target in warmstart.target_tables(
                   self.preprocessed, self.spec).items()}
    tables = warmstart.warm_start_tables(
        self.registry.model_dir(self.current), targets, spec=self.spec,
        old_preprocessed=self.registry.preprocessed_dir(self.current),
        new_rows=self.options.new_rows, seed=config.seed,
        freeze_carried=self.options.freeze_carried_rows)
    self.report["warm_start"].update(
        {"from": self.current,
         "tables": {name: report.as_dict()
                    for name, report in tables.reports.items()},
         "trainable": (spec_lib.NEW_ROWS if self.options.freeze_carried_rows
                       else True)})
    return tables

  def train(self) -> None:
    """Trains the candidate, warm-started from the current model."""
    self.stage = "train"
    # A failed attempt may have left checkpoints; the warm start below is the
    # starting point, not a half-trained candidate.
    files.remove_tree(self.registry.model_dir(self.version))
    config = self._config()
    pretrained = (self._warm_start(config) if self.current is not None
                  else None)
    self.result = task.train(config, self.spec, pretrained=pretrained)
    self.report["train"] = {key: self.result.report.get(key) for key in (
        "metrics", "steps", "epochs", "train_examples", "examples_per_sec",
        "wall_time_s", "embedding_dims")}

  def _holdout(self, config: Dict[str, Any]) -> Tuple[Any, Any]:
    """The window's held-out rows that neither model trained on."""
    examples, labels = gate_lib.holdout_examples(
        self.preprocessed, self.spec, self.options.holdout_max_rows)
    features = [config[key] for key in ("user_feature", "item_feature")
                if config.get(key)]
    if not features:
      raise RetrainError("the gate needs the model's user_feature or "
                         "item_feature to know which held-out rows a model "
                         "trained on; set them in the spec's model section")
    trained_on = [self.preprocessed]
    if self.current is not None:
      trained_on.append(self.registry.preprocessed_dir(self.current))
    unseen = gate_lib.unseen_rows(examples, self.spec, trained_on, features)
    self.report["evaluation"] = {
        "holdout_rows": int(unseen.sum()),
        "holdout_rows_trained_on": int((~unseen).sum()),
        "holdout_key": features}
    if not unseen.any():
      raise RetrainError(f"every one of the window's {len(labels)} held-out "
                         f"rows is in a model's training data ({features})")
    return examples[unseen], labels[unseen]

  def evaluate(self) -> Tuple[bool, str]:
    """Scores candidate and current on the same unseen rows; the verdict."""
    self.stage = "evaluate"
    task_name = self.result.report["task"]
    metric = self.options.metric or metrics_lib.default_metric(task_name)
    examples, labels = self._holdout(self.result.report.get("config") or {})
    candidate = metrics_lib.evaluate_raw(self.result.report["export_dir"],
                                         examples, labels, task_name)
    current = None
    if self.current is not None:
      current = metrics_lib.evaluate_raw(
          export.read_trained_model(self.registry.model_dir(
              self.current)).saved_model_dir, examples, labels, task_name)
    self.report["evaluation"].update({
        "metric": metric, "candidate": candidate, "current": current,
        "tolerance": self.options.tolerance})
    return gate_lib.gate(metric, candidate[metric],
                         current[metric] if current else None,
                         self.options.tolerance)

  def drift(self) -> None:
    """Compares the item embeddings of the current and the candidate model."""
    self.stage = "drift"
    if self.current is None:
      return
    feature = (self.result.report.get("config") or {}).get("item_feature")
    if feature is None:
      raise RetrainError("drift: the model has no item_feature (set it in "
                         "the spec's model section)")
    old = export.model_dir_tables(
        self.registry.model_dir(self.current),
        self.registry.preprocessed_dir(self.current), self.spec,
        with_labels=False)
    new = export.model_dir_tables(self.registry.model_dir(self.version),
                                  self.preprocessed, self.spec,
                                  with_labels=False)
    self.report["drift"] = drift_lib.drift_report(
        old[feature], new[feature], self.options.drift_items,
        self.options.drift_k)

  def decide(self, promote: bool, verdict: str) -> str:
    """Promotes or rejects the candidate; returns the final status."""
    self.stage = "promote"
    self.report["reason"] = verdict
    if promote:
      self.registry.write_version_report(
          self.version, dict(self.report, status=registry_lib.PROMOTED))
      self.report["pruned"] = self.registry.promote(self.version,
                                                    self.options.keep)
      return registry_lib.PROMOTED
    self.registry.remove_version(self.version)
    return registry_lib.REJECTED


def _start_report(options: RetrainOptions, registry: Registry, window: str,
                  data_path: str) -> Dict[str, Any]:
  previous = registry.read_marker(window) or {}
  return {
      "window": window, "version": window, "status": registry_lib.RUNNING,
      "started": registry_lib.now(), "pid": os.getpid(),
      "host": socket.gethostname(), "data": data_path,
      "options": dataclasses.asdict(options),
      "attempt": previous.get("attempt", 0) + 1}


def retrain(options: RetrainOptions) -> RetrainResult:
  """Runs one retraining window end to end (see the module docstring).

  Args:
    options: the run's options.

  Returns:
    The RetrainResult. A failure does not raise: it is recorded in the
    window's marker (status failed, with the reason) and returned, and
    `current` is left as it was.

  Raises:
    RetrainError: no window to train, or the window is being trained by
      another live process.
  """
  registry = Registry(options.root)
  window = options.window
  if window is None:
    found = windows.list_windows(options.data_pattern)
    if not found:
      raise RetrainError(windows.no_windows_message(options.data_pattern))
    window = found[-1]
  data_path = windows.window_path(options.data_pattern, window)
  claimed = registry.claim(window)
  if claimed is not None:
    marker, reason = claimed
    return RetrainResult(window, registry_lib.SKIPPED, marker.get("version"),
                         reason, marker)
  report = _start_report(options, registry, window, data_path)
  registry.write_marker(window, report)
  attempt = _Attempt(options, registry, window, data_path, report)
  started = time.perf_counter()
  try:
    attempt.preprocess()
    attempt.train()
    promote, verdict = attempt.evaluate()
    attempt.drift()
    report["wall_time_s"] = round(time.perf_counter() - started, 3)
    status = attempt.decide(promote, verdict)
    report.update(status=status, finished=registry_lib.now())
    registry.write_marker(window, report)
    return RetrainResult(window, status, window, verdict, report)
  except Exception as error:  # Every failure is recorded, then reported.
    reason = f"{attempt.stage}: {type(error).__name__}: {error}"
    report.update(status=registry_lib.FAILED, reason=reason,
                  stage=attempt.stage,
                  finished=registry_lib.now(),
                  traceback=traceback.format_exc(limit=8))
    registry.write_marker(window, report)
    if registry.current_version() != window:
      # Keep a finished preprocessing output for the retry; drop the rest.
      files.remove_tree(registry.model_dir(window))
    return RetrainResult(window, registry_lib.FAILED, window, reason, report)


def options_from_args(argv: Sequence[str]) -> RetrainOptions:
  """Parses `embeddings retrain` flags into RetrainOptions.

  Args:
    argv: the flags.

  Returns:
    The options.

  Raises:
    RetrainError: a flag value cannot be used.
  """
  args = retrain_options.flag_parser().parse_args(list(argv))
  try:
    options = RetrainOptions(**flags.values_from_args(RetrainOptions, args))
  except ValueError as error:
    raise RetrainError(str(error)) from None
  if options.keep < 1:
    raise RetrainError(f"--keep must be >= 1, got {options.keep}")
  windows.pattern_regex(options.data_pattern)
  return options


def _summary(result: RetrainResult, root: str) -> str:
  """The run's one line: window, versions compared, verdict, where."""
  report = result.report
  compared = (f"candidate {result.version} vs current {report['current']}"
              if report.get("current") else f"candidate {result.version}")
  where = f"report {layout.RegistryLayout(root).marker(result.window)}"
  if result.status == registry_lib.SKIPPED:
    compared = "nothing retrained"
  elif result.status == registry_lib.PROMOTED:
    where = f"model {layout.RegistryLayout(root).version(result.version)}"
  return (f"embeddings retrain: window {result.window}: {compared}: "
          f"{result.status} ({result.reason}); {where}")


def _log_details(report: Dict[str, Any]) -> None:
  """What --verbose adds: drift and per-table warm start counts."""
  drift = report.get("drift")
  if drift:
    logging.info("drift (%s, top %d items): neighbour overlap@%d %.3f, "
                 "Spearman %.3f", drift["feature"], drift["items"],
                 drift["k"], drift["neighbor_overlap_mean"],
                 drift["spearman_mean"])
  for name, table in (report.get("warm_start") or {}).get("tables",
                                                           {}).items():
    logging.info("warm start %s: kept %d, new %d, dropped %d", name,
                 table["kept"], table["new"], table["dropped"])


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings retrain`.

  Args:
    argv: the flags (default: sys.argv[1:]).

  Returns:
    0 when the window was promoted, rejected or already done; 1 when the
    run failed (the marker holds the reason).
  """
  try:
    options = options_from_args(sys.argv[1:] if argv is None else argv)
    result = retrain(options)
  except (RetrainError, spec_lib.SpecError) as error:
    print(f"embeddings retrain: error: {error}", file=sys.stderr)
    return 1
  _log_details(result.report)
  print(_summary(result, options.root), flush=True)
  return 1 if result.status == registry_lib.FAILED else 0


def rollback(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings rollback`.

  Args:
    argv: `--root DIR` (default: sys.argv[1:]).

  Returns:
    0 on success, 1 when there is nothing to roll back to.
  """
  args = retrain_options.rollback_parser().parse_args(
      sys.argv[1:] if argv is None else argv)
  try:
    left, target = registry_lib.rollback(args.root)
  except RetrainError as error:
    print(f"embeddings rollback: error: {error}", file=sys.stderr)
    return 1
  print(f"embeddings rollback: current is now {target} (was {left})")
  return 0


if __name__ == "__main__":
  sys.exit(run())
