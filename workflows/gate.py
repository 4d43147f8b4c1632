"""The promotion gate: candidate and current scored on the same held-out rows.

The rows are the window's raw eval split as the preprocessing job wrote it
(`raw_eval`); each model reads them through its own raw serving signature,
so each sees them through its own vocabulary.
"""

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from core import layout
from trainer import metrics as metrics_lib
from transforms import spec as spec_lib
from workflows.registry import RetrainError


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
  for records in dataset.take(max_rows).batch(4096):
    examples.extend(records.numpy())
    labels.append(tf.io.parse_example(records, label_spec)[
        spec.label.column].numpy())
  if not examples:
    raise RetrainError("the window has no held-out (eval) rows to compare "
                       f"the models on ({pattern!r} is empty)")
  return (np.array(examples, dtype=object),
          np.concatenate(labels).astype(np.float64))


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
  return verdict, (f"candidate {metric} {candidate:.4f} vs current "
                   f"{current:.4f}: worse by {worse_by:+.4f}, tolerance "
                   f"{tolerance:+.4f}")
