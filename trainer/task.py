"""`embeddings train`: train a Keras embedding model on preprocessed data.

    embeddings train --spec configs/movielens100k.yaml \
        --preprocessed out/pre --model_dir out/model [--model_type dnn ...]

One TrainerConfig (defaults < the spec's `model:` section < flags; the
flags are generated from its fields, trainer/config.py) drives the run: the
strategy comes from --strategy and TF_CONFIG; the model and optimizer are
built inside strategy.scope(); each epoch is validated on rows held out of
the training split (--validation_fraction; without it on the eval split),
early stopping keeps the best epoch, and the eval split is scored once,
after training, as the test set. Training checkpoints every
--checkpoint_every steps and a restart with the same --model_dir resumes
the last checkpoint when it was made with the same settings, data and spec
(trainer/backup.py; under parameter servers too, where the workers share
each pass over the data through the tf.data service, see
trainer/distribute.py). Where the run writes is core.layout.ModelLayout:
TensorBoard logs, the serving SavedModel, report.json, the model card and
the training curve (trainer/report.py); the command ends with one summary
line.

`train(config)` is the same run as a library call (tuning, retraining).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from core import files
from core import layout
from core import outputs
from trainer import backup as backup_lib
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute
from trainer import fit_input
from trainer import layers
from trainer import metrics as metrics_lib
from trainer import models
from trainer import optimizers
from trainer import report as report_lib
from trainer import serving
from trainer import transfer
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib


@dataclasses.dataclass
class TrainResult:
  """What a run produced.

  Attributes:
    model: the trained Keras model.
    report: the JSON report's content.
    strategy: the strategy it trained under.
    config: the run's configuration.
  """
  model: keras.Model
  report: Dict[str, Any]
  strategy: tf.distribute.Strategy
  config: config_lib.TrainerConfig


def load_spec(config: config_lib.TrainerConfig) -> spec_lib.FeatureSpec:
  """Loads the config's spec with its `${VAR}` overrides.

  Args:
    config: spec_path and spec_env.

  Returns:
    The loaded FeatureSpec.
  """
  return loader.load_spec(config.spec_path, config.env)


def _build(config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
           infos: Mapping[str, feature_info_lib.FeatureInfo],
           strategy: tf.distribute.Strategy, split: fit_input.TrainingSplit,
           pretrained: Optional[Mapping[str, layers.PretrainedTable]]):
  """The compiled model and its optimizer, built inside strategy.scope()."""
  # The spec's `from_checkpoint` tables; tables passed in (warm start) win.
  pretrained = transfer.pretrained_for_training(config, spec, infos,
                                                pretrained)
  with strategy.scope():
    model = models.build_model(config, spec, infos,
                               label_mean=split.label_mean,
                               pretrained=pretrained)
    optimizer = optimizers.make_optimizer(
        config.optimizer, config.learning_rate, config.learning_rate_decay,
        split.steps_per_epoch)
    models.compile_model(model, config, spec, optimizer)
  return model, optimizer


def _fit(config: config_lib.TrainerConfig, model: keras.Model,
         strategy: tf.distribute.Strategy, split: fit_input.TrainingSplit,
         run: callbacks_lib.RunCallbacks, dispatcher: Optional[str]) -> float:
  """Runs the planned fit calls; returns their seconds.

  With early stopping the model ends with its best epoch's weights.
  """
  validation = None
  if not distribute.is_parameter_server(strategy):
    validation = fit_input.validation_dataset(config, split.feature_names)
  started = time.perf_counter()
  run_id = uuid.uuid4().hex[:12]
  for index, (first_epoch, last_epoch, epoch_steps) in enumerate(
      run.segments):
    model.fit(fit_input.train_input(config, strategy, split, dispatcher,
                                    f"train-{run_id}-fit{index}"),
              epochs=last_epoch, steps_per_epoch=epoch_steps,
              initial_epoch=first_epoch, validation_data=validation,
              callbacks=run.callbacks, verbose=config.verbose)
  if run.early_stopping is not None:
    run.early_stopping.restore_best()
  # Finished: drop the backup so that a new run here starts afresh.
  # BackupAndRestore removes its own checkpoints (each worker its own);
  # the chief removes what the trainer keeps beside them.
  run_dir = layout.ModelLayout(config.model_dir)
  if distribute.is_parameter_server(strategy):
    files.remove_tree(run_dir.backup)
  elif distribute.is_chief(strategy):
    for path in (run_dir.backup_fingerprint, run_dir.backup_best_state,
                 run_dir.backup_best_weights):
      files.remove_tree(path)
    if files.isdir(run_dir.backup) and not files.listdir(run_dir.backup):
      files.remove_tree(run_dir.backup)
  return time.perf_counter() - started


def _unpartitioned_copy(model: keras.Model,
                        config: config_lib.TrainerConfig,
                        spec: spec_lib.FeatureSpec, infos,
                        label_mean: float) -> keras.Model:
  """The same model with whole (unsharded) variables, for export.

  A SavedModel of a parameter-server model stores each partitioned table as
  one variable renamed `<layer>/ShardedVariable`; exporting a plain copy
  keeps the variable names (`embedding_<feature>/embeddings`) the same
  whatever the strategy.
  """
  copy = models.build_model(config, spec, infos, label_mean=label_mean)
  # Object-based checkpoints restore partitioned variables into whole ones.
  staging = layout.ModelLayout(config.model_dir).unpartitioned
  path = tf.train.Checkpoint(model=model).write(layout.join(staging, "ckpt"))
  tf.train.Checkpoint(model=copy).read(path).assert_existing_objects_matched()
  files.remove_tree(staging)
  return copy


def _export(config: config_lib.TrainerConfig, model: keras.Model,
            spec: spec_lib.FeatureSpec, infos,
            strategy: tf.distribute.Strategy, label_mean: float,
            out: layout.ModelLayout) -> Optional[str]:
  """Writes the serving SavedModel when config.export; returns its path."""
  if not config.export:
    return None
  if distribute.is_parameter_server(strategy):
    model = _unpartitioned_copy(model, config, spec, infos, label_mean)
  return serving.export_saved_model(model, config.preprocessed_dir, spec,
                                    out.saved_model)


def _embedding_dims(model: keras.Model) -> Dict[str, int]:
  """Feature -> dimension of the model's embedding tables (not biases)."""
  return {layer.feature: layer.dim for layer in model.layers
          if isinstance(layer, layers.EmbeddingLookup)
          and layer.name.startswith(layers.EMBEDDING_LAYER_PREFIX)}


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The trained model's metrics after training, each split read once.

  Attributes:
    validation: on the training split's held-out rows (None without
      --validation_fraction).
    test: on the eval split (None when not evaluated).
    baseline: "validation" / "test" -> the global-mean predictor's metrics
      on the same rows.
  """
  validation: Optional[Dict[str, float]]
  test: Optional[Dict[str, float]]
  baseline: Dict[str, Optional[Dict[str, float]]]


def _evaluate(config: config_lib.TrainerConfig, model: keras.Model,
              split: fit_input.TrainingSplit, task: str,
              evaluate_test: bool) -> Evaluation:
  """Scores the model on the validation rows and (once) the eval split."""
  validation = baseline_validation = test = baseline_test = None
  if config.validation_fraction:
    validation, baseline_validation = metrics_lib.evaluate_with_baseline(
        model, fit_input.validation_dataset(config, split.feature_names),
        task, split.label_mean)
  if evaluate_test:
    test, baseline_test = metrics_lib.evaluate_with_baseline(
        model, fit_input.eval_dataset(config, split.feature_names,
                                      config.eval_split),
        task, split.label_mean)
  return Evaluation(validation=validation, test=test,
                    baseline={"validation": baseline_validation,
                              "test": baseline_test})


def _features(model: keras.Model, split: fit_input.TrainingSplit,
              infos: Mapping[str, feature_info_lib.FeatureInfo]
             ) -> Dict[str, Dict[str, Any]]:
  """Each model input's rows (vocabulary size) and table dimension."""
  dims = _embedding_dims(model)
  return {name: {"size": int(infos[name].size), "dim": dims.get(name)}
          for name in split.feature_names}


def _report(config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
            strategy: tf.distribute.Strategy, model: keras.Model,
            split: fit_input.TrainingSplit, run: callbacks_lib.RunCallbacks,
            evaluation: Evaluation, infos, fit_seconds: float,
            export_dir: Optional[str], started: float) -> Dict[str, Any]:
  """The run's report.json content (also TrainResult.report).

  `metrics` are the eval split's (the test metrics), `validation_metrics`
  the held-out training rows'; `best_epoch` is the epoch whose weights the
  model holds (early stopping's best, else the last one).
  """
  logger = run.logger
  steps = int(model.optimizer.iterations.numpy())
  epochs_run = -(-steps // split.steps_per_epoch)
  stopping = run.early_stopping
  task = config.resolve_task(spec)
  return {
      "model_type": config.model_type,
      "task": task,
      "metric": metrics_lib.default_metric(task),
      "metrics": evaluation.test,
      "validation_metrics": evaluation.validation,
      "baseline": evaluation.baseline,
      "eval_split": config.eval_split,
      "validation_fraction": config.validation_fraction,
      "validation_examples": split.validation_examples,
      "epochs_run": epochs_run,
      "best_epoch": (stopping.best_epoch or epochs_run) if stopping
                    else epochs_run,
      "early_stopping": None if stopping is None else {
          "patience": stopping.patience, "monitor": stopping.monitor,
          "stopped_at_epoch": stopping.stopped_epoch,
          "values": stopping.values},
      "train_history": logger.history,
      "steps": steps,
      "resumed_from_step": (steps if logger.initial_step is None
                            else logger.initial_step),
      "planned_steps": config.epochs * split.steps_per_epoch,
      "epochs": config.epochs,
      "steps_per_epoch": split.steps_per_epoch,
      "batch_size": config.batch_size,
      "train_examples": split.num_examples,
      "label_mean": split.label_mean,
      "examples_per_sec": logger.examples_per_sec,
      "fit_seconds": fit_seconds,
      "wall_time_s": time.perf_counter() - started,
      "model_dir": config.model_dir,
      "export_dir": export_dir,
      "strategy": type(strategy).__name__,
      "input_mode": split.input_mode,
      "num_replicas": strategy.num_replicas_in_sync,
      "embedding_dims": _embedding_dims(model),
      "features": _features(model, split, infos),
      "config": dataclasses.asdict(config),
  }


def _check_strategy(config: config_lib.TrainerConfig) -> None:
  if config.early_stopping_patience and (
      distribute.resolve_strategy_name(config.strategy)
      == distribute.PARAMETER_SERVER):
    raise config_lib.ConfigError(
        "early_stopping_patience: not available under parameter servers, "
        "whose epochs are not validated; train without it (the held-out "
        "rows of --validation_fraction are still scored after training)")


def train(config: config_lib.TrainerConfig,
          spec: Optional[spec_lib.FeatureSpec] = None,
          pretrained: Optional[Mapping[str, layers.PretrainedTable]] = None,
          cluster_resolver=None, evaluate_test: bool = True) -> TrainResult:
  """Trains, evaluates, exports and reports one model.

  Args:
    config: the run's configuration.
    spec: the feature spec (default: loaded from config.spec_path).
    pretrained: feature -> initial table (warm start, frozen transfer).
    cluster_resolver: overrides TF_CONFIG for multi-worker or parameter
      server strategies (in-process test clusters).
    evaluate_test: score the eval split after training (report["metrics"];
      tuning trials leave it untouched: None) and write the model card and
      the training curve.

  Returns:
    The TrainResult.

  Raises:
    core.outputs.UnfinishedOutputError: the preprocessing output is
      missing or unfinished (no _SUCCESS).
    data.PreprocessedDataError: a split or feature is missing.
    config.ConfigError: the config does not fit the spec or data.
    backup.BackupMismatchError: model_dir holds a killed run's backup made
      with other settings, data or spec (and no --restart).
  """
  started = time.perf_counter()
  outputs.require_finished_output(config.preprocessed_dir)
  spec = spec or load_spec(config)
  infos = feature_info_lib.read_feature_info(config.preprocessed_dir)
  config.resolve_user_item(spec)
  _check_strategy(config)
  task = config.resolve_task(spec)
  keras.utils.set_random_seed(config.seed)
  strategy = distribute.build_strategy(config, cluster_resolver)
  chief = distribute.is_chief(strategy)
  # Before the data is read or the model built: a backup of another run
  # stops this one here.
  resume = backup_lib.prepare(config, writes=chief)
  out = distribute.worker_layout(config.model_dir, strategy)
  tf.io.gfile.makedirs(out.root)
  if chief:
    backup_lib.record(config)

  split = fit_input.read_training_split(config, spec, strategy)
  if resume is not None:
    print(resume.line(split.steps_per_epoch), flush=True)
  pretrained = transfer.pretrained_for_training(config, spec, infos, pretrained)
  model, optimizer = _build(config, spec, infos, strategy, split, pretrained)
  dispatcher = fit_input.start_data_service(config, strategy,
                                            cluster_resolver)
  run = callbacks_lib.run_callbacks(config, model, optimizer, strategy,
                                    split.steps_per_epoch, out, task)
  fit_seconds = _fit(config, model, strategy, split, run, dispatcher)
  evaluation = _evaluate(config, model, split, task, evaluate_test)
  export_dir = _export(config, model, spec, infos, strategy, split.label_mean,
                       out)
  report = _report(config, spec, strategy, model, split, run, evaluation,
                   infos, fit_seconds=fit_seconds, export_dir=export_dir,
                   started=started)
  report["transfer"] = transfer.table_reports(pretrained)
  files.write_json(out.report, report)
  if evaluate_test:
    report_lib.write_people_files(report, out)
  return TrainResult(model=model, report=report, strategy=strategy,
                     config=config)


# The parser lives in trainer/config.py (no TensorFlow: a fast --help).
flag_parser = config_lib.flag_parser


def config_from_args(args: argparse.Namespace) -> config_lib.TrainerConfig:
  """Builds the TrainerConfig from parsed flags and the spec's model section.

  Args:
    args: parsed by flag_parser() or a parser that extends it; attributes
      that are not TrainerConfig fields are ignored.

  Returns:
    The validated config.

  Raises:
    config.ConfigError: a flag that does not convert, or a config that
      fails validation.
    spec.SpecError, FileNotFoundError: the spec cannot be loaded.
  """
  values = config_lib.values_from_args(args)
  spec = loader.load_spec(values["spec_path"],
                          dict(values.get("spec_env", ())))
  return config_lib.build_config(spec, values)


def run(argv: Optional[List[str]] = None) -> int:
  """Entry point of `embeddings train`.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    0 on success, 2 on a configuration or input error.
  """
  args, unknown = config_lib.flag_parser().parse_known_args(argv)
  if unknown:
    print(f"embeddings train: unknown flags {unknown}", file=sys.stderr)
    return 2
  try:
    config = config_from_args(args)
    if distribute.is_server_task(config.strategy):
      distribute.run_server(data_service_port=config.data_service_port)
      return 0
    result = train(config)
  except (config_lib.ConfigError, spec_lib.SpecError,
          data_lib.PreprocessedDataError, transfer.TransferError,
          backup_lib.BackupMismatchError, FileNotFoundError) as error:
    print(f"embeddings train: {error}", file=sys.stderr)
    return 2
  print(report_lib.summary_line(result.report), flush=True)
  return 0


# The entry point `embeddings train` calls (after parsing its flags with
# config.flag_parser, for a fast --help and usage errors).
main = run


if __name__ == "__main__":
  sys.exit(run())
