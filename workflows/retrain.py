"""`embeddings retrain` and `embeddings rollback`: scheduled retraining.

    embeddings retrain --spec configs/synthetic.yaml \\
        --data_pattern 'data/{date}' --root registry [--window 2024-01-07] \\
        [--tolerance 0.01] [--keep 5] [--train_args '--epochs 3'] \\
        [--preprocess_args '--preset dataflow --project ...']
    embeddings rollback --root registry

One run handles one data window (the newest date the pattern matches, or
--window):

  1. preprocess the window (`embeddings preprocess`, the spec variable
     --data_env set to the window's path);
  2. warm-start from the current model: its tables are mapped to the new
     vocabularies by token (trainer/warmstart.py), so kept users and movies
     keep their vectors and new ones get rows;
  3. train (`trainer.task.train`);
  4. evaluate the candidate and the current model on the same held-out rows:
     the window's eval split, read raw and sent through each model's own
     serving signature (raw tf.Examples -> its transform graph -> model), so
     each model sees the rows through its own vocabulary;
  5. promote the candidate only if its metric is not worse than the current
     one's by more than --tolerance (a negative tolerance demands an
     improvement); the `current` pointer changes atomically;
  6. report drift between the current and the candidate embeddings: for the
     most frequent items, the overlap of their 10 nearest neighbours and the
     Spearman rank correlation of their similarities.

The registry (--root):

  current                 {"version": V, "history": [..., V]} (the pointer)
  versions/<window>/      preprocessed/, model/, retrain.json
  runs/<window>.json      the window's marker: running, promoted, rejected
                          or failed (with the reason)

A window whose marker says promoted or rejected is not retrained
(idempotent); a failed one is retried, reusing its finished preprocessing
output. Any failure leaves `current` untouched and marks the run failed with
its reason. The last --keep promoted versions are kept; rejected candidates
are deleted once their metrics are in the marker.
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import socket
import sys
import time
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from scipy import stats
from tfx_bsl.coders import example_coder

from core import layout
from core import outputs
from pipelines import joins as joins_lib
from pipelines import preprocess
from pipelines import rows as rows_lib
from pipelines import sources
from pipelines import split as split_lib
from retrieval import index as index_lib
from trainer import export
from trainer import metrics as metrics_lib
from trainer import serving
from trainer import task
from trainer import warmstart
from transforms import loader
from transforms import spec as spec_lib

CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
RUNS_DIR = "runs"
REPORT_FILE = "retrain.json"
PREPROCESSED_SUBDIR = "preprocessed"
MODEL_SUBDIR = "model"
DATE_PLACEHOLDER = "{date}"

RUNNING = "running"
PROMOTED = "promoted"
REJECTED = "rejected"
FAILED = "failed"
DONE_STATES = (PROMOTED, REJECTED)

LOWER_IS_BETTER = ("rmse", "mae", "mse", "log_loss")
# A window is a date, ISO (2024-01-07) or compact (20240107), optionally
# with a time (2024-01-07T06): names sort in time order.
_DATE = r"\d{4}-?\d{2}-?\d{2}(?:[T_]\d{2}(?::?\d{2}){0,2})?"


class RetrainError(RuntimeError):
  """A retraining run that cannot go on; the message says why."""


# --- paths and files -------------------------------------------------------

def _gfile():
  return tf.io.gfile


def _join(root: str, *parts: str) -> str:
  return os.path.join(root, *parts) if "://" not in root else "/".join(
      [root.rstrip("/")] + list(parts))


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  gfile = _gfile()
  if not gfile.exists(path):
    return None
  with gfile.GFile(path) as handle:
    return json.loads(handle.read())


def _write_json_atomic(path: str, payload: Mapping[str, Any]) -> None:
  """Replaces `path` so readers see the old or the new content, never a mix.

  Locally: a temporary file in the same directory, then rename (atomic on
  POSIX). On object stores (gs://, s3://) a single object write is already
  atomic for readers.
  """
  text = json.dumps(payload, indent=2, sort_keys=True, default=str)
  if "://" in path:
    with _gfile().GFile(path, "w") as handle:
      handle.write(text)
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temp = os.path.join(directory,
                      f".{os.path.basename(path)}.tmp-{os.getpid()}")
  with open(temp, "w", encoding="utf-8") as handle:
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())
  os.replace(temp, path)


def _remove_tree(path: str) -> None:
  gfile = _gfile()
  if gfile.exists(path):
    gfile.rmtree(path)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Registry:
  """The directory layout under --root."""
  root: str

  @property
  def current_file(self) -> str:
    return _join(self.root, CURRENT_FILE)

  def version_dir(self, version: str) -> str:
    return _join(self.root, VERSIONS_DIR, version)

  def preprocessed_dir(self, version: str) -> str:
    return _join(self.version_dir(version), PREPROCESSED_SUBDIR)

  def model_dir(self, version: str) -> str:
    return _join(self.version_dir(version), MODEL_SUBDIR)

  def marker(self, window: str) -> str:
    return _join(self.root, RUNS_DIR, f"{window}.json")

  def read_current(self) -> Optional[Dict[str, Any]]:
    """The pointer: {"version": V, "history": [...]}, or None."""
    return _read_json(self.current_file)

  def current_version(self) -> Optional[str]:
    """The current version's name, or None before the first promotion."""
    pointer = self.read_current()
    return pointer["version"] if pointer else None

  def read_marker(self, window: str) -> Optional[Dict[str, Any]]:
    return _read_json(self.marker(window))

  def write_marker(self, window: str, payload: Mapping[str, Any]) -> None:
    _write_json_atomic(self.marker(window), payload)

  def set_current(self, version: str, history: Sequence[str]) -> None:
    _write_json_atomic(self.current_file, {
        "version": version, "history": list(history), "updated": _now()})


# --- windows ---------------------------------------------------------------

def _pattern_regex(pattern: str) -> "re.Pattern":
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
  regex = _pattern_regex(pattern)
  matches = _gfile().glob(pattern.replace(DATE_PLACEHOLDER, "*"))
  dates = set()
  for path in matches:
    match = regex.search(path)
    if match:
      dates.add(match.group("date"))
  return sorted(dates)


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
  _pattern_regex(pattern)
  if not re.fullmatch(_DATE, window):
    raise RetrainError(f"window {window!r} is not a date like 2024-01-07 or "
                       f"20240107")
  return pattern.replace(DATE_PLACEHOLDER, window)


# --- held-out rows ---------------------------------------------------------

def _file_blocks(path: str, header: bool, block_bytes: int = 1 << 20):
  """Blocks of whole lines of one CSV file (the header line skipped)."""
  with FileSystems.open(path) as handle:
    pending, skip_header = b"", header
    while True:
      chunk = handle.read(block_bytes)
      data = pending + chunk
      if chunk:
        cut = data.rfind(b"\n") + 1
        data, pending = data[:cut], data[cut:]
      if skip_header and data:
        parts = data.split(b"\n", 1)
        data = parts[1] if len(parts) > 1 else b""
        skip_header = False
      if data.strip():
        yield data
      if not chunk:
        return


def _parsed_batches(table, paths: Sequence[str], rules):
  """Typed batches of one input table, parsed as the pipeline parses them."""
  for path in paths:
    if table.format == "csv":
      for block in _file_blocks(path, table.header):
        batch, _, _ = rows_lib.parse_csv_block(rules, block)
        if batch.num_rows:
          yield batch
    elif table.format == "parquet":
      with FileSystems.open(path) as handle:
        parsed = pq.read_table(handle, columns=list(rules.columns))
      batch, _, _ = rows_lib.parse_arrow_table(rules, parsed)
      if batch.num_rows:
        yield batch
    else:
      decoder = example_coder.ExamplesToRecordBatchDecoder()
      records = [r.numpy() for r in tf.data.TFRecordDataset(
          path, compression_type="GZIP" if path.endswith(".gz") else "")]
      batch, _, _ = rows_lib.parse_examples(rules, records, decoder)
      if batch.num_rows:
        yield batch


def _join_side(batch, side, by: str):
  """Inner join of a main batch with a parsed side table on `by`."""
  keys = side.table.column(0).combine_chunks()
  index = {key: row for row, key in enumerate(
      pc.cast(keys, pa.string()).to_pylist())}
  main_keys = pc.cast(batch.column(by), pa.string()).to_pylist()
  keep = [i for i, key in enumerate(main_keys) if key in index]
  batch = batch.take(pa.array(keep, pa.int64()))
  matched = side.table.take(pa.array([index[main_keys[i]] for i in keep],
                                     pa.int64()))
  arrays = list(batch.columns) + [matched.column(name).combine_chunks()
                                  for name in side.table.column_names[1:]]
  names = list(batch.schema.names) + side.table.column_names[1:]
  return pa.RecordBatch.from_arrays(arrays, names=names)


def holdout_rows(spec, max_rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """The eval split of a spec's inputs as raw serving examples and labels.

  Rows are parsed, validated, joined and split with the preprocessing
  pipeline's own functions (pipelines/rows.py, joins.py, split.py), so they
  are the rows `embeddings preprocess` puts in eval; rows it would
  dead-letter are skipped.

  Args:
    spec: the feature spec, its paths pointing at the window.
    max_rows: stop after this many eval rows.

  Returns:
    (serialized raw tf.Examples [n], float labels [n]).

  Raises:
    RetrainError: no eval row was found, or an input is a BigQuery table.
  """

  for name in [spec.main] + [join.table for join in spec.joins]:
    if spec.inputs[name].is_bigquery:
      raise RetrainError(f"input '{name}' is read from BigQuery; retrain "
                         f"reads each window's held-out rows from the "
                         f"window's files (--data_pattern)")
  found = sources.check_inputs(spec)
  rules = preprocess.plan_inputs(spec)
  sides = {}
  for join in spec.joins:
    table = spec.inputs[join.table]
    side_rules = rules[join.table]
    batches = list(_parsed_batches(table, found[join.table]["paths"],
                                   side_rules))
    sides[join.table], _ = joins_lib.build_side_table(batches, side_rules)
  main = spec.main_table
  if main.eval_path is not None:
    paths = [p for p in found[spec.main]["paths"]
             if p in {m.path for m in _matches(main.eval_path)}]
  else:
    paths = found[spec.main]["paths"]
  kept, total = [], 0
  for batch in _parsed_batches(main, paths, rules[spec.main]):
    for join in spec.joins:
      batch = _join_side(batch, sides[join.table], join.by)
    if main.eval_path is None:
      mask = split_lib.eval_mask(split_lib.split_keys(batch, spec.split.key),
                                 spec.split.eval_fraction, spec.split.seed)
      batch = batch.filter(pa.array(mask))
    if batch.num_rows:
      kept.append(batch.slice(0, max_rows - total))
      total += kept[-1].num_rows
    if total >= max_rows:
      break
  if not total:
    raise RetrainError("the window has no held-out (eval) rows to compare "
                       "the models on")
  rows = pa.Table.from_batches(kept).to_pylist()
  labels = np.array([row[spec.label.column] for row in rows], np.float64)
  return serving.raw_examples(spec, rows), labels


def _matches(pattern: str):
  return FileSystems.match([pattern])[0].metadata_list


# --- the promotion gate ----------------------------------------------------

def gate(metric: str, candidate: float, current: Optional[float],
         tolerance: float) -> Tuple[bool, str]:
  """Whether a candidate may replace the current model.

  Args:
    metric: the compared metric (rmse, mae, mse, log_loss: lower is better;
      others, e.g. auc: higher is better).
    candidate: the candidate's value.
    current: the current model's value on the same rows, None if there is
      no current model.
    tolerance: how much worse the candidate may be (negative: it must be
      better by at least -tolerance).

  Returns:
    (promote, a one-line reason).
  """
  if current is None:
    return True, "no current model: the first version is promoted"
  if not np.isfinite(candidate):
    return False, f"candidate {metric} is {candidate}"
  worse_by = (candidate - current if metric in LOWER_IS_BETTER
              else current - candidate)
  verdict = worse_by <= tolerance
  return verdict, (f"candidate {metric} {candidate:.4f} vs current "
                   f"{current:.4f}: worse by {worse_by:+.4f}, tolerance "
                   f"{tolerance:+.4f}")


# --- drift -----------------------------------------------------------------

def drift_report(current, candidate, items: int = 100, k: int = 10
                ) -> Dict[str, Any]:
  """How much the candidate's embedding space moved from the current one's.

  For the `items` most frequent tokens of the candidate's vocabulary (the
  tf.Transform vocabulary is sorted by frequency) that both tables have:
  the overlap of their k nearest neighbours by cosine (among the tokens
  both tables have) and the Spearman rank correlation between their cosine
  similarities to every other shared token in the two spaces.

  Args:
    current: the current model's EmbeddingTable (trainer/artifacts.py).
    candidate: the candidate's EmbeddingTable for the same feature.
    items: how many frequent tokens to compare.
    k: neighbours per token.

  Returns:
    {"feature", "items", "k", "shared_tokens", "neighbor_overlap_mean",
    "neighbor_overlap_min", "spearman_mean", "spearman_min", "per_item"}.

  Raises:
    RetrainError: fewer than k + 1 shared tokens.
  """
  old_rows = {token: row for row, token in enumerate(current.tokens)}
  shared = [token for token in candidate.tokens
            if token in old_rows and not token.startswith("[OOV_")]
  if len(shared) < k + 1:
    raise RetrainError(f"drift: only {len(shared)} tokens of "
                       f"{candidate.name!r} are in both models, need {k + 1}")
  new_rows = {token: row for row, token in enumerate(candidate.tokens)}
  old = index_lib.normalize(current.vectors[[old_rows[t] for t in shared]])
  new = index_lib.normalize(candidate.vectors[[new_rows[t] for t in shared]])
  queries = list(range(min(items, len(shared))))
  exclude = [[q] for q in queries]
  _, old_ids = index_lib.top_k(old[queries], old, k, exclude=exclude)
  _, new_ids = index_lib.top_k(new[queries], new, k, exclude=exclude)
  old_sims = old[queries] @ old.T
  new_sims = new[queries] @ new.T
  per_item, overlaps, rhos = [], [], []
  for q in queries:
    overlap = len(set(old_ids[q].tolist()) & set(new_ids[q].tolist())) / k
    others = np.arange(len(shared)) != q
    rho = float(stats.spearmanr(old_sims[q, others],
                                new_sims[q, others]).statistic)
    overlaps.append(overlap)
    rhos.append(rho)
    per_item.append({"token": shared[q], "neighbor_overlap": overlap,
                     "spearman": rho})
  return {
      "feature": candidate.name, "items": len(queries), "k": k,
      "shared_tokens": len(shared),
      "neighbor_overlap_mean": float(np.mean(overlaps)),
      "neighbor_overlap_min": float(np.min(overlaps)),
      "spearman_mean": float(np.mean(rhos)),
      "spearman_min": float(np.min(rhos)),
      "per_item": per_item,
  }


# --- the run ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RetrainOptions:
  """Everything one `embeddings retrain` run needs (see the flags)."""
  spec_path: str
  data_pattern: str
  root: str
  window: Optional[str] = None
  data_env: str = "DATA_DIR"
  env: Tuple[Tuple[str, str], ...] = ()
  tolerance: float = 0.01
  metric: Optional[str] = None
  keep: int = 5
  drift_items: int = 100
  drift_k: int = 10
  holdout_max_rows: int = 100_000
  new_rows: str = "mean"
  preprocess_args: Tuple[str, ...] = ()
  train_args: Tuple[str, ...] = ()


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


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _claim_window(registry: Registry, window: str
                 ) -> Optional[RetrainResult]:
  """Checks the window's marker; returns a result when there is no work."""
  marker = registry.read_marker(window)
  if marker is None:
    return None
  status = marker.get("status")
  if status in DONE_STATES:
    return RetrainResult(window, "skipped", marker.get("version"),
                         f"window {window} is already {status}", marker)
  if status == RUNNING:
    if (marker.get("host") == socket.gethostname()
        and _pid_alive(int(marker.get("pid", -1)))
        and int(marker["pid"]) != os.getpid()):
      raise RetrainError(f"window {window} is being retrained by process "
                         f"{marker['pid']} on this host")
    pointer = registry.read_current() or {}
    if pointer.get("version") == window:
      # The earlier run died after switching `current`: it had promoted.
      recovered = dict(marker, status=PROMOTED, finished=_now(),
                       reason="recovered: `current` already points here")
      registry.write_marker(window, recovered)
      return RetrainResult(window, "skipped", window, recovered["reason"],
                           recovered)
  return None


def _spec_env(options: RetrainOptions, data_path: str) -> Dict[str, str]:
  env = dict(options.env)
  env[options.data_env] = data_path
  return env


def _preprocess(options: RetrainOptions, registry: Registry, version: str,
                env: Mapping[str, str]) -> str:
  output = registry.preprocessed_dir(version)
  if _gfile().exists(_join(output, layout.SUCCESS_FILE)):
    return output
  argv = ["--spec", options.spec_path, "--output", output]
  for key, value in env.items():
    argv += ["--env", f"{key}={value}"]
  preprocess.run(argv + list(options.preprocess_args))
  return output


def _train(options: RetrainOptions, registry: Registry, version: str,
           env: Mapping[str, str], spec, preprocessed: str,
           current: Optional[str]) -> Tuple[Any, Dict[str, Any]]:
  model_dir = registry.model_dir(version)
  # A failed attempt may have left checkpoints; the warm start below is the
  # starting point, not a half-trained candidate.
  _remove_tree(model_dir)
  argv = ["--spec", options.spec_path, "--preprocessed", preprocessed,
          "--model_dir", model_dir]
  for key, value in env.items():
    argv += ["--env", f"{key}={value}"]
  pinned = {}
  if current is not None and not any(
      arg.startswith("--embedding_dims") for arg in options.train_args):
    # The fourth-root rule would resize a table whose vocabulary grew past a
    # rounding step; a warm start keeps the current model's dimensions.
    pinned = export.read_trained_model(
        registry.model_dir(current)).report.get("embedding_dims") or {}
    if pinned:
      argv += ["--embedding_dims",
               ",".join(f"{name}={dim}" for name, dim in sorted(
                   pinned.items()))]
  args, unknown = task.flag_parser().parse_known_args(
      argv + list(options.train_args))
  if unknown:
    raise RetrainError(f"--train_args: unknown trainer flags {unknown}")
  config = task.config_from_args(args)
  warm: Dict[str, Any] = {"from": None, "tables": {}}
  pretrained = None
  if current is not None:
    targets = {
        name: dataclasses.replace(
            target, dimension=config.embedding_dim_overrides.get(
                name, target.dimension))
        for name, target in warmstart.target_tables(preprocessed,
                                                    spec).items()}
    pretrained = warmstart.warm_start_tables(
        registry.model_dir(current), targets, spec=spec,
        old_preprocessed=registry.preprocessed_dir(current),
        new_rows=options.new_rows, seed=config.seed)
    warm = {"from": current, "embedding_dims": pinned,
            "tables": {name: report.as_dict()
                       for name, report in pretrained.reports.items()}}
  result = task.train(config, spec, pretrained=pretrained)
  return result, warm


def _prune(registry: Registry, history: Sequence[str]) -> List[str]:
  """Deletes promoted versions that fell out of the kept history."""
  gfile = _gfile()
  versions_root = _join(registry.root, VERSIONS_DIR)
  if not gfile.isdir(versions_root):
    return []
  removed = []
  for name in sorted(gfile.listdir(versions_root)):
    name = name.rstrip("/")
    marker = registry.read_marker(name) or {}
    if name not in history and marker.get("status") in DONE_STATES:
      _remove_tree(registry.version_dir(name))
      removed.append(name)
  return removed


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
  if options.window is not None:
    window = options.window
  else:
    windows = list_windows(options.data_pattern)
    if not windows:
      raise RetrainError(f"no data matches --data_pattern "
                         f"{options.data_pattern!r}")
    window = windows[-1]
  data_path = window_path(options.data_pattern, window)
  done = _claim_window(registry, window)
  if done is not None:
    return done

  version = window
  report: Dict[str, Any] = {
      "window": window, "version": version, "status": RUNNING,
      "started": _now(), "pid": os.getpid(), "host": socket.gethostname(),
      "data": data_path,
      "options": dataclasses.asdict(options)}
  previous = registry.read_marker(window)
  report["attempt"] = (previous or {}).get("attempt", 0) + 1
  registry.write_marker(window, report)
  stage = "start"
  started = time.perf_counter()
  try:

    if not _gfile().exists(data_path):
      raise RetrainError(f"no data for window {window}: {data_path!r} does "
                         f"not exist")
    env = _spec_env(options, data_path)
    current = registry.current_version()
    report["current"] = current

    stage = "preprocess"
    spec = loader.load_spec(options.spec_path, env)
    # A failed attempt's finished preprocessing output is reused.
    report["preprocess_reused"] = _gfile().exists(
        _join(registry.preprocessed_dir(version), layout.SUCCESS_FILE))
    preprocessed = _preprocess(options, registry, version, env)

    stage = "train"
    result, warm = _train(options, registry, version, env, spec,
                          preprocessed, current)
    report["warm_start"] = warm
    report["train"] = {key: result.report.get(key) for key in (
        "metrics", "steps", "epochs", "train_examples", "examples_per_sec",
        "wall_time_s", "embedding_dims")}
    candidate_export = result.report["export_dir"]

    stage = "evaluate"
    task_name = result.report["task"]
    metric = options.metric or ("rmse" if task_name == "regression"
                                else "auc")
    examples, labels = holdout_rows(spec, options.holdout_max_rows)
    candidate_metrics = metrics_lib.evaluate_raw(candidate_export, examples, labels,
                                     task_name)
    current_metrics = None
    if current is not None:
      current_model = export.read_trained_model(registry.model_dir(current))
      current_metrics = metrics_lib.evaluate_raw(current_model.saved_model_dir, examples,
                                     labels, task_name)
    promote, verdict = gate(
        metric, candidate_metrics[metric],
        current_metrics[metric] if current_metrics else None,
        options.tolerance)
    report["evaluation"] = {
        "holdout_rows": int(len(labels)), "metric": metric,
        "candidate": candidate_metrics, "current": current_metrics,
        "tolerance": options.tolerance}

    stage = "drift"
    if current is not None:
      feature = (result.report.get("config") or {}).get("item_feature")
      if feature is None:
        raise RetrainError("drift: the model has no item_feature (set it in "
                           "the spec's model section)")
      old_tables = export.model_dir_tables(
          registry.model_dir(current), registry.preprocessed_dir(current),
          spec, with_labels=False)
      new_tables = export.model_dir_tables(
          registry.model_dir(version), preprocessed, spec, with_labels=False)
      report["drift"] = drift_report(old_tables[feature], new_tables[feature],
                                     options.drift_items, options.drift_k)

    stage = "promote"
    report["reason"] = verdict
    report["wall_time_s"] = round(time.perf_counter() - started, 3)
    if promote:
      _write_json_atomic(_join(registry.version_dir(version), REPORT_FILE),
                         dict(report, status=PROMOTED))
      pointer = registry.read_current() or {"history": []}
      history = [v for v in pointer["history"] if v != version] + [version]
      history = history[-options.keep:]
      registry.set_current(version, history)
      report["pruned"] = _prune(registry, history)
      report.update(status=PROMOTED, finished=_now())
    else:
      _remove_tree(registry.version_dir(version))
      report.update(status=REJECTED, finished=_now())
    registry.write_marker(window, report)
    return RetrainResult(window, report["status"], version, verdict, report)
  except Exception as error:  # Every failure is recorded, then reported.
    reason = f"{stage}: {type(error).__name__}: {error}"
    report.update(status=FAILED, reason=reason, stage=stage,
                  finished=_now(), traceback=traceback.format_exc(limit=8))
    registry.write_marker(window, report)
    if registry.current_version() != version:
      # Keep a finished preprocessing output for the retry; drop the rest.
      _remove_tree(registry.model_dir(version))
    return RetrainResult(window, FAILED, version, reason, report)


def rollback_registry(root: str) -> Tuple[str, str]:
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
    registry.write_marker(left, dict(marker, rolled_back=_now()))
  return left, target


def build_parser() -> argparse.ArgumentParser:
  """The `embeddings retrain` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings retrain",
      description="Preprocess the newest data window, warm-start, train, "
                  "and promote the candidate if it passes the gate.")
  parser.add_argument("--spec", required=True, help="the YAML feature spec")
  parser.add_argument("--data_pattern", required=True,
                      help="data path with {date}, e.g. gs://b/ratings/{date}")
  parser.add_argument("--root", required=True,
                      help="the model registry (current, versions/, runs/)")
  parser.add_argument("--window", default=None,
                      help="the date to train (default: the newest found)")
  parser.add_argument("--data_env", default="DATA_DIR",
                      help="the spec variable set to the window's path")
  parser.add_argument("--env", action="append", default=[],
                      metavar="NAME=VALUE", help="other spec variables")
  parser.add_argument("--tolerance", type=float, default=0.01,
                      help="how much worse than current the candidate may "
                           "be (metric units; negative demands a gain)")
  parser.add_argument("--metric", default=None,
                      help="gate metric (default: rmse, or auc for binary)")
  parser.add_argument("--keep", type=int, default=5,
                      help="promoted versions to keep")
  parser.add_argument("--drift_items", type=int, default=100)
  parser.add_argument("--drift_k", type=int, default=10)
  parser.add_argument("--holdout_max_rows", type=int, default=100_000)
  parser.add_argument("--new_rows", choices=("mean", "initializer"),
                      default="mean",
                      help="how rows of new tokens start (warm start)")
  parser.add_argument("--preprocess_args", default="",
                      help="extra `embeddings preprocess` flags (Beam "
                           "options), one shell-quoted string")
  parser.add_argument("--train_args", default="",
                      help="extra `embeddings train` flags, one string")
  return parser


def options_from_args(argv: Sequence[str]) -> RetrainOptions:
  """Parses `embeddings retrain` flags into RetrainOptions.

  Args:
    argv: the flags.

  Returns:
    The options.

  Raises:
    RetrainError: a flag value cannot be used.
  """
  args = build_parser().parse_args(list(argv))
  if args.keep < 1:
    raise RetrainError(f"--keep must be >= 1, got {args.keep}")
  _pattern_regex(args.data_pattern)
  return RetrainOptions(
      spec_path=args.spec, data_pattern=args.data_pattern, root=args.root,
      window=args.window, data_env=args.data_env, env=spec_lib.parse_env_flags(args.env),
      tolerance=args.tolerance, metric=args.metric, keep=args.keep,
      drift_items=args.drift_items, drift_k=args.drift_k,
      holdout_max_rows=args.holdout_max_rows, new_rows=args.new_rows,
      preprocess_args=tuple(shlex.split(args.preprocess_args)),
      train_args=tuple(shlex.split(args.train_args)))


def _summary(result: RetrainResult) -> str:
  report = result.report
  lines = [f"embeddings retrain: window {result.window}: {result.status} "
           f"({result.reason})"]
  drift = report.get("drift")
  if drift and result.status != "skipped":
    lines.append(f"  drift ({drift['feature']}, top {drift['items']} items): "
                 f"neighbour overlap@{drift['k']} "
                 f"{drift['neighbor_overlap_mean']:.3f}, Spearman "
                 f"{drift['spearman_mean']:.3f}")
  for name, table in (report.get("warm_start") or {}).get("tables",
                                                           {}).items():
    lines.append(f"  warm start {name}: kept {table['kept']}, new "
                 f"{table['new']}, dropped {table['dropped']}")
  return "\n".join(lines)


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
  print(_summary(result), flush=True)
  return 1 if result.status == FAILED else 0


def rollback(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings rollback`.

  Args:
    argv: `--root DIR` (default: sys.argv[1:]).

  Returns:
    0 on success, 1 when there is nothing to roll back to.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings rollback",
      description="Point `current` back to the previously promoted version.")
  parser.add_argument("--root", required=True, help="the model registry")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    left, target = rollback_registry(args.root)
  except RetrainError as error:
    print(f"embeddings rollback: error: {error}", file=sys.stderr)
    return 1
  print(f"embeddings rollback: current is now {target} (was {left})")
  return 0


if __name__ == "__main__":
  sys.exit(run())
