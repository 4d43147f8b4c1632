"""Keras callbacks of a training run, and how a resumed run is split.

* EpochLogger prints one line per epoch and keeps the report's history.
* EarlyStopping stops when the validation metric has not improved for
  --early_stopping_patience epochs and gives the model its best epoch's
  weights back; it keeps its state beside the backup, so a killed run
  resumes with the epochs it had already seen.
* StepCheckpoint checkpoints a parameter-server run every N steps, which
  Keras's BackupAndRestore does only at epoch ends under that strategy.
* fit_segments plans the model.fit calls that finish a run restored
  mid-epoch.
* run_callbacks puts them together for a run (with BackupAndRestore and
  TensorBoard), restoring a parameter-server run's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
import time
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core import files
from core import layout
from trainer import config as config_lib
from trainer import distribute
from trainer import metrics as metrics_lib
from trainer import models

# Keras's prefix of the validation pass's logs.
VALIDATION_PREFIX = "val_"
PENALTY = "l2"


def with_penalty(logs: Mapping[str, float], data_loss: str
                ) -> Dict[str, float]:
  """Epoch logs with the L2 penalty beside the loss it is part of.

  Keras's loss is the data loss (the `data_loss` metric) plus the L2
  penalty, on the training and on the validation rows alike.

  Args:
    logs: an epoch's logs (loss, metrics, their val_ twins).
    data_loss: the metric that is the loss before the penalty ("mse").

  Returns:
    The logs plus `l2` (and `val_l2`) = loss - data loss, where both are
    there.
  """
  result = dict(logs)
  for prefix in ("", VALIDATION_PREFIX):
    loss, data = logs.get(prefix + "loss"), logs.get(prefix + data_loss)
    if loss is not None and data is not None:
      result[prefix + PENALTY] = max(loss - data, 0.0)
  return result


def format_metrics(logs: Mapping[str, float], prefix: str, data_loss: str
                  ) -> str:
  """One side of an epoch line: `loss 0.83 = mse 0.80 + L2 0.03, rmse ...`.

  Args:
    logs: from with_penalty.
    prefix: "" (training) or "val_".
    data_loss: the metric that is the loss before the penalty.

  Returns:
    The loss spelled out as data loss + penalty, then the other metrics.
  """
  names = sorted(key[len(prefix):] for key in logs if key.startswith(prefix)
                 and (prefix or not key.startswith(VALIDATION_PREFIX)))
  parts = []
  if prefix + PENALTY in logs:
    parts.append(f"loss {logs[prefix + 'loss']:.4f} = {data_loss} "
                 f"{logs[prefix + data_loss]:.4f} + L2 "
                 f"{logs[prefix + PENALTY]:.4f}")
    names = [name for name in names
             if name not in ("loss", data_loss, PENALTY)]
  return ", ".join(parts + [f"{name} {logs[prefix + name]:.4f}"
                            for name in names])


class EpochLogger(keras.callbacks.Callback):
  """Prints one line per epoch: metrics, training examples/s and time.

  The line names the rows it validates on ("validation": rows held out of
  the training split; "eval split" without --validation_fraction) and
  spells the loss out as data loss + L2 penalty. Examples/s counts
  training only: the clock stops when the epoch's validation pass begins.
  """

  def __init__(self, epochs: int, batch_size: int, data_loss: str = "mse",
               validation_name: str = "validation", stream=None):
    super().__init__()
    self.epochs = epochs
    self.batch_size = batch_size
    self.data_loss = data_loss
    self.validation_name = validation_name
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
    logs = with_penalty({k: float(v) for k, v in (logs or {}).items()},
                        self.data_loss)
    self.history.append({**logs, "epoch": epoch + 1, "examples_per_sec": rate,
                         "train_seconds": seconds, "steps": steps})
    line = f"epoch {epoch + 1}/{self.epochs}: train " + format_metrics(
        logs, "", self.data_loss)
    if any(key.startswith(VALIDATION_PREFIX) for key in logs):
      line += f" | {self.validation_name} " + format_metrics(
          logs, VALIDATION_PREFIX, self.data_loss)
    print(f"{line} | {rate:,.0f} examples/s ({steps} steps, {seconds:.1f} s)",
          file=self.stream, flush=True)

  @property
  def examples_per_sec(self) -> float:
    """Training examples/s over every epoch this run trained."""
    seconds = sum(epoch["train_seconds"] for epoch in self.history)
    steps = sum(epoch["steps"] for epoch in self.history)
    return steps * self.batch_size / seconds if seconds > 0 else 0.0


class EarlyStopping(keras.callbacks.Callback):
  """Stops when the validation metric stalls; keeps the best epoch's weights.

  Each epoch's value of `monitor` is kept by epoch number, so an epoch
  trained again after a resume replaces its first value. A new best epoch's
  weights are kept in memory and, by the process that writes the run's
  files, in the backup beside the checkpoints (with the values so far), so
  a killed run resumes knowing its best epoch. restore_best() gives the
  model those weights back.
  """

  def __init__(self, metric: str, patience: int, out: layout.ModelLayout,
               writes: bool):
    """Creates the callback.

    Args:
      metric: the metric selected by ("rmse"); its `val_` log is watched.
      patience: epochs without improvement before stopping (> 0).
      out: the run's ModelLayout (the backup's state files).
      writes: this process keeps the state in the backup.
    """
    super().__init__()
    self.metric = metric
    self.monitor = VALIDATION_PREFIX + metric
    self.patience = patience
    self.out = out
    self.writes = writes
    self.values: Dict[int, float] = {}
    self.best_weights: Optional[List[np.ndarray]] = None
    self.stopped_epoch: Optional[int] = None

  @property
  def best_epoch(self) -> Optional[int]:
    """The epoch (1-based) with the best value; the earliest on ties."""
    lower = metrics_lib.lower_is_better(self.metric)
    best = None
    for epoch in sorted(self.values):
      value = self.values[epoch]
      if math.isnan(value):
        continue
      if best is None or (value < self.values[best] if lower
                          else value > self.values[best]):
        best = epoch
    return best

  def resume(self) -> None:
    """Reads the state a killed run left in the backup, if any."""
    state = files.read_json(self.out.backup_best_state)
    if not state or not files.exists(self.out.backup_best_weights):
      return
    self.values = {int(epoch): float(value)
                   for epoch, value in state["values"].items()}
    with np.load(io.BytesIO(files.read_bytes(
        self.out.backup_best_weights))) as saved:
      self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None:
      raise KeyError(f"early stopping watches {self.monitor!r}, but the "
                     f"epoch's logs hold {sorted(logs or {})}")
    number = epoch + 1
    self.values = {e: v for e, v in self.values.items() if e < number}
    self.values[number] = float(value)
    if self.best_epoch == number:
      self.best_weights = self.model.get_weights()
      if self.writes:
        self._save_weights()
    if self.writes:
      files.write_json_atomic(self.out.backup_best_state,
                              {"metric": self.monitor,
                               "values": {str(e): v
                                          for e, v in self.values.items()}})
    best = self.best_epoch
    if best is not None and number - best >= self.patience:
      self.stopped_epoch = number
      self.model.stop_training = True

  def _save_weights(self) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, *self.best_weights)
    # Written aside, then renamed: a kill mid-write leaves the old weights.
    temporary = self.out.backup_best_weights + ".tmp"
    files.write_bytes(temporary, buffer.getvalue())
    tf.io.gfile.rename(temporary, self.out.backup_best_weights,
                       overwrite=True)

  def restore_best(self) -> Optional[int]:
    """Gives the model the best epoch's weights.

    Returns:
      The best epoch, or None when no epoch was validated.
    """
    if self.best_weights is not None:
      self.model.set_weights(self.best_weights)
    return self.best_epoch


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


@dataclasses.dataclass
class RunCallbacks:
  """A run's callbacks and the fit calls that train its remaining steps.

  Attributes:
    callbacks: for every model.fit call of the run.
    logger: the EpochLogger among them (the report's history).
    segments: (initial_epoch, epochs, steps_per_epoch) per fit call.
    early_stopping: the EarlyStopping among them, with a patience.
  """
  callbacks: List[keras.callbacks.Callback]
  logger: EpochLogger
  segments: List[Tuple[int, int, int]]
  early_stopping: Optional[EarlyStopping] = None


def run_callbacks(config: config_lib.TrainerConfig, model: keras.Model,
                  optimizer: keras.optimizers.Optimizer,
                  strategy: tf.distribute.Strategy, steps_per_epoch: int,
                  out: layout.ModelLayout, task: str) -> RunCallbacks:
  """Checkpointing, logging, early stopping and TensorBoard for a run.

  The checkpoints go to model_dir's backup (shared by every worker), the
  TensorBoard logs to this process's `out`. Under parameter servers a
  checkpoint left by a killed run is restored here, and the run's fit
  calls start from its step; elsewhere BackupAndRestore restores inside
  fit.

  Args:
    config: the run's configuration (model_dir, epochs, checkpoint_every,
      early stopping).
    model: the compiled model.
    optimizer: its optimizer.
    strategy: the run's strategy.
    steps_per_epoch: steps in a full epoch.
    out: where this process writes (distribute.worker_layout).
    task: "regression" or "binary" (the metric early stopping watches).

  Returns:
    The RunCallbacks.
  """
  run_dir = layout.ModelLayout(config.model_dir)
  backup = run_dir.backup
  segments = [(0, config.epochs, steps_per_epoch)]
  if distribute.is_parameter_server(strategy):
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, backup, max_to_keep=2)
    if manager.latest_checkpoint:
      # Slots built first so that they are restored now, not on first use.
      with strategy.scope():
        optimizer.build(model.trainable_variables)
      checkpoint.restore(
          manager.latest_checkpoint).assert_existing_objects_matched()
    segments = fit_segments(int(optimizer.iterations.numpy()),
                            steps_per_epoch, config.epochs)
    saver = StepCheckpoint(
        manager, config.checkpoint_every,
        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy))
  else:
    saver = keras.callbacks.BackupAndRestore(
        backup_dir=backup, save_freq=config.checkpoint_every or "epoch")
  logger = EpochLogger(
      config.epochs, config.batch_size, models.DATA_LOSS_METRIC[task],
      "validation" if config.validation_fraction else "eval split")
  board = keras.callbacks.TensorBoard(log_dir=out.logs, update_freq="epoch",
                                      write_graph=False, profile_batch=0)
  early_stopping = None
  callbacks: List[keras.callbacks.Callback] = [saver, logger, board]
  if config.early_stopping_patience:
    early_stopping = EarlyStopping(
        metrics_lib.default_metric(task), config.early_stopping_patience,
        run_dir, writes=distribute.is_chief(strategy))
    # State is only there beside a backup this run resumes (backup.py
    # removes any other).
    early_stopping.resume()
    # Ahead of the saver: an epoch's state is kept before its checkpoint,
    # so a resume never skips an epoch the state lacks.
    callbacks.insert(0, early_stopping)
  return RunCallbacks(callbacks=callbacks, logger=logger, segments=segments,
                      early_stopping=early_stopping)
