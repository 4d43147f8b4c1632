"""`embeddings train`: train a Keras embedding model on preprocessed data.

    embeddings train --spec configs/movielens100k.yaml \
        --preprocessed out/pre --model_dir out/model [--model_type dnn ...]

One TrainerConfig (defaults < the spec's `model:` section < flags) drives
the run: the strategy comes from --strategy and TF_CONFIG; the model and
optimizer are built inside strategy.scope(); training checkpoints every
--checkpoint_every steps and resumes from the last checkpoint when
restarted with the same --model_dir (under parameter servers too, where
the workers share each pass over the data through the tf.data service,
see trainer/distribute.py); TensorBoard logs go to
<model_dir>/logs; the serving SavedModel to <model_dir>/export; the final
JSON report to <model_dir>/report.json (and stdout).

`train(config)` is the same run as a library call (tuning, retraining).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from core import outputs
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute
from trainer import metrics as metrics_lib
from trainer import layers
from trainer import models
from trainer import optimizers
from trainer import serving
from trainer import transfer
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib

REPORT_FILE = "report.json"
BACKUP_SUBDIR = "backup"
LOG_SUBDIR = "logs"
TRAIN_SPLIT = "train"


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


class EpochLogger(keras.callbacks.Callback):
  """Prints one line per epoch: metrics, training examples/s and time.

  Examples/s counts training only: the clock stops when the epoch's
  validation pass begins.
  """

  def __init__(self, epochs: int, batch_size: int, stream=None):
    super().__init__()
    self.epochs = epochs
    self.batch_size = batch_size
    self.stream = stream or sys.stdout
    self.initial_step: Optional[int] = None
    self.history: List[Dict[str, float]] = []
    self._start = 0.0
    self._start_step = 0
    self._train_seconds: Optional[float] = None
    self._train_steps = 0

  def _step(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def on_train_begin(self, logs=None):
    # Runs after BackupAndRestore's restore: the step a resumed run starts at
    # (a resumed parameter-server run calls fit twice; the first one counts).
    if self.initial_step is None:
      self.initial_step = self._step()

  def on_epoch_begin(self, epoch, logs=None):
    self._train_seconds = None
    self._start_step = self._step()
    self._start = time.perf_counter()

  def _stop_clock(self):
    if self._train_seconds is None:
      self._train_seconds = time.perf_counter() - self._start
      self._train_steps = self._step() - self._start_step

  def on_test_begin(self, logs=None):
    self._stop_clock()

  def on_epoch_end(self, epoch, logs=None):
    self._stop_clock()
    seconds, steps = self._train_seconds, self._train_steps
    rate = steps * self.batch_size / seconds if seconds > 0 else 0.0
    logs = {k: float(v) for k, v in (logs or {}).items()}
    self.history.append({**logs, "examples_per_sec": rate,
                         "train_seconds": seconds, "steps": steps})
    metrics = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
    print(f"epoch {epoch + 1}/{self.epochs}: {metrics} "
          f"{rate:,.0f} examples/s ({steps} steps, {seconds:.1f} s)",
          file=self.stream, flush=True)

  @property
  def examples_per_sec(self) -> float:
    """Training examples/s over every epoch this run trained."""
    seconds = sum(epoch["train_seconds"] for epoch in self.history)
    steps = sum(epoch["steps"] for epoch in self.history)
    return steps * self.batch_size / seconds if seconds > 0 else 0.0


class StepCheckpoint(keras.callbacks.Callback):
  """Parameter-server checkpointing every N steps (or per epoch).

  tf_keras's BackupAndRestore saves only at epoch ends under
  ParameterServerStrategy. This callback runs on the coordinator, counts
  the steps fit has scheduled, and each time that count reaches a multiple
  of `every` (every = 0: at each epoch's end) waits for the scheduled steps
  to finish on the workers (ClusterCoordinator.join) before saving the
  model and optimizer, so that the checkpoint's step counter
  (optimizer.iterations, also its number) matches its variables. A restart
  restores it and resumes mid-epoch (see fit_segments).
  """

  def __init__(self, manager: tf.train.CheckpointManager, every: int,
               coordinator):
    super().__init__()
    self.manager = manager
    self.every = every
    self.coordinator = coordinator
    # Batch hooks get the steps' RemoteValues without waiting on them.
    self._supports_tf_logs = True
    self._epoch_start = 0
    self._scheduled = 0

  def _iterations(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def on_epoch_begin(self, epoch, logs=None):
    # fit joins the workers at each epoch's end: nothing is in flight here.
    self._epoch_start = self._scheduled = self._iterations()

  def on_train_batch_end(self, batch, logs=None):
    if not self.every:
      return
    before, self._scheduled = self._scheduled, self._epoch_start + batch + 1
    if before // self.every != self._scheduled // self.every:
      self.save()

  def on_epoch_end(self, epoch, logs=None):
    if not self.every:
      self.save()

  def save(self) -> str:
    """Waits for the scheduled steps, then writes a checkpoint.

    Returns:
      The checkpoint's path.
    """
    self.coordinator.join()
    return self.manager.save(checkpoint_number=self._iterations())


def fit_segments(done_steps: int, steps_per_epoch: int, epochs: int
                ) -> List[Tuple[int, int, int]]:
  """The model.fit calls that train the steps a run has left.

  A run restored mid-epoch first finishes that epoch with a shorter
  fit (its remaining steps), then trains the later epochs in full.

  Args:
    done_steps: steps already trained (the restored optimizer.iterations).
    steps_per_epoch: steps in a full epoch.
    epochs: the planned epochs.

  Returns:
    (initial_epoch, epochs, steps_per_epoch) per fit call, in order; empty
    when nothing is left.
  """
  epoch, step = divmod(done_steps, steps_per_epoch)
  if epoch >= epochs:
    return []
  if not step:
    return [(epoch, epochs, steps_per_epoch)]
  segments = [(epoch, epoch + 1, steps_per_epoch - step)]
  if epoch + 1 < epochs:
    segments.append((epoch + 1, epochs, steps_per_epoch))
  return segments


def _feature_names(model: keras.Model) -> List[str]:
  return list(model.input_names)


def _input_options(config: config_lib.TrainerConfig, train: bool
                  ) -> data_lib.InputOptions:
  return data_lib.InputOptions(
      batch_size=config.batch_size, shuffle=config.shuffle and train,
      shuffle_buffer=config.shuffle_buffer, seed=config.seed, repeat=train)


# Passes over the training data with their own shuffling seed
# (config.seed + pass); beyond these the passes repeat.
MAX_DISTINCT_PASSES = 16


def shared_passes_fn(config: config_lib.TrainerConfig,
                     feature_names: Sequence[str], dispatcher: str,
                     job_prefix: str, passes: int):
  """Parameter-server workers' dataset_fn: passes shared via tf.data service.

  Each pass over the training split is one `distributed_epoch` job named
  `<job_prefix>-pass<k>` (distribute.distributed_epoch): every worker's
  dataset, traced once on the coordinator, joins the same jobs, so the
  workers split each pass between them and read every example once per
  pass. Pass k shuffles with seed config.seed + k: a tf.data service job
  rebuilds its dataset, and one seed would give every pass one order.

  Args:
    config: batch size, shuffling and the preprocessed data.
    feature_names: the model's inputs.
    dispatcher: the tf.data dispatcher's "host:port".
    job_prefix: unique to this fit call (a job name must not be reused).
    passes: how many passes the dataset holds.

  Returns:
    dataset_fn(input_context) -> the passes, one after the other.
  """
  def dataset_fn(input_context):
    # The dispatcher hands shards to the workers as they ask for them; a
    # local shuffle buffer of every shard would let one worker claim all.
    options = dataclasses.replace(
        _input_options(config, train=True), repeat=False,
        shuffle_shards=False,
        batch_size=input_context.get_per_replica_batch_size(
            config.batch_size))
    dataset = None
    for index in range(passes):
      one_pass = distribute.distributed_epoch(
          data_lib.tfrecord_dataset(
              config.preprocessed_dir, TRAIN_SPLIT,
              dataclasses.replace(options, seed=config.seed + index),
              feature_names),
          dispatcher, f"{job_prefix}-pass{index}")
      dataset = one_pass if dataset is None else dataset.concatenate(one_pass)
    return dataset
  return dataset_fn


def _train_input(config, strategy, feature_names, arrays, dispatcher=None,
                 job_prefix=None):
  """The training input for model.fit under the strategy."""
  options = _input_options(config, train=True)
  if distribute.is_parameter_server(strategy):
    passes_fn = shared_passes_fn(config, feature_names, dispatcher,
                                 job_prefix,
                                 min(config.epochs, MAX_DISTINCT_PASSES))
    # fit runs a number of steps, not passes: repeating starts new jobs.
    return keras.utils.experimental.DatasetCreator(
        lambda input_context: passes_fn(input_context).repeat())
  if arrays is not None:
    dataset = data_lib.numpy_dataset(arrays, options, feature_names)
  else:
    dataset = data_lib.tfrecord_dataset(config.preprocessed_dir, TRAIN_SPLIT,
                                        options, feature_names)
  return _shard_by_data(dataset)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
  # Each worker reads every shard and keeps its share of the batches: works
  # for any number of shards (FILE sharding needs >= one file per worker).
  dataset_options = tf.data.Options()
  dataset_options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return dataset.with_options(dataset_options)


def _eval_dataset(config, feature_names, split) -> tf.data.Dataset:
  # Also sharded by data: under MultiWorkerMirroredStrategy fit's validation
  # pass distributes it, and a one-shard split cannot be split by file.
  return _shard_by_data(data_lib.tfrecord_dataset(
      config.preprocessed_dir, split, _input_options(config, train=False),
      feature_names))


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
  staging = os.path.join(config.model_dir, "unpartitioned")
  path = tf.train.Checkpoint(model=model).write(os.path.join(staging, "ckpt"))
  tf.train.Checkpoint(model=copy).read(path).assert_existing_objects_matched()
  tf.io.gfile.rmtree(staging)
  return copy


def load_spec(config: config_lib.TrainerConfig) -> spec_lib.FeatureSpec:
  """Loads the config's spec with its `${VAR}` overrides."""
  return loader.load_spec(config.spec_path, config.env)


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
    data.UnfinishedOutputError: the preprocessing output is missing or
      unfinished (no _SUCCESS).
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
  out_dir = distribute.worker_dir(config.model_dir, strategy)
  tf.io.gfile.makedirs(out_dir)

  train_files = data_lib.list_shards(config.preprocessed_dir, TRAIN_SPLIT)
  names = models.model_features(config, spec)
  num_examples, label_mean = data_lib.split_stats(train_files)
  if num_examples == 0:
    raise data_lib.PreprocessedDataError(
        f"split {TRAIN_SPLIT!r} of {config.preprocessed_dir!r} has no examples")
  input_mode = data_lib.choose_input_mode(
      config.input_mode, config.preprocessed_dir, TRAIN_SPLIT, names,
      num_examples, config.max_input_memory_mb << 20,
      streaming_only=distribute.is_parameter_server(strategy))
  arrays = None
  if input_mode == "numpy":
    arrays = data_lib.load_arrays(config.preprocessed_dir, TRAIN_SPLIT, names)
  steps_per_epoch = config.steps_per_epoch or math.ceil(
      num_examples / config.batch_size)

  # The spec's `from_checkpoint` tables; tables passed in (warm start) win.
  pretrained = transfer.pretrained_for_training(config, spec, infos,
                                                pretrained)
  with strategy.scope():
    model = models.build_model(config, spec, infos, label_mean=label_mean,
                               pretrained=pretrained)
    optimizer = optimizers.make_optimizer(
        config.optimizer, config.learning_rate, config.learning_rate_decay,
        steps_per_epoch)
    models.compile_model(model, config, spec, optimizer)

  logger = EpochLogger(config.epochs, config.batch_size)
  callbacks: List[keras.callbacks.Callback] = []
  segments = [(0, config.epochs, steps_per_epoch)]
  dispatcher = None
  if distribute.is_parameter_server(strategy):
    dispatcher = distribute.start_dispatcher(
        distribute.resolve_cluster_spec(cluster_resolver), config.data_service_port)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(config.model_dir, BACKUP_SUBDIR),
        max_to_keep=2)
    if manager.latest_checkpoint:
      # Slots built first so that they are restored now, not on first use.
      with strategy.scope():
        optimizer.build(model.trainable_variables)
      checkpoint.restore(
          manager.latest_checkpoint).assert_existing_objects_matched()
    segments = fit_segments(int(optimizer.iterations.numpy()),
                            steps_per_epoch, config.epochs)
    callbacks.append(StepCheckpoint(
        manager, config.checkpoint_every,
        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)))
  else:
    save_freq = config.checkpoint_every or "epoch"
    callbacks.append(keras.callbacks.BackupAndRestore(
        backup_dir=os.path.join(config.model_dir, BACKUP_SUBDIR),
        save_freq=save_freq))
  callbacks.append(logger)
  callbacks.append(keras.callbacks.TensorBoard(
      log_dir=os.path.join(out_dir, LOG_SUBDIR), update_freq="epoch",
      write_graph=False, profile_batch=0))

  validation = None
  if not distribute.is_parameter_server(strategy):
    validation = _eval_dataset(config, names, config.eval_split)
  fit_started = time.perf_counter()
  run_id = uuid.uuid4().hex[:12]
  for index, (first_epoch, last_epoch, epoch_steps) in enumerate(segments):
    model.fit(_train_input(config, strategy, names, arrays, dispatcher,
                           f"train-{run_id}-fit{index}"),
              epochs=last_epoch, steps_per_epoch=epoch_steps,
              initial_epoch=first_epoch, validation_data=validation,
              callbacks=callbacks, verbose=config.verbose)
  fit_seconds = time.perf_counter() - fit_started
  steps = int(optimizer.iterations.numpy())
  if distribute.is_parameter_server(strategy):
    # Finished: like BackupAndRestore, drop the backup so that a new run in
    # this model_dir starts afresh.
    backup = os.path.join(config.model_dir, BACKUP_SUBDIR)
    if tf.io.gfile.exists(backup):
      tf.io.gfile.rmtree(backup)

  metrics = metrics_lib.evaluate_model(
      model, _eval_dataset(config, names, config.eval_split),
      config.resolve_task(spec))
  export_dir = None
  if config.export:
    exported = model
    if distribute.is_parameter_server(strategy):
      exported = _unpartitioned_copy(model, config, spec, infos, label_mean)
    export_dir = serving.export_saved_model(
        exported, config.preprocessed_dir, spec, serving.export_path(out_dir))
  report = {
      "model_type": config.model_type,
      "task": config.resolve_task(spec),
      "metrics": metrics,
      "eval_split": config.eval_split,
      "train_history": logger.history,
      "steps": steps,
      "resumed_from_step": (steps if logger.initial_step is None
                            else logger.initial_step),
      "planned_steps": config.epochs * steps_per_epoch,
      "epochs": config.epochs,
      "steps_per_epoch": steps_per_epoch,
      "batch_size": config.batch_size,
      "train_examples": num_examples,
      "label_mean": label_mean,
      "examples_per_sec": logger.examples_per_sec,
      "fit_seconds": fit_seconds,
      "wall_time_s": time.perf_counter() - started,
      "model_dir": config.model_dir,
      "export_dir": export_dir,
      "strategy": type(strategy).__name__,
      "input_mode": input_mode,
      "num_replicas": strategy.num_replicas_in_sync,
      "embedding_dims": {
          layer.feature: layer.dim for layer in model.layers
          if isinstance(layer, layers.EmbeddingTable)
          and layer.name.startswith(layers.EMBEDDING_LAYER_PREFIX)},
      "config": dataclasses.asdict(config),
  }
  with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE), "w") as handle:
    handle.write(json.dumps(report, indent=2, default=str))
  return TrainResult(model=model, report=report, strategy=strategy,
                     config=config)


def flag_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings train",
      description="Train a Keras embedding model on preprocessed data.")
  parser.add_argument("--spec", required=True, help="the YAML feature spec")
  parser.add_argument("--preprocessed", required=True,
                      help="output directory of `embeddings preprocess`")
  parser.add_argument("--model_dir", required=True,
                      help="checkpoints, logs, SavedModel and report")
  parser.add_argument("--env", action="append", default=[],
                      metavar="NAME=VALUE",
                      help="override a ${VAR} of the spec (repeatable)")
  parser.add_argument("--model_type", choices=config_lib.MODEL_TYPES)
  parser.add_argument("--task", choices=spec_lib.TASKS)
  parser.add_argument("--user_feature")
  parser.add_argument("--item_feature")
  parser.add_argument("--features", help="dnn tower features, comma-separated")
  parser.add_argument("--user_side_features",
                      help="features added to the user vector, comma-separated")
  parser.add_argument("--item_side_features",
                      help="features added to the item vector, comma-separated")
  parser.add_argument("--embedding_dims", help="feature=dim[,feature=dim]")
  parser.add_argument("--mf_dim", type=int)
  parser.add_argument("--hidden_units", help="e.g. 64,32")
  parser.add_argument("--dropout", type=float)
  parser.add_argument("--hybrid", action=argparse.BooleanOptionalAction,
                      default=None)
  for name in ("l2_user", "l2_item", "l2_embedding", "l2_bias", "l2_dense",
               "learning_rate", "learning_rate_decay"):
    parser.add_argument(f"--{name}", type=float)
  parser.add_argument("--optimizer", choices=config_lib.OPTIMIZERS)
  for name in ("batch_size", "epochs", "steps_per_epoch", "shuffle_buffer",
               "seed", "checkpoint_every", "data_service_port",
               "min_shard_bytes", "max_shards",
               "max_input_memory_mb", "verbose"):
    parser.add_argument(f"--{name}", type=int)
  parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction,
                      default=None)
  parser.add_argument("--clip_predictions",
                      action=argparse.BooleanOptionalAction, default=None)
  parser.add_argument("--export", action=argparse.BooleanOptionalAction,
                      default=None)
  parser.add_argument("--input_mode", choices=config_lib.INPUT_MODES)
  parser.add_argument("--strategy", choices=config_lib.STRATEGIES)
  parser.add_argument("--eval_split")
  return parser


PATH_FLAGS = ("spec", "preprocessed", "model_dir", "env")


def config_from_args(args: argparse.Namespace) -> config_lib.TrainerConfig:
  """Builds the TrainerConfig from parsed flags and the spec's model section.

  Args:
    args: from the `embeddings train` parser.

  Returns:
    The validated config.
  """
  env = spec_lib.parse_env_flags(args.env)
  spec = loader.load_spec(args.spec, dict(env))
  flags = {k: v for k, v in vars(args).items() if k not in PATH_FLAGS}
  return config_lib.build_config(
      spec, flags, preprocessed_dir=args.preprocessed,
      model_dir=args.model_dir, spec_path=args.spec, spec_env=env)


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
