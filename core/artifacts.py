"""The embedding artifact format: each table as a self-describing directory.

A table directory (core/layout.TableLayout) holds:

  checkpoint, embedding.ckpt.index, embedding.ckpt.data-00000-of-00001
      a TF checkpoint holding the table, [size, dim] float32, under the
      tensor name `F/embeddings`. `tf.train.load_variable(dir, "F/embeddings")`
      reads it, and so does TensorFlow's feature-column API
      (`embedding_column(..., ckpt_to_load_from=dir,
      tensor_name_in_ckpt="F/embeddings")`) with no conversion.
  vocab.txt
      one token per line, line i names row i. Learned vocabularies list their
      tokens, then one `[OOV_k]` line per OOV bucket (usable directly as
      `categorical_column_with_vocabulary_file(vocabulary_file=...,
      vocabulary_size=metadata["vocabulary_size"],
      num_oov_buckets=metadata["num_oov_buckets"])`). Tables without a
      vocabulary name rows by id (`"0"`, `"1"`, ..., an identity feature's
      out-of-range row `[DEFAULT]`) or by bucket (`[BUCKET_k]`); the feature
      kinds (transforms/kinds/) decide which.
  metadata.json
      name, kind, dimension, size, vocabulary size, OOV count, the tensor
      name, hash parameters for hashed and crossed features, the feature's
      spec, the model and data version and the training date.
  word2vec.txt
      the word2vec text format;
      `gensim.models.KeyedVectors.load_word2vec_format(path)` opens it as it
      is. Whitespace inside a token becomes `_` there (the format separates
      fields by spaces); vocab.txt and metadata.tsv keep the real token.
  vectors.tsv, metadata.tsv
      the TensorBoard Embedding Projector's inputs: one tab-separated vector
      per row, and a header `row, token, label` then one line per row.

A model's per-row biases are exported the same way as one-column tables
`bias_<feature>` with the feature's rows (metadata "table": "bias").

Reading and writing need NumPy and `tf.io.gfile` / the checkpoint ops only,
no Keras, no trainer: retrieval, batch recommendation and warm start all
read tables through `load_table` / `load`. The writer and the readers stay
in this one module (past 400 lines) so that the format is defined once.
"""

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from core import files
from core import layout

FORMAT_VERSION = 1
DEFAULT_TOKEN = "[DEFAULT]"
EMPTY_TOKEN = "[EMPTY]"


def tensor_name(feature: str) -> str:
  """The stable checkpoint tensor name of a feature's table: `F/embeddings`."""
  return f"{feature}/embeddings"


def oov_token(index: int) -> str:
  """The vocab.txt name of OOV bucket `index`: `[OOV_index]`."""
  return f"[OOV_{index}]"


def is_oov_token(token: str) -> bool:
  """Whether a row name is an OOV bucket's."""
  return token.startswith("[OOV_") and token.endswith("]")


def bucket_token(index: int) -> str:
  """The vocab.txt name of hash or quantile bucket `index`: `[BUCKET_index]`."""
  return f"[BUCKET_{index}]"


def reserved_tokens(metadata: Dict[str, Any]) -> frozenset:
  """Row names that stand for no real value: OOV buckets, the default row.

  A learned vocabulary's OOV rows follow its tokens as `[OOV_k]`; a table
  without one (identity ids) may end in one `[DEFAULT]` row that receives
  out-of-range ids.

  Args:
    metadata: the table's metadata (vocabulary_size, num_oov_buckets).

  Returns:
    The reserved row names.
  """
  reserved = {oov_token(i) for i in range(int(metadata.get("num_oov_buckets")
                                              or 0))}
  if metadata.get("vocabulary_size") is None:
    reserved.add(DEFAULT_TOKEN)
  return frozenset(reserved)


def real_rows(tokens: Sequence[str], metadata: Dict[str, Any]) -> np.ndarray:
  """Rows that stand for real values: not OOV buckets nor a default row.

  Args:
    tokens: row names.
    metadata: the table's metadata.

  Returns:
    int64 row ids, ascending.
  """
  reserved = reserved_tokens(metadata)
  return np.array([row for row, token in enumerate(tokens)
                   if token not in reserved], dtype=np.int64)


@dataclasses.dataclass
class EmbeddingTable:
  """One embedding table with its row names and description.

  Attributes:
    name: the table name (the feature, or `bias_<feature>`).
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

  @property
  def real_rows(self) -> np.ndarray:
    """Rows that stand for real values (see real_rows); searches use these."""
    return real_rows(self.tokens, self.metadata)

  def row_of(self) -> Dict[str, int]:
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
    paths = layout.TableLayout(directory)
    tf.io.gfile.makedirs(directory)
    metadata = dict(self.metadata)
    metadata.update({
        "format_version": FORMAT_VERSION,
        "name": self.name,
        "size": self.size,
        "dimension": self.dimension,
        "tensor_name": self.tensor_name,
        "checkpoint": layout.CHECKPOINT_PREFIX,
        "files": {"vocabulary": layout.VOCAB_FILE,
                  "word2vec": layout.WORD2VEC_FILE,
                  "vectors_tsv": layout.VECTORS_TSV,
                  "metadata_tsv": layout.METADATA_TSV},
    })
    metadata.setdefault("vocabulary_size", None)
    metadata.setdefault("num_oov_buckets", 0)
    _write_checkpoint(directory, metadata["tensor_name"], self.vectors)
    files.write_text(paths.vocab,
                     "".join(f"{token}\n" for token in self.tokens))
    files.write_text(paths.metadata,
                     json.dumps(metadata, indent=2, default=str) + "\n")
    files.write_text(paths.word2vec, _word2vec_text(self.tokens, self.vectors))
    files.write_text(paths.vectors_tsv,
                     "".join("\t".join(_float(x) for x in row) + "\n"
                             for row in self.vectors))
    files.write_text(paths.metadata_tsv, "row\ttoken\tlabel\n" + "".join(
        f"{row}\t{_tsv_cell(token)}\t{_tsv_cell(label)}\n"
        for row, (token, label) in enumerate(zip(self.tokens, self.labels))))
    self.metadata = metadata
    return directory


def read_metadata(directory: str) -> Dict[str, Any]:
  """A table directory's metadata.json.

  Raises:
    FileNotFoundError: `directory` is not an artifact directory.
  """
  metadata = files.read_json(layout.TableLayout(directory).metadata)
  if metadata is None:
    raise FileNotFoundError(f"{directory!r} is not an embedding artifact: it "
                            f"has no {layout.METADATA_FILE}")
  return metadata


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
  paths = layout.TableLayout(directory)
  metadata = read_metadata(directory)
  prefix = layout.join(directory,
                      metadata.get("checkpoint", layout.CHECKPOINT_PREFIX))
  vectors = tf.train.load_variable(prefix, metadata["tensor_name"])
  tokens = read_vocab_file(paths.vocab)
  labels = None
  if tf.io.gfile.exists(paths.metadata_tsv):
    lines = files.read_text(paths.metadata_tsv).split("\n")[1:]
    labels = [line.split("\t", 2)[2] for line in lines if line]
  return EmbeddingTable(name=metadata["name"], vectors=vectors, tokens=tokens,
                        metadata=metadata, labels=labels)


def _is_table_dir(directory: str) -> bool:
  return tf.io.gfile.exists(layout.TableLayout(directory).metadata)


def table_names(export_dir: str) -> List[str]:
  """The tables of an export directory, sorted."""
  if not tf.io.gfile.isdir(export_dir):
    return []
  exported = layout.ExportLayout(export_dir)
  return sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(export_dir)
                if _is_table_dir(exported.table(entry.rstrip("/")).root))


def load_tables(export_dir: str) -> Dict[str, EmbeddingTable]:
  """Reads every artifact directory of an export.

  Args:
    export_dir: the `--output` of `embeddings export`.

  Returns:
    Table name -> EmbeddingTable, sorted by name.

  Raises:
    FileNotFoundError: no artifact directory is there.
  """
  exported = layout.ExportLayout(export_dir)
  tables = {}
  for entry in table_names(export_dir):
    table = load_table(exported.table(entry).root)
    tables[table.name] = table
  if not tables:
    raise FileNotFoundError(f"{export_dir!r} holds no embedding artifacts "
                            f"(no */{layout.METADATA_FILE})")
  return tables


def table_dir(embeddings: str, table: Optional[str]) -> str:
  """The artifact directory of `table` under an export (or `embeddings` itself).

  Args:
    embeddings: an `embeddings export` output, or one table's directory.
    table: the table name, or None when `embeddings` is a table directory.

  Returns:
    The directory holding metadata.json.

  Raises:
    FileNotFoundError: no such artifact, naming the tables that exist.
  """
  candidates = []
  if table:
    candidates.append(layout.ExportLayout(embeddings).table(table).root)
  candidates.append(embeddings)
  for directory in candidates:
    if _is_table_dir(directory):
      if table and directory == embeddings and (
          read_metadata(directory).get("name") != table):
        continue
      return directory
  raise FileNotFoundError(
      f"no embedding table {table!r} in {embeddings!r}; tables there: "
      f"{', '.join(table_names(embeddings)) or 'none'}")


def load(embeddings: str, table: Optional[str] = None) -> EmbeddingTable:
  """Loads one table of an export (or a table directory itself).

  Args:
    embeddings: an export directory or a table's own directory.
    table: the table name (None when `embeddings` is the table directory).

  Returns:
    The EmbeddingTable.

  Raises:
    FileNotFoundError: no such table, naming the tables that exist.
  """
  return load_table(table_dir(embeddings, table))


def find_bias(embeddings: str, table: EmbeddingTable) -> Optional[np.ndarray]:
  """The per-row bias of a table when the export has one.

  Args:
    embeddings: the export directory.
    table: the table whose bias to find.

  Returns:
    float32 [size] aligned with `table`'s rows, or None.

  Raises:
    ValueError: a bias table exists but does not match the table's rows.
  """
  directory = layout.ExportLayout(embeddings).bias(table.name).root
  if not _is_table_dir(directory):
    return None
  bias = load_table(directory)
  if bias.dimension != 1:
    raise ValueError(f"bias table {directory!r} has dimension "
                     f"{bias.dimension}, expected 1")
  if list(bias.tokens) != list(table.tokens):
    raise ValueError(f"bias table {directory!r} rows ({len(bias.tokens)}) "
                     f"do not match table {table.name!r} rows "
                     f"({len(table.tokens)}) token by token")
  return bias.vectors[:, 0].astype(np.float32)


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


def word2vec_token(token: str) -> str:
  """A token as one word2vec field.

  Args:
    token: a row name.

  Returns:
    The token with each whitespace character replaced by `_` (the format
    splits on spaces), or `[EMPTY]` for an empty token.
  """
  escaped = "".join("_" if ch.isspace() else ch for ch in token)
  return escaped or EMPTY_TOKEN


def _write_checkpoint(directory: str, name: str, values: np.ndarray) -> None:
  """A V2 checkpoint with exactly one tensor named `name`, plus its state file.

  SaveV2 names the tensor exactly as given (object-based tf.train.Checkpoint
  would add `.ATTRIBUTES/VARIABLE_VALUE` paths), which is what
  `tensor_name_in_ckpt` and `tf.train.load_variable` need. The relative path
  in the state file keeps the directory relocatable.
  """
  prefix = layout.TableLayout(directory).checkpoint
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[name], shape_and_slices=[""],
                    tensors=[tf.constant(values, dtype=tf.float32)])
  tf.compat.v1.train.update_checkpoint_state(
      directory, layout.CHECKPOINT_PREFIX,
      all_model_checkpoint_paths=[layout.CHECKPOINT_PREFIX])


def _float(value: float) -> str:
  # Nine significant digits round-trip every float32 exactly.
  return f"{value:.9g}"


def _tsv_cell(text: str) -> str:
  return " ".join(str(text).replace("\t", " ").splitlines())


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
