"""`embeddings train`: train a Keras embedding model on preprocessed data.

    embeddings train --spec configs/movielens100k.yaml \
        --preprocessed out/pre --model_dir out/model [--model_type dnn ...]

One TrainerConfig (defaults < the spec's `model:` section < flags; the
flags are generated from its fields) drives the run: the strategy comes
from --strategy and TF_CONFIG; the model and optimizer are built inside
strategy.scope(); training checkpoints every --checkpoint_every steps and
resumes from the last checkpoint when restarted with the same --model_dir
(under parameter servers too, where the workers share each pass over the
data through the tf.data service, see trainer/distribute.py). Where the
run writes is core.layout.ModelLayout: TensorBoard logs, the serving
SavedModel and the JSON report (also printed).

`train(config)` is the same run as a library call (tuning, retraining).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from core import files
from core import layout
from core import outputs
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute
from trainer import fit_input
from trainer import layers
from trainer import metrics as metrics_lib
from trainer import models
from trainer import optimizers
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
  """Runs the planned fit calls; returns their seconds."""
  validation = None
  if not distribute.is_parameter_server(strategy):
    validation = fit_input.eval_dataset(config, split.feature_names,
                                        config.eval_split)
  started = time.perf_counter()
  run_id = uuid.uuid4().hex[:12]
  for index, (first_epoch, last_epoch, epoch_steps) in enumerate(
      run.segments):
    model.fit(fit_input.train_input(config, strategy, split, dispatcher,
                                    f"train-{run_id}-fit{index}"),
              epochs=last_epoch, steps_per_epoch=epoch_steps,
              initial_epoch=first_epoch, validation_data=validation,
              callbacks=run.callbacks, verbose=config.verbose)
  if distribute.is_parameter_server(strategy):
    # Finished: like BackupAndRestore, drop the backup so that a new run in
    # this model_dir starts afresh.
    files.remove_tree(layout.ModelLayout(config.model_dir).backup)
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


def _report(config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
            strategy: tf.distribute.Strategy, model: keras.Model,
            split: fit_input.TrainingSplit, logger: callbacks_lib.EpochLogger,
            metrics: Mapping[str, float], fit_seconds: float,
            export_dir: Optional[str], started: float) -> Dict[str, Any]:
  """The run's report.json content (also TrainResult.report)."""
  steps = int(model.optimizer.iterations.numpy())
  return {
      "model_type": config.model_type,
      "task": config.resolve_task(spec),
      "metrics": metrics,
      "eval_split": config.eval_split,
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
      "config": dataclasses.asdict(config),
  }


def train(config: config_lib.TrainerConfig,
          spec: Optional[spec_lib.FeatureSpec] = None,
          pretrained: Optional[Mapping[str, layers.PretrainedTable]] = None,
          cluster_resolver=None) -> TrainResult:
  """Trains, evaluates, exports and reports one model.

  Args:
    config: the run's configuration.
    spec: the feature spec (default: loaded from config.spec_path).
    pretrained: feature -> initial table (warm start, frozen transfer).
    cluster_resolver: overrides TF_CONFIG for multi-worker or parameter
      server strategies (in-process test clusters).

  Returns:
    The TrainResult.

  Raises:
    core.outputs.UnfinishedOutputError: the preprocessing output is
      missing or unfinished (no _SUCCESS).
    data.PreprocessedDataError: a split or feature is missing.
    config.ConfigError: the config does not fit the spec or data.
  """
  started = time.perf_counter()
  outputs.require_finished_output(config.preprocessed_dir)
  spec = spec or load_spec(config)
  infos = feature_info_lib.read_feature_info(config.preprocessed_dir)
  config.resolve_user_item(spec)
  keras.utils.set_random_seed(config.seed)
  strategy = distribute.build_strategy(config, cluster_resolver)
  out = distribute.worker_layout(config.model_dir, strategy)
  tf.io.gfile.makedirs(out.root)

  split = fit_input.read_training_split(config, spec, strategy)
  model, optimizer = _build(config, spec, infos, strategy, split, pretrained)
  dispatcher = fit_input.start_data_service(config, strategy,
                                            cluster_resolver)
  run = callbacks_lib.run_callbacks(config, model, optimizer, strategy,
                                    split.steps_per_epoch, out)
  fit_seconds = _fit(config, model, strategy, split, run, dispatcher)
  metrics = metrics_lib.evaluate_model(
      model, fit_input.eval_dataset(config, split.feature_names,
                                    config.eval_split),
      config.resolve_task(spec))
  export_dir = _export(config, model, spec, infos, strategy, split.label_mean,
                       out)
  report = _report(config, spec, strategy, model, split, run.logger,
                   metrics=metrics, fit_seconds=fit_seconds,
                   export_dir=export_dir, started=started)
  files.write_json(out.report, report)
  return TrainResult(model=model, report=report, strategy=strategy,
                     config=config)


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings train` flags: one per TrainerConfig field.

  Returns:
    The parser; every flag but --spec, --preprocessed and --model_dir
    defaults to unset (the spec's `model:` section or the field's default
    applies). Commands that extend it (`embeddings tune`) add their own.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings train",
      description="Train a Keras embedding model on preprocessed data.")
  config_lib.add_flags(parser)
  return parser


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
  args, unknown = flag_parser().parse_known_args(argv)
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
          FileNotFoundError) as error:
    print(f"embeddings train: {error}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in result.report.items()
                    if k not in ("config", "train_history")}, indent=2,
                   default=str), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(run())
