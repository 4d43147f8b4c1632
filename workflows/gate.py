"""The promotion gate: candidate and current scored on the same held-out rows.

The rows are the window's raw eval split as the preprocessing job wrote it
(`raw_eval`); each model reads them through its own raw serving signature,
so each sees them through its own vocabulary.

Neither model may have trained on them. The window's eval split alone does
not promise that for the current model: it trained on an earlier window,
whose train split holds rows of the new eval split whenever windows overlap
and the rows are not split alike (an explicit `eval_path`, a changed split
seed, fraction or key, a backfilled older window). So `unseen_rows` drops
every held-out row whose key (the models' user and item ids) is in a
model's own train split, each model's ids coming from its own transform
graph.
"""

from typing import Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from core import layout
from trainer import data as data_lib
from trainer import metrics as metrics_lib
from trainer import serving
from transforms import spec as spec_lib
from workflows.registry import RetrainError

_BATCH = 4096


def holdout_examples(preprocessed_dir: str, spec: spec_lib.FeatureSpec,
                     max_rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """The window's raw eval rows, as the preprocessing job wrote them.

  Args:
    preprocessed_dir: the window's preprocessing output (with raw_eval).
    spec: its feature spec (the label column and its type).
    max_rows: read at most this many rows.

  Returns:
    (serialized raw tf.Examples [n], float labels [n]).

  Raises:
    RetrainError: the output has no raw eval rows.
  """
  pattern = layout.PreprocessedLayout(preprocessed_dir).shard_pattern(
      layout.RAW_EVAL)
  shards = sorted(tf.io.gfile.glob(pattern))
  label_type = tf.int64 if spec.raw_column_types()[
      spec.label.column] == "int" else tf.float32
  label_spec = {spec.label.column: tf.io.FixedLenFeature([], label_type)}
  examples, labels = [], []
  dataset = tf.data.TFRecordDataset(shards, compression_type="GZIP")
  for records in dataset.take(max_rows).batch(_BATCH):
    examples.extend(records.numpy())
    labels.append(tf.io.parse_example(records, label_spec)[
        spec.label.column].numpy())
  if not examples:
    raise RetrainError("the window has no held-out (eval) rows to compare "
                       f"the models on ({pattern!r} is empty)")
  return (np.array(examples, dtype=object),
          np.concatenate(labels).astype(np.float64))


def _key_rows(columns: Sequence[np.ndarray]) -> List[Tuple[int, ...]]:
  return list(zip(*(column.tolist() for column in columns)))


def trained_keys(preprocessed_dir: str, features: Sequence[str]
                ) -> Set[Tuple[int, ...]]:
  """The key of every row a model trained on.

  Args:
    preprocessed_dir: the preprocessing output the model trained on.
    features: single-valued features whose ids together name a row.

  Returns:
    The (id, ...) tuples of its train split. The whole split is held in
    memory.
  """
  arrays = data_lib.load_arrays(preprocessed_dir, layout.TRAIN,
                                list(features))
  return set(_key_rows([arrays.dense[name] for name in features]))


def holdout_keys(preprocessed_dir: str, spec: spec_lib.FeatureSpec,
                 examples: np.ndarray, features: Sequence[str]
                ) -> List[Tuple[int, ...]]:
  """The key of each raw held-out row, as one model's transform sees it.

  Args:
    preprocessed_dir: the preprocessing output the model trained on (its
      transform graph).
    spec: the feature spec (the raw columns to parse).
    examples: serialized raw tf.Examples.
    features: as in trained_keys.

  Returns:
    One (id, ...) tuple per example.
  """
  layer = tft.TFTransformOutput(preprocessed_dir).transform_features_layer()
  raw_spec = serving.raw_feature_spec(spec)
  keys: List[Tuple[int, ...]] = []
  for start in range(0, len(examples), _BATCH):
    transformed = layer(tf.io.parse_example(
        tf.constant(examples[start:start + _BATCH]), raw_spec))
    keys.extend(_key_rows([transformed[name].numpy() for name in features]))
  return keys


def unseen_rows(examples: np.ndarray, spec: spec_lib.FeatureSpec,
                trained_on: Iterable[str], features: Sequence[str]
               ) -> np.ndarray:
  """Which held-out rows no model trained on.

  Args:
    examples: serialized raw tf.Examples (holdout_examples).
    spec: the feature spec.
    trained_on: the preprocessing output of each model (candidate,
      current).
    features: single-valued features whose ids name a row: a rating is
      its (user, item) pair.

  Returns:
    A boolean mask over examples, True where the row's key is in no
    model's train split.
  """
  unseen = np.ones(len(examples), dtype=bool)
  for preprocessed_dir in trained_on:
    seen = trained_keys(preprocessed_dir, features)
    unseen &= np.array([key not in seen for key in holdout_keys(
        preprocessed_dir, spec, examples, features)], dtype=bool)
  return unseen


def gate(metric: str, candidate: float, current: Optional[float],
         tolerance: float) -> Tuple[bool, str]:
  """Whether a candidate may replace the current model.

  Args:
    metric: the compared metric (trainer/metrics.py says which way it
      improves).
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
  worse_by = (candidate - current if metrics_lib.lower_is_better(metric)
              else current - candidate)
  verdict = worse_by <= tolerance
  change = (f"worse by {worse_by:.4f}" if worse_by > 0
            else f"better by {abs(worse_by):.4f}")
  # The tolerance matters to a reader when the candidate is worse, or
  # when a negative tolerance demands a gain.
  if worse_by > 0 or tolerance < 0:
    change += f" (tolerance {tolerance:.4f})"
  return verdict, (f"candidate {metric} {candidate:.4f} vs current "
                   f"{current:.4f}: {change}")
