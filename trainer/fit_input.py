"""What model.fit reads: the training split under the run's strategy.

`read_training_split` counts the split, averages its label and picks the
input mode (trainer/data.py: streamed TFRecords, or NumPy in memory);
`train_input` turns it into what `model.fit` takes under the strategy,
`validation_dataset` reads the rows each epoch is validated on, and
`eval_dataset` reads a split for the final metrics.

With --validation_fraction the training split is cut in two by a stable
hash of each row (`training_holdout`): the held-out rows validate, the rest
train, in every input mode and under every strategy.

Under parameter servers the workers share each pass over the training
split through the tf.data service (trainer/distribute.py says why): the
coordinator runs its dispatcher (`start_data_service`) and
`shared_passes_fn` builds the workers' dataset function.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from core import layout
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute
from trainer import models
from transforms import spec as spec_lib

# Passes over the training data with their own shuffling seed
# (config.seed + pass); beyond these the passes repeat.
MAX_DISTINCT_PASSES = 16


@dataclasses.dataclass(frozen=True)
class TrainingSplit:
  """The training split as a run reads it.

  Attributes:
    feature_names: the model's inputs.
    num_examples: examples in the split.
    label_mean: their mean label (the model's initial global bias).
    input_mode: "tfrecord" or "numpy".
    arrays: the split in memory for "numpy", else None.
    steps_per_epoch: config.steps_per_epoch, else one pass in batches.
    validation_examples: rows held out of the split to validate on (0
      without --validation_fraction).
  """
  feature_names: Tuple[str, ...]
  num_examples: int
  label_mean: float
  input_mode: str
  arrays: Optional[data_lib.InMemorySplit]
  steps_per_epoch: int
  validation_examples: int = 0


def training_holdout(config: config_lib.TrainerConfig, held_out: bool
                    ) -> Optional[data_lib.Holdout]:
  """The training split's validation cut, or None without one.

  Args:
    config: validation_fraction and seed.
    held_out: the validation side (else the rows that train).

  Returns:
    The Holdout to read the training split with.
  """
  if not config.validation_fraction:
    return None
  return data_lib.Holdout(config.validation_fraction, config.seed, held_out)


def read_training_split(config: config_lib.TrainerConfig,
                        spec: spec_lib.FeatureSpec,
                        strategy: tf.distribute.Strategy) -> TrainingSplit:
  """Sizes the training split and loads it into memory when it fits.

  Args:
    config: the run's configuration (input mode, memory budget, batch).
    spec: the feature spec.
    strategy: the run's strategy (parameter-server workers stream).

  Returns:
    The TrainingSplit.

  Raises:
    data.PreprocessedDataError: the split is missing or empty.
  """
  files = data_lib.list_shards(config.preprocessed_dir, layout.TRAIN)
  names = tuple(models.model_features(config, spec))
  holdout = training_holdout(config, held_out=False)
  num_examples, label_mean = data_lib.split_stats(files, holdout=holdout)
  if num_examples == 0:
    raise data_lib.PreprocessedDataError(
        f"split {layout.TRAIN!r} of {config.preprocessed_dir!r} has no "
        f"examples{' outside the validation rows' if holdout else ''}")
  validation_examples = 0
  if holdout:
    validation_examples, _ = data_lib.split_stats(
        files, holdout=training_holdout(config, held_out=True))
    if not validation_examples:
      raise data_lib.PreprocessedDataError(
          f"validation_fraction {config.validation_fraction}: holds out no "
          f"row of the {num_examples} in split {layout.TRAIN!r}; raise it")
  input_mode = data_lib.choose_input_mode(
      config.input_mode, config.preprocessed_dir, layout.TRAIN, names,
      num_examples, config.max_input_memory_mb << 20,
      streaming_only=distribute.is_parameter_server(strategy))
  arrays = None
  if input_mode == "numpy":
    arrays = data_lib.load_arrays(config.preprocessed_dir, layout.TRAIN,
                                  names, holdout=holdout)
  return TrainingSplit(
      feature_names=names, num_examples=num_examples, label_mean=label_mean,
      input_mode=input_mode, arrays=arrays,
      steps_per_epoch=config.steps_per_epoch or math.ceil(
          num_examples / config.batch_size),
      validation_examples=validation_examples)


def input_options(config: config_lib.TrainerConfig, train: bool
                 ) -> data_lib.InputOptions:
  """How a run reads a split: shuffled and repeated for training only.

  Args:
    config: batch size and shuffling.
    train: the training split (else an evaluated one).

  Returns:
    The InputOptions.
  """
  return data_lib.InputOptions(
      batch_size=config.batch_size, shuffle=config.shuffle and train,
      shuffle_buffer=config.shuffle_buffer, seed=config.seed, repeat=train,
      holdout=training_holdout(config, held_out=False) if train else None)


def start_data_service(config: config_lib.TrainerConfig,
                       strategy: tf.distribute.Strategy,
                       cluster_resolver=None) -> Optional[str]:
  """Starts the tf.data dispatcher of a parameter-server run.

  Args:
    config: data_service_port.
    strategy: the run's strategy.
    cluster_resolver: overrides TF_CONFIG (in-process test clusters).

  Returns:
    The dispatcher's "host:port" under parameter servers, else None.
  """
  if not distribute.is_parameter_server(strategy):
    return None
  return distribute.start_dispatcher(
      distribute.resolve_cluster_spec(cluster_resolver),
      config.data_service_port)


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
        input_options(config, train=True), repeat=False,
        shuffle_shards=False,
        batch_size=input_context.get_per_replica_batch_size(
            config.batch_size))
    dataset = None
    for index in range(passes):
      one_pass = distribute.distributed_epoch(
          data_lib.tfrecord_dataset(
              config.preprocessed_dir, layout.TRAIN,
              dataclasses.replace(options, seed=config.seed + index),
              feature_names),
          dispatcher, f"{job_prefix}-pass{index}")
      dataset = one_pass if dataset is None else dataset.concatenate(one_pass)
    return dataset
  return dataset_fn


def train_input(config: config_lib.TrainerConfig,
                strategy: tf.distribute.Strategy, split: TrainingSplit,
                dispatcher: Optional[str] = None,
                job_prefix: Optional[str] = None):
  """The training input for one model.fit call under the strategy.

  Args:
    config: the run's configuration.
    strategy: the run's strategy.
    split: from read_training_split.
    dispatcher: parameter servers: the tf.data dispatcher's "host:port".
    job_prefix: parameter servers: unique to this fit call.

  Returns:
    A DatasetCreator under parameter servers, else a tf.data.Dataset.
  """
  names = split.feature_names
  if distribute.is_parameter_server(strategy):
    passes_fn = shared_passes_fn(config, names, dispatcher, job_prefix,
                                 min(config.epochs, MAX_DISTINCT_PASSES))
    # fit runs a number of steps, not passes: repeating starts new jobs.
    return keras.utils.experimental.DatasetCreator(
        lambda input_context: passes_fn(input_context).repeat())
  options = input_options(config, train=True)
  if split.arrays is not None:
    dataset = data_lib.numpy_dataset(split.arrays, options, names)
  else:
    dataset = data_lib.tfrecord_dataset(config.preprocessed_dir, layout.TRAIN,
                                        options, names)
  return _shard_by_data(dataset)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
  # Each worker reads every shard and keeps its share of the batches: works
  # for any number of shards (FILE sharding needs >= one file per worker).
  dataset_options = tf.data.Options()
  dataset_options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return dataset.with_options(dataset_options)


def validation_dataset(config: config_lib.TrainerConfig,
                       feature_names: Sequence[str]) -> tf.data.Dataset:
  """The rows each epoch is validated on, read once, in order.

  Args:
    config: validation_fraction, batch size and the preprocessed data.
    feature_names: the model's inputs.

  Returns:
    The training split's held-out rows; without --validation_fraction the
    eval split (config.eval_split).
  """
  holdout = training_holdout(config, held_out=True)
  if holdout is None:
    return eval_dataset(config, feature_names, config.eval_split)
  options = dataclasses.replace(input_options(config, train=False),
                                holdout=holdout)
  return _shard_by_data(data_lib.tfrecord_dataset(
      config.preprocessed_dir, layout.TRAIN, options, feature_names))


def eval_dataset(config: config_lib.TrainerConfig,
                 feature_names: Sequence[str], split: str) -> tf.data.Dataset:
  """A split read once, in order, for validation and the final metrics.

  Args:
    config: batch size and the preprocessed data.
    feature_names: the model's inputs.
    split: the split (config.eval_split).

  Returns:
    Batches of (features, label).
  """
  # Also sharded by data: under MultiWorkerMirroredStrategy fit's validation
  # pass distributes it, and a one-shard split cannot be split by file.
  return _shard_by_data(data_lib.tfrecord_dataset(
      config.preprocessed_dir, split, input_options(config, train=False),
      feature_names))
