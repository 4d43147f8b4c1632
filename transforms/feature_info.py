"""Final table sizes and embedding dimensions, resolved after analysis.

The preprocessing pipeline writes `feature_info.json` into the transform
output directory; the trainer and `embeddings tune` read it back, so nobody
recomputes a vocabulary size.
"""

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple, Union

import tensorflow as tf
import tensorflow_transform as tft

from transforms import spec as spec_lib

FEATURE_INFO_FILE = "feature_info.json"


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """What the trainer needs to build one feature's input.

  Attributes:
    name: the feature (and transformed column) name.
    kind: the spec kind.
    size: table rows (vocabulary + OOV buckets, buckets, hash size); 0 for
      numeric features.
    vocabulary_size: learned vocabulary entries without OOV rows, else None.
    num_oov_buckets: OOV rows after the vocabulary (learned kinds), else 0.
    embedding_dim: the dimension to train with (explicit or fourth-root);
      0 for numeric features.
    dim_range: the (low, high) range a tuner searches, about 0.6x..1.4x the
      fourth-root rule's dimension (also when embedding_dim is explicit).
    multivalent: True when rows carry a variable number of ids (sparse).
    vocabulary_file: the vocabulary's file name under transform_fn assets,
      or None.
  """
  name: str
  kind: str
  size: int
  vocabulary_size: Optional[int]
  num_oov_buckets: int
  embedding_dim: int
  dim_range: Tuple[int, int]
  multivalent: bool
  vocabulary_file: Optional[str]


def learned_vocabulary_sizes(
    spec: spec_lib.FeatureSpec,
    transform_output: Union[str, tft.TFTransformOutput]) -> Dict[str, int]:
  """Reads every learned vocabulary's size from a tf.Transform output.

  Args:
    spec: the feature spec the transform output was made with.
    transform_output: the directory holding transform_fn/, or a
      TFTransformOutput.

  Returns:
    Feature name -> vocabulary entries (lines of its vocabulary file, no OOV
    rows), for every feature with a learned vocabulary.
  """
  if isinstance(transform_output, str):
    transform_output = tft.TFTransformOutput(transform_output)
  return {feature.name: int(transform_output.vocabulary_size_by_name(
      feature.name)) for feature in spec.features
          if feature.has_learned_vocabulary}


def resolve_feature_info(spec: spec_lib.FeatureSpec,
                         vocabulary_sizes: Dict[str, int]
                        ) -> Dict[str, FeatureInfo]:
  """Combines the spec with analyzed vocabulary sizes.

  Args:
    spec: the feature spec.
    vocabulary_sizes: feature name -> learned vocabulary entries (no OOV
      rows), for every feature with a learned vocabulary.

  Returns:
    Feature name -> FeatureInfo, in spec order.

  Raises:
    ValueError: a learned vocabulary's size is missing or negative.
  """
  missing = [f.name for f in spec.features
             if f.has_learned_vocabulary and f.name not in vocabulary_sizes]
  if missing:
    raise ValueError(f"no vocabulary size given for feature(s) {missing}; "
                     f"read them with learned_vocabulary_sizes()")
  infos = {}
  for feature in spec.features:
    if feature.kind == spec_lib.NUMERIC:
      infos[feature.name] = FeatureInfo(
          name=feature.name, kind=feature.kind, size=0, vocabulary_size=None,
          num_oov_buckets=0, embedding_dim=0, dim_range=(0, 0),
          multivalent=False, vocabulary_file=None)
      continue
    if feature.has_learned_vocabulary:
      vocabulary_size = int(vocabulary_sizes[feature.name])
      if vocabulary_size < 0:
        raise ValueError(f"feature {feature.name!r}: vocabulary size "
                         f"{vocabulary_size} is negative")
      size = vocabulary_size + feature.num_oov_buckets
      oov = feature.num_oov_buckets
    else:
      vocabulary_size, size, oov = None, feature.static_size(), 0
    auto_dim = spec_lib.auto_embedding_dim(size)
    infos[feature.name] = FeatureInfo(
        name=feature.name, kind=feature.kind, size=size,
        vocabulary_size=vocabulary_size, num_oov_buckets=oov,
        embedding_dim=feature.embedding_dim or auto_dim,
        dim_range=spec_lib.embedding_dim_range(auto_dim),
        multivalent=spec.is_multivalent(feature.name),
        vocabulary_file=feature.name if feature.has_learned_vocabulary else None)
  return infos


def write_feature_info(transform_dir: str,
                       infos: Dict[str, FeatureInfo]) -> str:
  """Writes feature_info.json into a transform output directory.

  Args:
    transform_dir: the directory holding transform_fn/.
    infos: from resolve_feature_info.

  Returns:
    The written file's path.
  """
  path = os.path.join(transform_dir, FEATURE_INFO_FILE)
  payload = {name: dataclasses.asdict(info) for name, info in infos.items()}
  with tf.io.gfile.GFile(path, "w") as handle:
    handle.write(json.dumps(payload, indent=2, sort_keys=False))
  return path


def read_feature_info(transform_dir: str) -> Dict[str, FeatureInfo]:
  """Reads feature_info.json written by the preprocessing pipeline.

  Args:
    transform_dir: the directory holding transform_fn/ and feature_info.json.

  Returns:
    Feature name -> FeatureInfo, in spec order.

  Raises:
    FileNotFoundError: the directory holds no finished preprocessing output.
    ValueError: the file is not a feature_info.json this module wrote.
  """
  path = os.path.join(transform_dir, FEATURE_INFO_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {transform_dir!r} is not the output of a "
        f"finished `embeddings preprocess` run")
  with tf.io.gfile.GFile(path) as handle:
    text = handle.read()
  try:
    payload = json.loads(text)
    return {name: FeatureInfo(**{**fields,
                                 "dim_range": tuple(fields["dim_range"])})
            for name, fields in payload.items()}
  except (ValueError, TypeError, KeyError, AttributeError) as error:
    raise ValueError(f"{path} is not a valid feature info file: "
                     f"{error}") from None
