"""Embedding artifacts: each trained table as a self-describing directory.

`embeddings export --model_dir M --preprocessed P --output O` writes, for
every embedded feature F of the model, the directory `O/F/`:

  checkpoint, embedding.ckpt.index, embedding.ckpt.data-00000-of-00001
      a TF checkpoint holding the table, [size, dim] float32, under the
      tensor name `F/embeddings`. `tf.train.load_variable(O/F, "F/embeddings")`
      reads it, and so does TensorFlow's feature-column API
      (`embedding_column(..., ckpt_to_load_from=O/F,
      tensor_name_in_ckpt="F/embeddings")`) with no conversion.
  vocab.txt
      one token per line, line i names row i. Learned vocabularies list their
      tokens, then one `[OOV_k]` line per OOV bucket (usable directly as
      `categorical_column_with_vocabulary_file(vocabulary_file=...,
      vocabulary_size=metadata["vocabulary_size"],
      num_oov_buckets=metadata["num_oov_buckets"])`). Tables without a
      vocabulary name rows by id: identity and time features by the id
      (`"0"`, `"1"`, ..., identity's out-of-range row `[DEFAULT]`), hashed,
      crossed and bucketized features by bucket (`[BUCKET_k]`).
  metadata.json
      name, kind, dimension, size, vocabulary size, OOV count, the tensor
      name, hash parameters for hashed and crossed features (bucket size,
      member features, the hash function), the feature's spec, the model and
      data version and the training date.
  word2vec.txt
      the word2vec text format;
      `gensim.models.KeyedVectors.load_word2vec_format(path)` opens it as it
      is. Whitespace inside a token becomes `_` there (the format separates
      fields by spaces); vocab.txt and metadata.tsv keep the real token.
  vectors.tsv, metadata.tsv
      the TensorBoard Embedding Projector's inputs: one tab-separated vector
      per row, and a header `row, token, label` then one line per row.

A model's per-row biases (the `mf` user and item bias, the `dnn` item bias)
are exported the same way as one-column tables `O/bias_F/` with F's rows
(metadata "table": "bias", "feature": F).

`load_table(directory)` reads one such directory back as an `EmbeddingTable`;
`load_tables(output)` reads every table of an export.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import layers
from transforms import feature_info as feature_info_lib
from transforms import preprocessing
from transforms import spec as spec_lib

FORMAT_VERSION = 1
CHECKPOINT_PREFIX = "embedding.ckpt"
VOCAB_FILE = "vocab.txt"
METADATA_FILE = "metadata.json"
WORD2VEC_FILE = "word2vec.txt"
VECTORS_TSV = "vectors.tsv"
METADATA_TSV = "metadata.tsv"
DEFAULT_TOKEN = "[DEFAULT]"
# What the trainer writes into a model directory.
REPORT_FILE = "report.json"
SAVED_MODEL_SUBDIR = "export"

# How each hashed kind turns a value into a row; recorded in metadata so a
# consumer can reproduce ids, and compared before rows are reused by number.
HASH_FUNCTIONS = {
    spec_lib.HASH: ("tf.strings.to_hash_bucket_fast: FarmHash Fingerprint64 "
                    "of the UTF-8 string, modulo bucket_size"),
    spec_lib.CROSS: ("tf.sparse.cross_hashed: FingerprintCat64 over the "
                     "members' values (default hash_key), modulo bucket_size; "
                     "same as Keras HashedCrossing(num_bins=bucket_size)"),
}

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Crosses whose members have at most this many value combinations get a
# label per bucket listing the combinations that hash there.
_MAX_LABELLED_COMBINATIONS = 10000


def tensor_name(feature: str) -> str:
  """The stable checkpoint tensor name of a feature's table: `F/embeddings`."""
  return f"{feature}/embeddings"


def oov_token(index: int) -> str:
  """The vocab.txt name of OOV bucket `index`: `[OOV_index]`."""
  return f"[OOV_{index}]"


def bucket_token(index: int) -> str:
  """The vocab.txt name of hash or quantile bucket `index`: `[BUCKET_index]`."""
  return f"[BUCKET_{index}]"


@dataclasses.dataclass
class EmbeddingTable:
  """One embedding table with its row names and description.

  Attributes:
    name: the feature name.
    vectors: float32 [size, dimension]; row i embeds tokens[i].
    tokens: the row names (see the module docstring), unique, one per row.
    metadata: the metadata.json content (dimension, kind, hash, spec, ...).
    labels: a human-readable label per row (metadata.tsv's label column),
      e.g. the weekday/hour combinations of a crossed bucket; defaults to
      the tokens.
  """
  name: str
  vectors: np.ndarray
  tokens: List[str]
  metadata: Dict[str, Any]
  labels: Optional[List[str]] = None

  def __post_init__(self):
    self.vectors = np.asarray(self.vectors, dtype=np.float32)
    if self.vectors.ndim != 2:
      raise ValueError(f"table {self.name!r}: vectors must be 2-D, got shape "
                       f"{self.vectors.shape}")
    self.tokens = [str(token) for token in self.tokens]
    if len(self.tokens) != self.vectors.shape[0]:
      raise ValueError(f"table {self.name!r}: {len(self.tokens)} tokens for "
                       f"{self.vectors.shape[0]} rows")
    if len(set(self.tokens)) != len(self.tokens):
      raise ValueError(f"table {self.name!r}: tokens are not unique")
    self.labels = list(self.tokens if self.labels is None else self.labels)
    if len(self.labels) != len(self.tokens):
      raise ValueError(f"table {self.name!r}: {len(self.labels)} labels for "
                       f"{len(self.tokens)} rows")

  @property
  def size(self) -> int:
    return int(self.vectors.shape[0])

  @property
  def dimension(self) -> int:
    return int(self.vectors.shape[1])

  @property
  def tensor_name(self) -> str:
    return self.metadata.get("tensor_name", tensor_name(self.name))

  def index(self) -> Dict[str, int]:
    """Token -> row."""
    return {token: row for row, token in enumerate(self.tokens)}

  def vector(self, token: str) -> np.ndarray:
    """The row of `token`.

    Raises:
      KeyError: the table has no such token.
    """
    try:
      return self.vectors[self.tokens.index(token)]
    except ValueError:
      raise KeyError(f"table {self.name!r} has no token {token!r}") from None

  def save(self, directory: str) -> str:
    """Writes the artifact directory (see the module docstring).

    Args:
      directory: where to write; created if missing. Existing artifact files
        are overwritten.

    Returns:
      `directory`.
    """
    tf.io.gfile.makedirs(directory)
    metadata = dict(self.metadata)
    metadata.update({
        "format_version": FORMAT_VERSION,
        "name": self.name,
        "size": self.size,
        "dimension": self.dimension,
        "tensor_name": self.tensor_name,
        "checkpoint": CHECKPOINT_PREFIX,
        "files": {"vocabulary": VOCAB_FILE, "word2vec": WORD2VEC_FILE,
                  "vectors_tsv": VECTORS_TSV, "metadata_tsv": METADATA_TSV},
    })
    metadata.setdefault("vocabulary_size", None)
    metadata.setdefault("num_oov_buckets", 0)
    _write_checkpoint(directory, metadata["tensor_name"], self.vectors)
    _write_text(os.path.join(directory, VOCAB_FILE),
                "".join(f"{token}\n" for token in self.tokens))
    _write_text(os.path.join(directory, METADATA_FILE),
                json.dumps(metadata, indent=2, default=str) + "\n")
    _write_text(os.path.join(directory, WORD2VEC_FILE),
                _word2vec_text(self.tokens, self.vectors))
    _write_text(os.path.join(directory, VECTORS_TSV),
                "".join("\t".join(_float(x) for x in row) + "\n"
                        for row in self.vectors))
    labels = self.labels
    _write_text(os.path.join(directory, METADATA_TSV),
                "row\ttoken\tlabel\n" + "".join(
                    f"{row}\t{_tsv_cell(token)}\t{_tsv_cell(label)}\n"
                    for row, (token, label) in enumerate(zip(self.tokens,
                                                             labels))))
    self.metadata = metadata
    return directory


def load_table(directory: str) -> EmbeddingTable:
  """Reads one artifact directory written by `EmbeddingTable.save`.

  The vectors come from the checkpoint (exact float32), the tokens from
  vocab.txt, the description from metadata.json and the labels from
  metadata.tsv.

  Args:
    directory: an artifact directory, e.g. `<export>/movie`.

  Returns:
    The EmbeddingTable, equal to the one saved.

  Raises:
    FileNotFoundError: `directory` is not an artifact directory.
  """
  metadata_path = os.path.join(directory, METADATA_FILE)
  if not tf.io.gfile.exists(metadata_path):
    raise FileNotFoundError(f"{directory!r} is not an embedding artifact: it "
                            f"has no {METADATA_FILE}")
  with tf.io.gfile.GFile(metadata_path) as handle:
    metadata = json.load(handle)
  prefix = os.path.join(directory,
                        metadata.get("checkpoint", CHECKPOINT_PREFIX))
  vectors = tf.train.load_variable(prefix, metadata["tensor_name"])
  tokens = read_vocab_file(os.path.join(directory, VOCAB_FILE))
  labels = None
  tsv_path = os.path.join(directory, METADATA_TSV)
  if tf.io.gfile.exists(tsv_path):
    with tf.io.gfile.GFile(tsv_path) as handle:
      lines = handle.read().split("\n")[1:]
    labels = [line.split("\t", 2)[2] for line in lines if line]
  return EmbeddingTable(name=metadata["name"], vectors=vectors, tokens=tokens,
                        metadata=metadata, labels=labels)


def load_tables(export_dir: str) -> Dict[str, EmbeddingTable]:
  """Reads every artifact directory of an export.

  Args:
    export_dir: the `--output` of `embeddings export`.

  Returns:
    Feature name -> EmbeddingTable, sorted by name.

  Raises:
    FileNotFoundError: no artifact directory is there.
  """
  tables = {}
  if tf.io.gfile.isdir(export_dir):
    for entry in sorted(tf.io.gfile.listdir(export_dir)):
      directory = os.path.join(export_dir, entry.rstrip("/"))
      if tf.io.gfile.exists(os.path.join(directory, METADATA_FILE)):
        table = load_table(directory)
        tables[table.name] = table
  if not tables:
    raise FileNotFoundError(f"{export_dir!r} holds no embedding artifacts "
                            f"(no */{METADATA_FILE})")
  return tables


def read_vocab_file(path: str) -> List[str]:
  """Reads a vocabulary file (vocab.txt or a tf.Transform vocabulary).

  Args:
    path: the file; UTF-8, one token per line.

  Returns:
    The tokens; token i names row i.
  """
  with tf.io.gfile.GFile(path, "rb") as handle:
    text = handle.read().decode("utf-8")
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line.rstrip("\r") for line in lines]


def read_vocabulary(preprocessed_dir: str, feature: str) -> List[str]:
  """The learned vocabulary of a feature, in id order, without OOV rows.

  Args:
    preprocessed_dir: an `embeddings preprocess` output (tft.TFTransformOutput
      works on it).
    feature: a feature with a learned vocabulary.

  Returns:
    Token i is id i.
  """
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  raw = tft.TFTransformOutput(preprocessed_dir).vocabulary_by_name(feature)
  return [token.decode("utf-8") if isinstance(token, bytes) else str(token)
          for token in raw]


def row_tokens(info: feature_info_lib.FeatureInfo,
               vocabulary: Optional[Sequence[str]] = None) -> List[str]:
  """Names the rows of a feature's table (see the module docstring).

  Args:
    info: the feature's FeatureInfo.
    vocabulary: its learned vocabulary in id order, for learned kinds.

  Returns:
    One unique name per row, `info.size` of them.

  Raises:
    ValueError: a learned vocabulary is missing or has the wrong length.
  """
  if info.vocabulary_file is not None:
    if vocabulary is None:
      raise ValueError(f"feature {info.name!r}: its vocabulary is needed to "
                       f"name its rows")
    expected = info.size - info.num_oov_buckets
    if len(vocabulary) != expected:
      raise ValueError(f"feature {info.name!r}: vocabulary has "
                       f"{len(vocabulary)} tokens, feature_info says "
                       f"{expected}")
    return list(vocabulary) + [oov_token(i)
                               for i in range(info.num_oov_buckets)]
  if info.kind == spec_lib.IDENTITY:
    return [str(i) for i in range(info.size - 1)] + [DEFAULT_TOKEN]
  if info.kind in spec_lib.TIME_KINDS:
    return [str(i) for i in range(info.size)]
  return [bucket_token(i) for i in range(info.size)]


def table_tokens(preprocessed_dir: str,
                 info: feature_info_lib.FeatureInfo) -> List[str]:
  """Row names of a feature's table as a preprocessing output defines it.

  Args:
    preprocessed_dir: the `embeddings preprocess` output.
    info: the feature's FeatureInfo from it.

  Returns:
    One name per row (row_tokens with the learned vocabulary read in).
  """
  vocabulary = None
  if info.vocabulary_file is not None:
    vocabulary = read_vocabulary(preprocessed_dir, info.vocabulary_file)
  return row_tokens(info, vocabulary)


def _member_parameters(spec: spec_lib.FeatureSpec,
                       name: str) -> Dict[str, Any]:
  """What a cross member contributes to the hash: its kind and id range."""
  member = spec.feature(name)
  described: Dict[str, Any] = {"name": name, "kind": member.kind}
  if member.kind in (spec_lib.VOCABULARY, spec_lib.HASH):
    # preprocessing_fn crosses an int column as int64, anything else as a
    # string; the two hash differently.
    column_type = _column_types(spec).get(member.source, "string")
    described["value"] = ("raw int64" if column_type == "int"
                          else "raw string")
  elif member.kind == spec_lib.TOKENS:
    described["value"] = "tokens"
  elif member.kind == spec_lib.CROSS:
    described["value"] = ("crossed string" if member.vocabulary
                          else "hashed id")
    described["hash"] = hash_parameters(spec, name)
  else:
    described["value"] = "id"
    if member.kind in (spec_lib.IDENTITY, spec_lib.BUCKETIZED):
      described["num_buckets"] = member.num_buckets
  return described


def _column_types(spec: spec_lib.FeatureSpec) -> Dict[str, str]:
  types: Dict[str, str] = {}
  for table in spec.inputs.values():
    types.update(table.types)
  return types


def hash_parameters(spec: spec_lib.FeatureSpec,
                    feature: str) -> Optional[Dict[str, Any]]:
  """How a hashed or crossed feature maps values to rows.

  Two tables whose hash parameters are equal put the same value in the same
  row, so their rows can be reused by number.

  Args:
    spec: the feature spec.
    feature: the feature name.

  Returns:
    {"bucket_size", "function", "members"} for hash kinds and hashed
    crosses; {"separator", "members"} for a vocabulary-backed cross; None
    for every other kind.
  """
  spec_feature = spec.feature(feature)
  if spec_feature.kind == spec_lib.HASH:
    return {"bucket_size": spec_feature.hash_bucket_size,
            "function": HASH_FUNCTIONS[spec_lib.HASH],
            "members": [{"name": spec_feature.source, "kind": "raw column",
                         "value": "string form"}]}
  if spec_feature.kind != spec_lib.CROSS:
    return None
  members = [_member_parameters(spec, member)
             for member in spec_feature.features]
  if spec_feature.vocabulary:
    return {"separator": preprocessing.CROSS_SEPARATOR, "members": members}
  return {"bucket_size": spec_feature.hash_bucket_size,
          "function": HASH_FUNCTIONS[spec_lib.CROSS], "members": members}


def _member_domain(spec: spec_lib.FeatureSpec, name: str):
  """(ids, labels) of a member with a known finite id range, else None."""
  member = spec.feature(name)
  if member.kind == spec_lib.DAY_OF_WEEK:
    return list(range(7)), list(_WEEKDAYS)
  if member.kind == spec_lib.HOUR_OF_DAY:
    return list(range(24)), [f"{h:02d}h" for h in range(24)]
  if member.kind in (spec_lib.IDENTITY, spec_lib.BUCKETIZED):
    size = member.static_size()
    return list(range(size)), [f"{name}={i}" for i in range(size)]
  return None


def row_labels(spec: spec_lib.FeatureSpec, info: feature_info_lib.FeatureInfo,
               tokens: Sequence[str]) -> List[str]:
  """A readable label per row, for the projector and for people.

  A hashed cross of finite-range members (e.g. day x hour) lists the value
  combinations that hash into each bucket ("Tue 14h|Sat 02h"); weekdays get
  their names; every other row is labelled by its token.

  Args:
    spec: the feature spec.
    info: the feature's FeatureInfo.
    tokens: its row names.

  Returns:
    One label per row.
  """
  spec_feature = spec.feature(info.name)
  if spec_feature.kind == spec_lib.DAY_OF_WEEK:
    return list(_WEEKDAYS)
  if spec_feature.kind != spec_lib.CROSS or spec_feature.vocabulary:
    return list(tokens)
  domains = [_member_domain(spec, member) for member in spec_feature.features]
  if any(domain is None for domain in domains):
    return list(tokens)
  if np.prod([len(ids) for ids, _ in domains]) > _MAX_LABELLED_COMBINATIONS:
    return list(tokens)
  combinations = list(itertools.product(*[range(len(ids))
                                          for ids, _ in domains]))
  columns = [
      tf.constant([[domains[m][0][c[m]]] for c in combinations], tf.int64)
      for m in range(len(domains))]
  buckets = tf.sparse.to_dense(preprocessing.hashed_cross(
      columns, spec_feature.hash_bucket_size)).numpy()[:, 0]
  per_bucket: Dict[int, List[str]] = {}
  for combination, bucket in zip(combinations, buckets):
    label = " ".join(domains[m][1][combination[m]]
                     for m in range(len(domains)))
    per_bucket.setdefault(int(bucket), []).append(label)
  return ["|".join(per_bucket.get(row, [])) or token
          for row, token in enumerate(tokens)]


def model_table(model, feature: str) -> np.ndarray:
  """A feature's table from a trained Keras model, as float32 [size, dim].

  Args:
    model: a tf_keras model with a layer named `embedding_<feature>`.
    feature: the feature name.

  Returns:
    The table's current values (a partitioned table is concatenated).

  Raises:
    KeyError: the model has no such layer.
  """
  name = layers.embedding_layer_name(feature)
  try:
    layer = model.get_layer(name)
  except ValueError:
    raise KeyError(f"the model has no layer {name!r} (feature "
                   f"{feature!r})") from None
  variable = getattr(layer, "embeddings", None)
  if variable is None:
    variable = layer.weights[0]
  return np.asarray(tf.convert_to_tensor(variable).numpy(), dtype=np.float32)


def model_feature_tables(
    model, infos: Mapping[str, feature_info_lib.FeatureInfo]
) -> Dict[str, np.ndarray]:
  """Every embedding table of a Keras model, by feature.

  Args:
    model: a tf_keras model with layers named `embedding_<feature>`.
    infos: the FeatureInfo of the data it trained on.

  Returns:
    Feature -> float32 [size, dim], in feature_info order, for every
    embedded feature the model has a table for.
  """
  tables = {}
  names = {layer.name for layer in model.layers}
  for name, info in infos.items():
    if info.size and layers.embedding_layer_name(name) in names:
      tables[name] = model_table(model, name)
  return tables


def feature_spec_dict(feature: spec_lib.Feature) -> Dict[str, Any]:
  """A spec Feature as plain JSON data.

  Args:
    feature: the spec's Feature.

  Returns:
    Its fields, unset and unused ones dropped (from_checkpoint nested).
  """
  described = {key: value for key, value in dataclasses.asdict(feature).items()
               if value is not None and value != () and value is not False}
  if not feature.has_learned_vocabulary:
    # A default of the dataclass that only vocabularies use.
    described.pop("num_oov_buckets", None)
  return described


def describe_table(spec: spec_lib.FeatureSpec,
                   info: feature_info_lib.FeatureInfo,
                   versions: Optional[Mapping[str, Any]] = None
                  ) -> Dict[str, Any]:
  """The metadata.json content for one feature's table.

  Args:
    spec: the feature spec the model was trained with.
    info: the feature's FeatureInfo.
    versions: model_version, data_version, trained_at (and anything else to
      record).

  Returns:
    JSON-serializable metadata.
  """
  metadata: Dict[str, Any] = {
      "name": info.name,
      "kind": info.kind,
      "dimension": info.embedding_dim,
      "size": info.size,
      "vocabulary_size": info.vocabulary_size,
      "num_oov_buckets": info.num_oov_buckets,
      "multivalent": info.multivalent,
      "tensor_name": tensor_name(info.name),
      "table": "embedding",
      "feature": info.name,
      "hash": hash_parameters(spec, info.name),
      "feature_spec": feature_spec_dict(spec.feature(info.name)),
      "spec_name": spec.name,
  }
  metadata.update(dict(versions or {}))
  return metadata


def export_model_tables(model,
                        feature_info: Mapping[str,
                                              feature_info_lib.FeatureInfo],
                        spec: spec_lib.FeatureSpec, output: str,
                        preprocessed_dir: Optional[str] = None,
                        vocabularies: Optional[Mapping[str,
                                                       Sequence[str]]] = None,
                        versions: Optional[Mapping[str, Any]] = None
                       ) -> Dict[str, EmbeddingTable]:
  """Writes every embedding table of a trained model as an artifact.

  Args:
    model: the trained tf_keras model (layers named `embedding_<feature>`).
    feature_info: feature name -> FeatureInfo of the data it trained on.
    spec: the feature spec it trained with.
    output: the export directory; each table goes to `output/<feature>/`.
    preprocessed_dir: the preprocessing output, to read learned
      vocabularies from (not needed when `vocabularies` covers them).
    vocabularies: feature -> learned vocabulary in id order (no OOV rows),
      overriding `preprocessed_dir`.
    versions: model_version, data_version, trained_at to record.

  Returns:
    Feature name -> the EmbeddingTable written.

  Raises:
    ValueError: a table's row count disagrees with feature_info, or a
      learned vocabulary cannot be found.
  """
  vocabularies = dict(vocabularies or {})
  exported = {}
  for name, values in model_feature_tables(model, feature_info).items():
    info = feature_info[name]
    # The trainer may override the dimension (config embedding_dims, mf_dim);
    # the row count is fixed by the data.
    if values.shape[0] != info.size:
      raise ValueError(f"feature {name!r}: the model's table has "
                       f"{values.shape[0]} rows, feature_info says "
                       f"{info.size}")
    vocabulary = vocabularies.get(name)
    if info.vocabulary_file is not None and vocabulary is None:
      if preprocessed_dir is None:
        raise ValueError(f"feature {name!r}: pass preprocessed_dir or its "
                         f"vocabulary to name its rows")
      vocabulary = read_vocabulary(preprocessed_dir, info.vocabulary_file)
    tokens = row_tokens(info, vocabulary)
    metadata = describe_table(spec, info, versions)
    metadata["dimension"] = int(values.shape[1])
    table = EmbeddingTable(name=name, vectors=values, tokens=tokens,
                           metadata=metadata,
                           labels=row_labels(spec, info, tokens))
    table.save(os.path.join(output, name))
    exported[name] = table
  return exported


def data_version(preprocessed_dir: str) -> str:
  """A content hash of what the model trained on: feature_info + vocabularies.

  Args:
    preprocessed_dir: an `embeddings preprocess` output.

  Returns:
    `sha256:` and the first 16 hex digits.
  """
  digest = hashlib.sha256()
  paths = [os.path.join(preprocessed_dir, feature_info_lib.FEATURE_INFO_FILE)]
  assets = os.path.join(preprocessed_dir, "transform_fn", "assets")
  if tf.io.gfile.isdir(assets):
    paths += [os.path.join(assets, name)
              for name in sorted(tf.io.gfile.listdir(assets))]
  for path in paths:
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      digest.update(os.path.basename(path).encode("utf-8"))
      with tf.io.gfile.GFile(path, "rb") as handle:
        digest.update(handle.read())
  return "sha256:" + digest.hexdigest()[:16]


def _write_checkpoint(directory: str, name: str, values: np.ndarray) -> None:
  """A V2 checkpoint with exactly one tensor named `name`, plus its state file.

  SaveV2 names the tensor exactly as given (object-based tf.train.Checkpoint
  would add `.ATTRIBUTES/VARIABLE_VALUE` paths), which is what
  `tensor_name_in_ckpt` and `tf.train.load_variable` need. The relative path
  in the state file keeps the directory relocatable.
  """
  prefix = os.path.join(directory, CHECKPOINT_PREFIX)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[name], shape_and_slices=[""],
                    tensors=[tf.constant(values, dtype=tf.float32)])
  tf.compat.v1.train.update_checkpoint_state(
      directory, CHECKPOINT_PREFIX,
      all_model_checkpoint_paths=[CHECKPOINT_PREFIX])


def _write_text(path: str, text: str) -> None:
  with tf.io.gfile.GFile(path, "w") as handle:
    handle.write(text)


def _float(value: float) -> str:
  # Nine significant digits round-trip every float32 exactly.
  return f"{value:.9g}"


def _tsv_cell(text: str) -> str:
  return " ".join(str(text).replace("\t", " ").splitlines())


def word2vec_token(token: str) -> str:
  """A token as one word2vec field.

  Args:
    token: a row name.

  Returns:
    The token with each whitespace character replaced by `_` (the format
    splits on spaces), or `[EMPTY]` for an empty token.
  """
  escaped = "".join("_" if ch.isspace() else ch for ch in token)
  return escaped or "[EMPTY]"


def _word2vec_text(tokens: Sequence[str], vectors: np.ndarray) -> str:
  lines = [f"{vectors.shape[0]} {vectors.shape[1]}\n"]
  seen = set()
  for row, (token, vector) in enumerate(zip(tokens, vectors)):
    word = word2vec_token(token)
    if word in seen:
      # Escaping merged two tokens; the row number keeps every row loadable.
      word = f"{word}#{row}"
    seen.add(word)
    lines.append(word + " " + " ".join(_float(x) for x in vector) + "\n")
  return "".join(lines)


# `embedding_<feature>/embeddings:0`, or one shard of a table partitioned
# across parameter servers: `embedding_<feature>/embeddings/part_<k>:0`.
_TABLE_VARIABLE = re.compile(
    r"^(?P<layer>(?:" + re.escape(layers.EMBEDDING_LAYER_PREFIX) + "|" +
    re.escape(layers.BIAS_LAYER_PREFIX) + r")(?P<feature>.+))/" +
    re.escape(layers.EMBEDDING_WEIGHT) + r"(?:/part_(?P<part>\d+))?:0$")


def bias_table_name(feature: str) -> str:
  """The artifact name of a feature's per-row bias: `bias_<feature>`."""
  return layers.bias_layer_name(feature)


def saved_model_tables(saved_model_dir: str
                      ) -> Dict[Tuple[str, str], np.ndarray]:
  """Every embedding and bias table of a trainer SavedModel.

  The SavedModel is loaded as plain TF (no Keras revival), so no custom
  objects are needed.

  Args:
    saved_model_dir: `<model_dir>/export` of `embeddings train`.

  Returns:
    (artifact name, feature) -> float32 [size, dim]: the artifact name is
    the feature for its embedding and `bias_<feature>` for its bias ([size,
    1]). Partitioned tables are concatenated in shard order.
  """
  loaded = tf.saved_model.load(saved_model_dir)
  parts: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
  for variable in loaded.variables:
    match = _TABLE_VARIABLE.match(variable.name)
    if match:
      feature = match.group("feature")
      layer = match.group("layer")
      name = (feature if layer == layers.embedding_layer_name(feature)
              else bias_table_name(feature))
      part = int(match.group("part") or 0)
      parts.setdefault((name, feature), {})[part] = variable.numpy()
  return {key: np.concatenate([shards[k] for k in sorted(shards)])
          .astype(np.float32) for key, shards in sorted(parts.items())}


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """What `embeddings train` left in a model directory.

  Attributes:
    model_dir: the directory.
    saved_model_dir: its SavedModel.
    report: report.json's content.
    spec_path, spec_env, preprocessed_dir: how it was trained (from the
      report's config).
  """
  model_dir: str
  saved_model_dir: str
  report: Mapping[str, Any]
  spec_path: Optional[str]
  spec_env: Tuple[Tuple[str, str], ...]
  preprocessed_dir: Optional[str]

  def versions(self, preprocessed_dir: str) -> Dict[str, Any]:
    """model_version, data_version, trained_at and the run's facts.

    model_version hashes the SavedModel's variable index (which holds a
    checksum of every tensor), so it changes exactly when weights change.
    """
    index = os.path.join(self.saved_model_dir, "variables",
                         "variables.index")
    with tf.io.gfile.GFile(index, "rb") as handle:
      model_hash = hashlib.sha256(handle.read()).hexdigest()[:16]
    report_path = os.path.join(self.model_dir, REPORT_FILE)
    trained = datetime.datetime.fromtimestamp(
        tf.io.gfile.stat(report_path).mtime_nsec / 1e9, datetime.timezone.utc)
    return {
        "model_version": f"sha256:{model_hash}",
        "data_version": data_version(preprocessed_dir),
        "trained_at": trained.isoformat(timespec="seconds"),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "model_dir": self.model_dir,
        "preprocessed_dir": preprocessed_dir,
        "model_type": self.report.get("model_type"),
        "eval_metrics": self.report.get("metrics"),
    }


def read_trained_model(model_dir: str) -> TrainedModel:
  """Reads a model directory written by `embeddings train`.

  Args:
    model_dir: the trainer's --model_dir.

  Returns:
    The TrainedModel.

  Raises:
    FileNotFoundError: no finished training run is there (no report.json or
      no SavedModel).
  """
  report_path = os.path.join(model_dir, REPORT_FILE)
  if not tf.io.gfile.exists(report_path):
    raise FileNotFoundError(f"{model_dir!r} has no {REPORT_FILE}: it is not "
                            f"the model_dir of a finished `embeddings train`")
  with tf.io.gfile.GFile(report_path) as handle:
    report = json.load(handle)
  saved_model_dir = report.get("export_dir") or os.path.join(
      model_dir, SAVED_MODEL_SUBDIR)
  if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
    raise FileNotFoundError(f"{model_dir!r}: no SavedModel at "
                            f"{saved_model_dir!r} (trained with --no-export?)")
  config = report.get("config") or {}
  return TrainedModel(
      model_dir=model_dir, saved_model_dir=saved_model_dir, report=report,
      spec_path=config.get("spec_path"),
      spec_env=tuple(tuple(pair) for pair in config.get("spec_env") or ()),
      preprocessed_dir=config.get("preprocessed_dir"))


def model_dir_tables(model_dir: str, preprocessed_dir: Optional[str] = None,
                     spec: Optional[spec_lib.FeatureSpec] = None,
                     with_labels: bool = True) -> Dict[str, EmbeddingTable]:
  """Every embedding (and bias) table of a trained model directory.

  Args:
    model_dir: the trainer's --model_dir.
    preprocessed_dir: the data it trained on (default: from its report).
    spec: its feature spec (default: loaded from the report's spec path).
    with_labels: compute readable row labels (row_labels).

  Returns:
    Artifact name -> EmbeddingTable with full metadata, rows named, not yet
    saved: each embedded feature under its name, each per-row bias under
    `bias_<feature>` (metadata "table": "bias").

  Raises:
    FileNotFoundError: not a finished model directory, or no data dir known.
    ValueError: a table's rows disagree with the data's feature_info.
  """
  trained = read_trained_model(model_dir)
  preprocessed_dir = preprocessed_dir or trained.preprocessed_dir
  if not preprocessed_dir:
    raise FileNotFoundError(f"{model_dir!r}: pass the preprocessing output it "
                            f"trained on")
  if spec is None:
    if not trained.spec_path:
      raise FileNotFoundError(f"{model_dir!r}: its report names no spec; pass "
                              f"the spec")
    spec = spec_lib.load_spec(trained.spec_path, dict(trained.spec_env))
  infos = feature_info_lib.read_feature_info(preprocessed_dir)
  versions = trained.versions(preprocessed_dir)
  tables = {}
  found = saved_model_tables(trained.saved_model_dir)
  for (name, feature), values in found.items():
    if feature not in infos:
      raise ValueError(f"{model_dir!r} has a table for {feature!r}, which "
                       f"{preprocessed_dir!r} does not describe")
    info = infos[feature]
    if values.shape[0] != info.size:
      raise ValueError(f"feature {feature!r}: the model's table has "
                       f"{values.shape[0]} rows, {preprocessed_dir!r} says "
                       f"{info.size}; was it trained on this data?")
    tokens = table_tokens(preprocessed_dir, info)
    metadata = describe_table(spec, info, versions)
    metadata["dimension"] = int(values.shape[1])
    if name != feature:
      # A per-row bias: same rows as the feature's table, one column.
      metadata.update({"name": name, "table": "bias", "feature": feature,
                       "tensor_name": tensor_name(name)})
    tables[name] = EmbeddingTable(
        name=name, vectors=values, tokens=tokens, metadata=metadata,
        labels=row_labels(spec, info, tokens) if with_labels else None)
  return tables


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings export",
      description="Export every embedding table of a trained model as a "
                  "self-describing artifact directory.")
  parser.add_argument("--model_dir", required=True,
                      help="the --model_dir of `embeddings train`")
  parser.add_argument("--preprocessed", default=None,
                      help="the preprocessing output it trained on "
                           "(default: the one its report names)")
  parser.add_argument("--output", required=True,
                      help="export directory; one subdirectory per table")
  parser.add_argument("--spec", default=None,
                      help="the feature spec (default: the one its report "
                           "names)")
  parser.add_argument("--env", action="append", default=[],
                      metavar="NAME=VALUE",
                      help="override a ${VAR} of the spec")
  parser.add_argument("--tables", default=None,
                      help="comma-separated features to export (default all)")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings export`.

  Writes into a staging directory beside --output and moves it into place
  with _SUCCESS last, so a reader never sees a partial export.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    0 on success, 2 on a bad model directory or flags.
  """
  from pipelines import outputs  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  args, unknown = _parser().parse_known_args(argv)
  if unknown:
    print(f"embeddings export: unknown flags {unknown}", file=sys.stderr)
    return 2
  try:
    spec = None
    if args.spec:
      env = dict(pair.split("=", 1) for pair in args.env)
      spec = spec_lib.load_spec(args.spec, env)
    tables = model_dir_tables(args.model_dir, args.preprocessed, spec)
  except (FileNotFoundError, ValueError) as error:
    print(f"embeddings export: {error}", file=sys.stderr)
    return 2
  wanted = [t for t in (args.tables or "").split(",") if t]
  missing = sorted(set(wanted) - set(tables))
  if missing:
    print(f"embeddings export: no table for {missing}; the model has "
          f"{sorted(tables)}", file=sys.stderr)
    return 2
  staging = outputs.new_staging_dir(args.output)
  try:
    for name, table in tables.items():
      if not wanted or name in wanted:
        table.save(os.path.join(staging, name))
    outputs.commit(staging, args.output,
                   {"tables": sorted(wanted or tables)})
  except BaseException:
    outputs.discard(staging)
    raise
  for name in sorted(wanted or tables):
    table = tables[name]
    print(f"{name}: {table.size} x {table.dimension} -> "
          f"{os.path.join(args.output, name)}", flush=True)
  return 0
