"""Final table sizes and embedding dimensions, resolved after analysis.

The preprocessing pipeline writes `feature_info.json` into its output; the
trainer, `embeddings tune` and retraining read it back, so nobody
recomputes a vocabulary size. This module also reads what else of the
transform output names a table's rows: the learned vocabularies.
"""

import dataclasses
import hashlib
import json
from typing import Dict, List, Mapping, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from core import files
from core import layout
from transforms import dims
from transforms import kinds
from transforms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """What the trainer needs to build one feature's input.

  Attributes:
    name: the feature (and transformed column) name.
    kind: the spec kind (its kind object; equal to the kind's name).
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

  def __post_init__(self):
    object.__setattr__(self, "kind", kinds.get(self.kind))

  def row_tokens(self, vocabulary: Optional[List[str]] = None) -> List[str]:
    """One name per row (vocab.txt's lines), given a learned vocabulary."""
    return self.kind.row_tokens(self, vocabulary)


def resolve_feature_info(spec: spec_lib.FeatureSpec,
                         vocabulary_sizes: Mapping[str, int]
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
                     f"read them from the transform output "
                     f"(TFTransformOutput.vocabulary_size_by_name)")
  infos = {}
  for feature in spec.features:
    if not feature.is_categorical:
      infos[feature.name] = FeatureInfo(
          name=feature.name, kind=feature.kind, size=0, vocabulary_size=None,
          num_oov_buckets=0, embedding_dim=0, dim_range=(0, 0),
          multivalent=False, vocabulary_file=None)
      continue
    vocabulary_size, oov = None, 0
    if feature.has_learned_vocabulary:
      vocabulary_size = int(vocabulary_sizes[feature.name])
      if vocabulary_size < 0:
        raise ValueError(f"feature {feature.name!r}: vocabulary size "
                         f"{vocabulary_size} is negative")
      oov = feature.num_oov_buckets
    size = feature.kind.table_size(feature, vocabulary_size)
    infos[feature.name] = FeatureInfo(
        name=feature.name, kind=feature.kind, size=size,
        vocabulary_size=vocabulary_size, num_oov_buckets=oov,
        embedding_dim=dims.spec_dimension(feature.embedding_dim, size),
        dim_range=dims.embedding_dim_range(dims.auto_embedding_dim(size)),
        multivalent=spec.is_multivalent(feature.name),
        vocabulary_file=(feature.name if feature.has_learned_vocabulary
                         else None))
  return infos


def write_feature_info(transform_dir: str,
                       infos: Mapping[str, FeatureInfo]) -> str:
  """Writes feature_info.json into a preprocessing output directory.

  Args:
    transform_dir: the directory holding transform_fn/.
    infos: from resolve_feature_info.

  Returns:
    The written file's path.
  """
  path = layout.PreprocessedLayout(transform_dir).feature_info
  payload = {name: dataclasses.asdict(info) for name, info in infos.items()}
  files.write_text(path, json.dumps(payload, indent=2, sort_keys=False))
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
  path = layout.PreprocessedLayout(transform_dir).feature_info
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {transform_dir!r} is not the output of a "
        f"finished `embeddings preprocess` run")
  try:
    payload = json.loads(files.read_text(path))
    return {name: FeatureInfo(**{**values,
                                 "dim_range": tuple(values["dim_range"])})
            for name, values in payload.items()}
  except (ValueError, TypeError, KeyError, AttributeError) as error:
    raise ValueError(f"{path} is not a valid feature info file: "
                     f"{error}") from None


def read_vocabulary(preprocessed_dir: str, feature: str) -> List[str]:
  """The learned vocabulary of a feature, in id order, without OOV rows.

  Args:
    preprocessed_dir: an `embeddings preprocess` output.
    feature: a feature with a learned vocabulary.

  Returns:
    Token i is id i.
  """
  raw = tft.TFTransformOutput(preprocessed_dir).vocabulary_by_name(feature)
  return [token.decode("utf-8") if isinstance(token, bytes) else str(token)
          for token in raw]


def table_tokens(preprocessed_dir: str, info: FeatureInfo) -> List[str]:
  """Row names of a feature's table as a preprocessing output defines it.

  Args:
    preprocessed_dir: the `embeddings preprocess` output.
    info: the feature's FeatureInfo from it.

  Returns:
    One name per row.
  """
  vocabulary = None
  if info.vocabulary_file is not None:
    vocabulary = read_vocabulary(preprocessed_dir, info.vocabulary_file)
  return info.row_tokens(vocabulary)


def data_version(preprocessed_dir: str) -> str:
  """A content hash of a preprocessing output: feature_info + vocabularies.

  Args:
    preprocessed_dir: an `embeddings preprocess` output.

  Returns:
    `sha256:` and the first 16 hex digits.
  """
  paths = layout.PreprocessedLayout(preprocessed_dir)
  digest = hashlib.sha256()
  names = [paths.feature_info]
  if tf.io.gfile.isdir(paths.vocabulary_assets):
    names += [layout.join(paths.vocabulary_assets, name)
              for name in sorted(tf.io.gfile.listdir(paths.vocabulary_assets))]
  for path in names:
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      digest.update(layout.split(path)[1].encode("utf-8"))
      with tf.io.gfile.GFile(path, "rb") as handle:
        digest.update(handle.read())
  return "sha256:" + digest.hexdigest()[:16]
