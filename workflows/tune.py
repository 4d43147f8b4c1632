"""`embeddings tune`: search embedding sizes, L2 strengths and learning rate.

    embeddings tune --spec configs/movielens100k.yaml --preprocessed P \
        --model_dir W --output tuned.yaml [--trials 20] [--seed 0] \
        [any `embeddings train` flag, e.g. --model_type dnn --epochs 5]

The fourth-root rule only gives a starting point for an embedding's size;
the preprocessing run records, per table, the range around it worth
searching (`dim_range` in feature_info.json). An Optuna study (TPE sampler,
seeded) searches

* the dimension of every table the model embeds, within its dim_range (the
  user and item tables of the MF dot product share one dimension, `mf_dim`,
  searched where both ranges overlap; side features added to the user or
  item vector take that dimension too);
* the L2 strengths of the tables in the model (l2_user, l2_item and, when
  the model has other tables, l2_embedding), log-uniform over --l2_range;
* the learning rate, log-uniform over --learning_rate_range;

training one model per trial with `trainer.task.train` (the flags above fix
everything else) and scoring it on the eval split: RMSE for regression
(minimised), AUC for binary (maximised), or --metric. At the end the trials
are printed as a table, `tune_report.json` is written to --model_dir, and the
best trial is written back as a spec: the input YAML with `embedding_dim` set
on each tuned feature (used when the data is preprocessed again) and its
`model:` section holding the winning values, including `embedding_dims` and
`mf_dim`, so `embeddings train --spec tuned.yaml` on the same preprocessed
data trains the best trial's model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import optuna
import tensorflow as tf
import tf_keras as keras
import yaml

from core import outputs
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import models
from trainer import task
from transforms import feature_info as feature_info_lib
from transforms import kinds
from transforms import spec as spec_lib

REPORT_FILE = "tune_report.json"
TRIAL_DIR = "trial_{:03d}"
DIM_PREFIX = "dim_"
MF_DIM = "mf_dim"
DEFAULT_L2_RANGE = (1e-5, 1e-1)
DEFAULT_LEARNING_RATE_RANGE = (3e-4, 3e-2)
# metric -> optimisation direction.
METRICS = {"rmse": "minimize", "mae": "minimize", "mse": "minimize",
           "auc": "maximize", "log_loss": "minimize"}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """What a study searches.

  Attributes:
    dims: parameter name -> (low, high) inclusive, for `dim_<feature>` of
      every embedded feature outside the dot product, and `mf_dim` when the
      model has the MF term.
    mf_features: the features whose dimension is `mf_dim` (user, item).
    l2_fields: the config's L2 fields searched.
    l2_range: (low, high) of every L2 strength, log-uniform.
    learning_rate_range: (low, high), log-uniform.
  """
  dims: Mapping[str, Tuple[int, int]]
  mf_features: Tuple[str, ...]
  l2_fields: Tuple[str, ...]
  l2_range: Tuple[float, float]
  learning_rate_range: Tuple[float, float]

  def feature_dims(self, params: Mapping[str, Any]) -> Dict[str, int]:
    """Feature -> dimension from a trial's parameters.

    Args:
      params: the trial's parameters (names as in `dims`).

    Returns:
      The dimension of every tuned feature's table.
    """
    dims = {}
    for name in self.dims:
      if name == MF_DIM:
        for feature in self.mf_features:
          dims[feature] = int(params[MF_DIM])
      else:
        dims[name[len(DIM_PREFIX):]] = int(params[name])
    return dims


def search_space(config: config_lib.TrainerConfig,
                 spec: spec_lib.FeatureSpec,
                 infos: Mapping[str, feature_info_lib.FeatureInfo],
                 l2_range: Tuple[float, float] = DEFAULT_L2_RANGE,
                 learning_rate_range: Tuple[float, float] = (
                     DEFAULT_LEARNING_RATE_RANGE)) -> SearchSpace:
  """The search space of a model: its tables' dim_ranges, L2 and lr.

  Args:
    config: the base config (model type, features, user/item features).
    spec: the feature spec.
    infos: feature_info.json of the preprocessed data (sizes, dim_range).
    l2_range: (low, high) of the L2 strengths.
    learning_rate_range: (low, high) of the learning rate.

  Returns:
    The SearchSpace.

  Raises:
    config.ConfigError: a range is empty or not positive, or the model
      reads a feature the preprocessed data lacks.
  """
  for what, (low, high) in (("l2_range", l2_range),
                            ("learning_rate_range", learning_rate_range)):
    if not 0 < low <= high:
      raise config_lib.ConfigError(
          f"{what}: need 0 < low <= high, got ({low}, {high})")
  user, item = config.resolve_user_item(spec)
  names = models.model_features(config, spec)
  missing = sorted(set(names) - set(infos))
  if missing:
    raise config_lib.ConfigError(
        f"features {missing} are not in feature_info.json of the "
        f"preprocessed data; was it preprocessed with this spec?")
  dot_product = config.model_type == "mf" or config.hybrid
  mf_features = (user, item) if dot_product else ()
  # Side features added to the user / item vectors take the dot product's
  # dimension: mf_dim sets theirs too.
  in_dot = mf_features + ((config.user_side_features
                           + config.item_side_features) if dot_product
                          else ())
  tower = set(config.features or [f.name for f in spec.features])
  dims: Dict[str, Tuple[int, int]] = {}
  if dot_product:
    ranges = [tuple(infos[name].dim_range) for name in mf_features]
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
      # Tables of very different sizes: the one dot-product dimension can
      # only lie in one of the two ranges, so search their hull.
      low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    dims[MF_DIM] = (low, high)
  embedded = []
  if config.model_type == "dnn":
    embedded = [name for name in names if name in tower
                and infos[name].kind != kinds.NUMERIC
                and name not in in_dot]
  for name in embedded:
    low, high = infos[name].dim_range
    dims[DIM_PREFIX + name] = (int(low), int(high))
  l2_fields = []
  if user in names:
    l2_fields.append("l2_user")
  if item in names:
    l2_fields.append("l2_item")
  if any(name not in (user, item) and infos[name].kind != kinds.NUMERIC
         for name in names):
    l2_fields.append("l2_embedding")
  return SearchSpace(dims=dims, mf_features=tuple(mf_features),
                     l2_fields=tuple(l2_fields),
                     l2_range=tuple(map(float, l2_range)),
                     learning_rate_range=tuple(map(float,
                                                   learning_rate_range)))


def suggest_config(trial: optuna.trial.BaseTrial, space: SearchSpace,
                   base: config_lib.TrainerConfig, model_dir: str
                  ) -> config_lib.TrainerConfig:
  """Samples one trial's config from the space.

  Args:
    trial: the Optuna trial (or a FixedTrial).
    space: from search_space.
    base: the config every trial starts from.
    model_dir: where this trial trains.

  Returns:
    The trial's TrainerConfig (export off: only the score is needed).
  """
  params = {name: trial.suggest_int(name, low, high)
            for name, (low, high) in space.dims.items()}
  dims = space.feature_dims(params)
  changes: Dict[str, Any] = {
      "model_dir": model_dir, "export": False,
      "embedding_dims": tuple(sorted({**base.embedding_dim_overrides,
                                      **dims}.items())),
      "learning_rate": trial.suggest_float(
          "learning_rate", *space.learning_rate_range, log=True)}
  if MF_DIM in params:
    changes["mf_dim"] = int(params[MF_DIM])
  for field in space.l2_fields:
    changes[field] = trial.suggest_float(field, *space.l2_range, log=True)
  return dataclasses.replace(base, **changes)


def _score(report: Mapping[str, Any], metric: str) -> float:
  value = report["metrics"].get(metric)
  if value is None:
    raise config_lib.ConfigError(
        f"--metric {metric}: the {report['task']} report has "
        f"{sorted(report['metrics'])}")
  return float(value)


def tuned_spec_yaml(spec_path: str, space: SearchSpace,
                    params: Mapping[str, Any],
                    model_fields: Mapping[str, Any],
                    header: str = "") -> str:
  """The input spec's YAML with a trial's values written in.

  The raw YAML is edited (not the loaded spec), so `${VAR}` placeholders
  and every field the tuner does not own stay as they were.

  Args:
    spec_path: the input spec file.
    space: the study's search space.
    params: the trial's parameters.
    model_fields: other `model:` fields to set (the flags the study ran
      with).
    header: a comment placed on top.

  Returns:
    The new spec as YAML text.
  """
  with open(spec_path, "r", encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  dims = space.feature_dims(params)
  for feature in raw["features"]:
    if feature.get("name") in dims:
      feature["embedding_dim"] = dims[feature["name"]]
  model = dict(raw.get("model") or {})
  model.update(model_fields)
  for field in space.l2_fields + ("learning_rate",):
    model[field] = float(params[field])
  # The trainer sizes tables from the preprocessed data's feature_info, so
  # the dimensions also go into the model section to take effect without
  # preprocessing again.
  overrides = dict(model.get("embedding_dims") or {})
  overrides.update({name: dim for name, dim in dims.items()
                    if name not in space.mf_features})
  if overrides:
    model["embedding_dims"] = overrides
  if MF_DIM in params:
    model["mf_dim"] = int(params[MF_DIM])
  raw["model"] = model
  body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None,
                        width=100, allow_unicode=True)
  comment = "".join(f"# {line}\n" for line in header.splitlines())
  return comment + body


def format_trials(study: optuna.Study, metric: str) -> str:
  """The study's trials as a plain-text table, best marked with '*'.

  Args:
    study: a finished study.
    metric: the score's name (the value column's header).

  Returns:
    The table.
  """
  names: List[str] = []
  for trial in study.trials:
    for name in trial.params:
      if name not in names:
        names.append(name)
  best = _best_number(study)
  header = ["trial", "state", metric] + names + ["seconds"]
  rows = []
  for trial in study.trials:
    row = [f"{trial.number}{'*' if trial.number == best else ''}",
           trial.state.name,
           "" if trial.value is None else f"{trial.value:.4f}"]
    for name in names:
      value = trial.params.get(name)
      row.append("" if value is None else
                 str(value) if isinstance(value, int) else f"{value:.3g}")
    seconds = trial.user_attrs.get("seconds")
    row.append("" if seconds is None else f"{seconds:.1f}")
    rows.append(row)
  widths = [max(len(header[i]), *(len(r[i]) for r in rows))
            for i in range(len(header))]
  lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths))
            for row in rows]
  return "\n".join(lines)


def _best_number(study: optuna.Study) -> Optional[int]:
  try:
    return study.best_trial.number
  except ValueError:
    return None


def tune(base: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
         trials: int, seed: int, metric: Optional[str] = None,
         l2_range: Tuple[float, float] = DEFAULT_L2_RANGE,
         learning_rate_range: Tuple[float, float] = (
             DEFAULT_LEARNING_RATE_RANGE),
         timeout_s: Optional[float] = None,
         storage: Optional[str] = None,
         study_name: Optional[str] = None) -> Tuple[optuna.Study, SearchSpace]:
  """Runs the study: one training run per trial, scored on the eval split.

  Args:
    base: the config every trial starts from (its model_dir is the study's
      work directory; trial n trains in model_dir/trial_nnn).
    spec: the feature spec.
    trials: number of trials.
    seed: seeds the TPE sampler (trials are also trained with base.seed).
    metric: the score (default rmse for regression, auc for binary).
    l2_range: (low, high) of the L2 strengths.
    learning_rate_range: (low, high) of the learning rate.
    timeout_s: stop starting trials after this many seconds.
    storage: an Optuna storage URL (e.g. sqlite:///study.db) to keep and
      resume the study; None keeps it in memory.
    study_name: the study's name in the storage.

  Returns:
    (the study, its search space).

  Raises:
    data.PreprocessedDataError: the preprocessed data is missing.
    config.ConfigError: a bad range, metric or trial count.
  """
  if trials <= 0:
    raise config_lib.ConfigError(f"--trials: must be > 0, got {trials}")
  outputs.require_finished_output(base.preprocessed_dir)
  infos = feature_info_lib.read_feature_info(base.preprocessed_dir)
  space = search_space(base, spec, infos, l2_range, learning_rate_range)
  metric = metric or ("auc" if base.resolve_task(spec) == "binary"
                      else "rmse")
  if metric not in METRICS:
    raise config_lib.ConfigError(f"--metric: must be one of {sorted(METRICS)}"
                                 f", got {metric!r}")
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(
      direction=METRICS[metric], storage=storage, study_name=study_name,
      load_if_exists=storage is not None,
      sampler=optuna.samplers.TPESampler(seed=seed))

  def objective(trial: optuna.Trial) -> float:
    config = suggest_config(
        trial, space, base,
        os.path.join(base.model_dir, TRIAL_DIR.format(trial.number)))
    # A directory left by an earlier study may hold a killed run's backup,
    # which the trainer would resume into this trial's differently sized
    # tables.
    if tf.io.gfile.exists(config.model_dir):
      tf.io.gfile.rmtree(config.model_dir)
    started = time.perf_counter()
    result = task.train(config, spec)
    value = _score(result.report, metric)
    trial.set_user_attr("seconds", time.perf_counter() - started)
    trial.set_user_attr("model_dir", config.model_dir)
    trial.set_user_attr("metrics", result.report["metrics"])
    print(f"trial {trial.number}: {metric}={value:.4f} "
          f"{json.dumps(trial.params, sort_keys=True)}", flush=True)
    # Trials build new graphs and variables; free the last one's.
    keras.backend.clear_session()
    return value

  study.optimize(objective, n_trials=trials, timeout=timeout_s,
                 gc_after_trial=True)
  return study, space


def _range(text: Optional[str], default: Tuple[float, float],
           flag: str) -> Tuple[float, float]:
  if text is None:
    return default
  try:
    low, high = (float(v) for v in text.split(","))
  except ValueError:
    raise config_lib.ConfigError(f"{flag}: expected LOW,HIGH, got "
                                 f"{text!r}") from None
  return low, high


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings tune` flags.

  Returns:
    `embeddings train`'s parser (the base config of every trial; --model_dir
    becomes the study's work directory) plus the study's flags.
  """
  parser = task.flag_parser()
  parser.prog = "embeddings tune"
  parser.description = ("Search embedding sizes, L2 and learning rate with "
                        "Optuna; write the best config as a spec.")
  for action in parser._actions:  # pylint: disable=protected-access
    if action.dest == "model_dir":
      action.help = "study work directory: trial_NNN/ and tune_report.json"
  parser.add_argument("--output", required=True,
                      help="the tuned spec YAML to write")
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--study_seed", type=int, default=0,
                      help="seeds the TPE sampler")
  parser.add_argument("--metric", choices=sorted(METRICS),
                      help="score on the eval split (default rmse, or auc "
                           "for binary)")
  parser.add_argument("--l2_range", help="LOW,HIGH (default "
                      f"{DEFAULT_L2_RANGE[0]},{DEFAULT_L2_RANGE[1]})")
  parser.add_argument("--learning_rate_range", help="LOW,HIGH (default "
                      f"{DEFAULT_LEARNING_RATE_RANGE[0]},"
                      f"{DEFAULT_LEARNING_RATE_RANGE[1]})")
  parser.add_argument("--timeout_s", type=float,
                      help="start no trial after this many seconds")
  parser.add_argument("--storage",
                      help="Optuna storage URL to keep/resume the study")
  parser.add_argument("--study_name")
  return parser


TUNE_FLAGS = ("output", "trials", "study_seed", "metric", "l2_range",
              "learning_rate_range", "timeout_s", "storage", "study_name")


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings tune`.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    0 on success, 2 on a configuration or input error, 1 when no trial
    finished.
  """
  args, unknown = flag_parser().parse_known_args(argv)
  if unknown:
    print(f"embeddings tune: unknown flags {unknown}", file=sys.stderr)
    return 2
  try:
    l2_range = _range(args.l2_range, DEFAULT_L2_RANGE, "--l2_range")
    lr_range = _range(args.learning_rate_range, DEFAULT_LEARNING_RATE_RANGE,
                      "--learning_rate_range")
    train_args = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                       if k not in TUNE_FLAGS})
    base = task.config_from_args(train_args)
    spec = task.load_spec(base)
    study, space = tune(base, spec, args.trials, args.study_seed, args.metric,
                        l2_range, lr_range, args.timeout_s, args.storage,
                        args.study_name)
  except (config_lib.ConfigError, spec_lib.SpecError,
          data_lib.PreprocessedDataError, FileNotFoundError) as error:
    print(f"embeddings tune: {error}", file=sys.stderr)
    return 2
  metric = args.metric or ("auc" if base.resolve_task(spec) == "binary"
                           else "rmse")
  print(format_trials(study, metric), flush=True)
  best_number = _best_number(study)
  if best_number is None:
    print("embeddings tune: no trial finished", file=sys.stderr)
    return 1
  best = study.best_trial
  # The model fields the command line set are part of the best config.
  model_fields = {field: value for field, value in vars(train_args).items()
                  if field in config_lib.MODEL_FIELDS and value is not None}
  model_fields = {field: _yaml_value(getattr(base, field))
                  for field in model_fields}
  header = (f"Tuned by `embeddings tune` from {args.spec}: best of "
            f"{len(study.trials)} trials (study seed {args.study_seed}), "
            f"trial {best.number}, eval {metric} {best.value:.4f}.")
  text = tuned_spec_yaml(args.spec, space, best.params, model_fields, header)
  directory = os.path.dirname(os.path.abspath(args.output))
  os.makedirs(directory, exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as handle:
    handle.write(text)
  report = {
      "metric": metric, "direction": METRICS[metric],
      "best": {"trial": best.number, "value": best.value,
               "params": best.params,
               "embedding_dims": space.feature_dims(best.params),
               "model_dir": best.user_attrs.get("model_dir")},
      "search_space": {"dims": {k: list(v) for k, v in space.dims.items()},
                       "l2_fields": list(space.l2_fields),
                       "l2_range": list(space.l2_range),
                       "learning_rate_range": list(space.learning_rate_range)},
      "trials": [{"number": t.number, "state": t.state.name,
                  "value": t.value, "params": t.params,
                  "metrics": t.user_attrs.get("metrics"),
                  "seconds": t.user_attrs.get("seconds")}
                 for t in study.trials],
      "output": args.output,
  }
  with tf.io.gfile.GFile(os.path.join(base.model_dir, REPORT_FILE),
                         "w") as handle:
    json.dump(report, handle, indent=2, default=str)
  print(f"best trial {best.number}: {metric}={best.value:.4f}; tuned spec "
        f"written to {args.output}", flush=True)
  return 0


def _yaml_value(value: Any) -> Any:
  """Tuples (the config's lists) as YAML lists / mappings."""
  if isinstance(value, tuple):
    if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
      return {k: v for k, v in value}
    return list(value)
  return value


if __name__ == "__main__":
  sys.exit(run())
