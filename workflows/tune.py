"""`embeddings tune`: search embedding sizes, L2 strengths and learning rate.

    embeddings tune --spec configs/movielens100k.yaml --preprocessed P \
        --model_dir W --output tuned.yaml [--trials 20] [--study_seed 0] \
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
everything else) and scoring it on rows held out of the training split
(--validation_fraction, 0.1 unless given; 0 is refused): RMSE for
regression (minimised), AUC for binary (maximised), or --metric. The eval
split (for MovieLens the test fold `embeddings evaluate` reports) is never
read by a trial: only the chosen setting is trained once more, in
`best/`, and evaluated on it, once, as the study's test metric. At the
end the trials are printed as a table, `tune_report.json` is written to
--model_dir, and the best trial is written back as a spec: the input YAML
with its `model:` section holding the winning values, `embedding_dims` and
`mf_dim` included, so `embeddings train --spec tuned.yaml` on the same
preprocessed data trains the best trial's model (the dimensions are the
trainer's overrides, resolved by transforms/dims.py like every other
dimension).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import optuna
import tf_keras as keras
import yaml

from core import files
from core import flags
from core import layout
from core import outputs
from trainer import config as config_lib
from trainer import metrics as metrics_lib
from trainer import report as report_lib
from trainer import task
from transforms import feature_info as feature_info_lib
from transforms import spec as spec_lib
from workflows import search_space as search_space_lib
from workflows import tune_options

# The trainer fields a study sets on every trial, beside the L2 strengths.
_TUNED_FIELDS = ("learning_rate", "embedding_dims", search_space_lib.MF_DIM)

TuneOptions = tune_options.TuneOptions
# The parser lives in workflows/tune_options.py (no TensorFlow: a fast
# --help).
flag_parser = tune_options.flag_parser


def _score(metrics: Optional[Mapping[str, Any]], metric: str,
           task_name: str) -> float:
  value = (metrics or {}).get(metric)
  if value is None:
    raise config_lib.ConfigError(
        f"--metric {metric}: the {task_name} validation metrics are "
        f"{sorted(metrics or {})}")
  return float(value)


def with_tune_defaults(base: config_lib.TrainerConfig,
                       given: Mapping[str, Any]) -> config_lib.TrainerConfig:
  """The base config with tune's own default validation fraction.

  Args:
    base: the config the flags and the spec make.
    given: the trainer flags given on the command line.

  Returns:
    `base` with validation_fraction DEFAULT_VALIDATION_FRACTION when
    neither a flag nor the spec set one.
  """
  if "validation_fraction" in given or base.validation_fraction:
    return base
  return dataclasses.replace(
      base, validation_fraction=tune_options.DEFAULT_VALIDATION_FRACTION)


def tuned_spec_yaml(spec_path: str, model_fields: Mapping[str, Any],
                    header: str = "") -> str:
  """The input spec's YAML with `model:` fields set.

  The raw YAML is edited (not the loaded spec), so `${VAR}` placeholders
  and every field the tuner does not own stay as they were.

  Args:
    spec_path: the input spec file.
    model_fields: the `model:` fields to set (the best trial's values and
      the flags the study ran with).
    header: a comment placed on top.

  Returns:
    The new spec as YAML text.
  """
  with open(spec_path, "r", encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  raw["model"] = {**(raw.get("model") or {}), **model_fields}
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
         options: TuneOptions
        ) -> Tuple[optuna.Study, search_space_lib.SearchSpace]:
  """Runs the study: one training run per trial, scored on validation rows.

  Trials never read the eval split (evaluate_chosen does, for the chosen one).

  Args:
    base: the config every trial starts from (its model_dir is the study's
      work directory; trial n trains in model_dir/trial_nnn).
    spec: the feature spec.
    options: trials, sampler seed, metric, ranges, timeout and storage.

  Returns:
    (the study, its search space).

  Raises:
    core.outputs.UnfinishedOutputError: the preprocessed data is missing.
    config.ConfigError: a bad range, metric or trial count, or no
      validation fraction.
  """
  if options.trials <= 0:
    raise config_lib.ConfigError(f"--trials: must be > 0, got "
                                 f"{options.trials}")
  if not base.validation_fraction:
    raise config_lib.ConfigError(
        "--validation_fraction: tune scores trials on rows held out of the "
        "training split; 0 would leave only the eval split (the test set) "
        "to score them on (default 0.1)")
  outputs.require_finished_output(base.preprocessed_dir)
  infos = feature_info_lib.read_feature_info(base.preprocessed_dir)
  space = search_space_lib.search_space(base, spec, infos, options.l2_range,
                                        options.learning_rate_range)
  metric = options.metric or metrics_lib.default_metric(
      base.resolve_task(spec))
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(
      direction=metrics_lib.METRICS[metric], storage=options.storage,
      study_name=options.study_name,
      load_if_exists=options.storage is not None,
      sampler=optuna.samplers.TPESampler(seed=options.study_seed))
  work = layout.TuneLayout(base.model_dir)

  def objective(trial: optuna.Trial) -> float:
    config = search_space_lib.suggest_config(
        trial, space, base, work.trial(trial.number).root)
    # A directory left by an earlier study may hold a killed run's backup,
    # which the trainer would resume into this trial's differently sized
    # tables.
    files.remove_tree(config.model_dir)
    started = time.perf_counter()
    result = task.train(config, spec, evaluate_test=False)
    value = _score(result.report["validation_metrics"], metric,
                   result.report["task"])
    trial.set_user_attr("seconds", time.perf_counter() - started)
    trial.set_user_attr("model_dir", config.model_dir)
    trial.set_user_attr("metrics", result.report["validation_metrics"])
    trial.set_user_attr("embedding_dims", result.report["embedding_dims"])
    print(f"trial {trial.number}: validation {metric}={value:.4f} "
          f"{dict(sorted(trial.params.items()))}", flush=True)
    # Trials build new graphs and variables; free the last one's.
    keras.backend.clear_session()
    return value

  study.optimize(objective, n_trials=options.trials,
                 timeout=options.timeout_s, gc_after_trial=True)
  return study, space


def best_config(study: optuna.Study, space: search_space_lib.SearchSpace,
                base: config_lib.TrainerConfig, model_dir: str
               ) -> config_lib.TrainerConfig:
  """The best trial's config, training in `model_dir`.

  Args:
    study: a study with a finished trial.
    space: its search space.
    base: the config every trial started from.
    model_dir: where the config trains.

  Returns:
    The config (export off, like the trials').
  """
  return search_space_lib.suggest_config(
      optuna.trial.FixedTrial(study.best_trial.params), space, base,
      model_dir)


def evaluate_chosen(study: optuna.Study, space: search_space_lib.SearchSpace,
              base: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec
             ) -> Dict[str, Any]:
  """Trains the chosen setting once more and tests it on the eval split.

  The only read of the eval split in a study.

  Args:
    study: the finished study.
    space: its search space.
    base: the config every trial started from.
    spec: the feature spec.

  Returns:
    The run's report (metrics: the eval split's, validation_metrics: the
    held-out rows'), trained in TuneLayout(base.model_dir).best.
  """
  config = best_config(study, space, base,
                       layout.TuneLayout(base.model_dir).best.root)
  files.remove_tree(config.model_dir)
  return task.train(config, spec).report


def _write_results(study: optuna.Study,
                   space: search_space_lib.SearchSpace,
                   base: config_lib.TrainerConfig, spec_path: str,
                   given: Mapping[str, Any], options: TuneOptions,
                   metric: str, tested: Mapping[str, Any]) -> Dict[str, Any]:
  """Writes the tuned spec and tune_report.json; returns the report."""
  best = study.best_trial
  chosen = best_config(study, space, base,
                       best.user_attrs.get("model_dir", ""))
  # The flags the study ran with and what it tuned make the best config.
  fields = [field for field in config_lib.MODEL_FIELDS
            if field in given or field in _TUNED_FIELDS + space.l2_fields]
  model_fields = {field: _yaml_value(getattr(chosen, field))
                  for field in fields if getattr(chosen, field)
                  is not None and getattr(chosen, field) != ()}
  header = (f"Tuned by `embeddings tune` from {spec_path}: best of "
            f"{len(study.trials)} trials (study seed {options.study_seed}), "
            f"trial {best.number}, validation {metric} {best.value:.4f} "
            f"(test {metric} {tested['metrics'][metric]:.4f}).")
  text = tuned_spec_yaml(spec_path, model_fields, header)
  os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
  with open(options.output, "w", encoding="utf-8") as handle:
    handle.write(text)
  report = {
      "metric": metric, "direction": metrics_lib.METRICS[metric],
      "scored_on": "validation",
      "validation_fraction": base.validation_fraction,
      "best": {"trial": best.number, "value": best.value,
               "params": best.params,
               "embedding_dims": best.user_attrs.get("embedding_dims"),
               "model_dir": best.user_attrs.get("model_dir")},
      "test": {"split": tested["eval_split"], "metrics": tested["metrics"],
               "validation_metrics": tested["validation_metrics"],
               "baseline": tested["baseline"]["test"],
               "model_dir": tested["model_dir"]},
      "search_space": {"dims": {k: list(v) for k, v in space.dims.items()},
                       "l2_fields": list(space.l2_fields),
                       "l2_range": list(space.l2_range),
                       "learning_rate_range": list(space.learning_rate_range)},
      "trials": [{"number": t.number, "state": t.state.name,
                  "value": t.value, "params": t.params,
                  "metrics": t.user_attrs.get("metrics"),
                  "seconds": t.user_attrs.get("seconds")}
                 for t in study.trials],
      "output": options.output,
  }
  files.write_json(layout.TuneLayout(base.model_dir).report, report)
  return report


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
    options = TuneOptions(**flags.values_from_args(TuneOptions, args))
    given = config_lib.values_from_args(args)
    base = with_tune_defaults(task.config_from_args(args), given)
    spec = task.load_spec(base)
    study, space = tune(base, spec, options)
    metric = options.metric or metrics_lib.default_metric(
        base.resolve_task(spec))
    print(format_trials(study, f"val_{metric}"), flush=True)
    if _best_number(study) is None:
      print("embeddings tune: no trial finished", file=sys.stderr)
      return 1
    tested = evaluate_chosen(study, space, base, spec)
  except (config_lib.ConfigError, spec_lib.SpecError, ValueError,
          FileNotFoundError) as error:
    print(f"embeddings tune: {error}", file=sys.stderr)
    return 2
  _write_results(study, space, base, args.spec_path, given, options, metric,
                 tested)
  best = study.best_trial
  name = report_lib.metric_name(metric)
  print(f"embeddings tune: best of {len(study.trials)} trials is trial "
        f"{best.number} (validation {name} {best.value:.4f}); tested once "
        f"on the {tested['eval_split']} split: {name} "
        f"{tested['metrics'][metric]:.4f} (global mean "
        f"{tested['baseline']['test'][metric]:.4f}) -> {options.output} "
        f"({layout.TuneLayout(base.model_dir).report})", flush=True)
  return 0


# The entry point `embeddings tune` calls (after parsing its flags with
# tune_options.flag_parser).
main = run


def _yaml_value(value: Any) -> Any:
  """Tuples (the config's lists) as YAML lists / mappings."""
  if isinstance(value, tuple):
    if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
      return {k: v for k, v in value}
    return list(value)
  return value


if __name__ == "__main__":
  sys.exit(run())
