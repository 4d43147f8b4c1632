"""preprocessing_fn: raw joined columns -> model-ready ids, for tf.Transform.

Pure and top-level: no I/O; the pipeline binds a spec with
`functools.partial(preprocessing_fn, spec=spec)` (picklable, so it ships to
Dataflow and Flink workers). Each feature's transform is its kind's
(transforms/kinds/); this function runs them in spec order, handing each
cross what its members contribute.

Output contract (what the trainer reads):
  * a single-valued categorical feature -> int64 [batch] ids in [0, size);
  * a multi-valued one (tokens, or a cross with a tokens member) -> int64
    SparseTensor [batch, None];
  * numeric -> float32 [batch] z-scores;
  * LABEL_KEY -> float32 [batch].
"""

from typing import Any, Dict, Mapping

import tensorflow as tf

from transforms import spec as spec_lib


def preprocessing_fn(inputs: Mapping[str, tf.Tensor],
                     spec: spec_lib.FeatureSpec) -> Dict[str, Any]:
  """Maps raw columns to ids, z-scores and the label, per the spec.

  Args:
    inputs: raw column name -> dense [batch] tensor (string, int64 or
      float32), as declared by `spec.raw_column_types()`.
    spec: the feature spec.

  Returns:
    Transformed feature name -> tensor (see the module docstring).
  """
  outputs: Dict[str, Any] = {}
  # What each feature contributes to a cross (see transforms/kinds/cross.py).
  members: Dict[str, Any] = {}
  for feature in spec.features:
    outputs[feature.name], members[feature.name] = feature.kind.transform(
        feature, inputs, members, spec)
  outputs[spec_lib.LABEL_KEY] = tf.cast(inputs[spec.label.column], tf.float32)
  return outputs
