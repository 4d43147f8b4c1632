"""Keras callbacks of a training run, and how a resumed run is split.

* EpochLogger prints one line per epoch and keeps the report's history.
* StepCheckpoint checkpoints a parameter-server run every N steps, which
  Keras's BackupAndRestore does only at epoch ends under that strategy.
* fit_segments plans the model.fit calls that finish a run restored
  mid-epoch.
* run_callbacks puts them together for a run (with BackupAndRestore and
  TensorBoard), restoring a parameter-server run's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from core import layout
from trainer import config as config_lib
from trainer import distribute


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


@dataclasses.dataclass
class RunCallbacks:
  """A run's callbacks and the fit calls that train its remaining steps.

  Attributes:
    callbacks: for every model.fit call of the run.
    logger: the EpochLogger among them (the report's history).
    segments: (initial_epoch, epochs, steps_per_epoch) per fit call.
  """
  callbacks: List[keras.callbacks.Callback]
  logger: EpochLogger
  segments: List[Tuple[int, int, int]]


def run_callbacks(config: config_lib.TrainerConfig, model: keras.Model,
                  optimizer: keras.optimizers.Optimizer,
                  strategy: tf.distribute.Strategy, steps_per_epoch: int,
                  out: layout.ModelLayout) -> RunCallbacks:
  """Checkpointing, logging and TensorBoard for a run; restores a backup.

  The checkpoints go to model_dir's backup (shared by every worker), the
  TensorBoard logs to this process's `out`. Under parameter servers a
  checkpoint left by a killed run is restored here, and the run's fit
  calls start from its step; elsewhere BackupAndRestore restores inside
  fit.

  Args:
    config: the run's configuration (model_dir, epochs, checkpoint_every).
    model: the compiled model.
    optimizer: its optimizer.
    strategy: the run's strategy.
    steps_per_epoch: steps in a full epoch.
    out: where this process writes (distribute.worker_layout).

  Returns:
    The RunCallbacks.
  """
  backup = layout.ModelLayout(config.model_dir).backup
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
  logger = EpochLogger(config.epochs, config.batch_size)
  board = keras.callbacks.TensorBoard(log_dir=out.logs, update_freq="epoch",
                                      write_graph=False, profile_batch=0)
  return RunCallbacks(callbacks=[saver, logger, board], logger=logger,
                      segments=segments)
