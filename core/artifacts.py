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
  vectors.npy
      the table as a NumPy array, [size, dim] float32: what `load_table`
      reads, so reading a table needs neither TensorFlow nor Keras.
  vectors.tsv, metadata.tsv
      the TensorBoard Embedding Projector's inputs: one tab-separated vector
      per row, and a header `row token label name count group` then one
      line per row (name, count and group are empty when the table has
      none; see EmbeddingTable).

A model's per-row biases are exported the same way as one-column tables
`bias_<feature>` with the feature's rows (metadata "table": "bias").

metadata.json also says which model made the table: "model_type" ("mf" or
"dnn") and "score": "dot" when the model's prediction is user . item plus
biases (so ranking items by it is the model's ranking), "model" otherwise.
A table without "score" (made by hand) counts as "dot".

Reading needs NumPy and the standard library only (core/files imports
TensorFlow for gs:// paths); writing needs TensorFlow for the checkpoint.
No Keras, no trainer: retrieval, batch recommendation and warm start all
read tables through `load_table` / `load`. The writer and the readers stay
in this one module (past 400 lines) so that the format is defined once.
"""

import dataclasses
import io
import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from core import files
from core import layout

FORMAT_VERSION = 1
DEFAULT_TOKEN = "[DEFAULT]"
EMPTY_TOKEN = "[EMPTY]"
# metadata.json "score": how the model that made a table predicts.
DOT_SCORE = "dot"
MODEL_SCORE = "model"
METADATA_TSV_COLUMNS = ("row", "token", "label", "name", "count", "group")


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


def model_score(metadata: Dict[str, Any]) -> str:
  """How the model that made a table predicts (metadata.json "score").

  Args:
    metadata: the table's metadata.

  Returns:
    DOT_SCORE (user . item + biases), or MODEL_SCORE (a network's output);
    DOT_SCORE for a table without "score" (made by hand).
  """
  return metadata.get("score") or DOT_SCORE


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
    names: optional display name per row, e.g. a movie's title.
    counts: optional int64 [size], the training-split rows of each row.
    groups: optional category per row that colours plots, e.g. a movie's
      first genre ("" for a row without one).
  """
  name: str
  vectors: np.ndarray
  tokens: List[str]
  metadata: Dict[str, Any]
  labels: Optional[List[str]] = None
  names: Optional[List[str]] = None
  counts: Optional[np.ndarray] = None
  groups: Optional[List[str]] = None

  def __post_init__(self):
    self.vectors = np.asarray(self.vectors, dtype=np.float32)
    if self.vectors.ndim != 2:
      raise ValueError(f"table {self.name!r}: vectors must be 2-D, got shape "
                       f"{self.vectors.shape}")
    self.tokens = [str(token) for token in self.tokens]
    if len(set(self.tokens)) != len(self.tokens):
      raise ValueError(f"table {self.name!r}: tokens are not unique")
    self.labels = list(self.tokens if self.labels is None else self.labels)
    if self.names is not None:
      self.names = [str(name) for name in self.names]
    if self.groups is not None:
      self.groups = [str(group) for group in self.groups]
    if self.counts is not None:
      self.counts = np.asarray(self.counts, dtype=np.int64).ravel()
    for what, values in (("tokens", self.tokens), ("labels", self.labels),
                         ("names", self.names), ("counts", self.counts),
                         ("groups", self.groups)):
      if values is not None and len(values) != self.vectors.shape[0]:
        raise ValueError(f"table {self.name!r}: {len(values)} {what} for "
                         f"{self.vectors.shape[0]} rows")

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

  @property
  def score(self) -> str:
    """How the model predicts: DOT_SCORE (user . item) or MODEL_SCORE."""
    return model_score(self.metadata)

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

  def to_frame(self):
    """The table as a pandas DataFrame, one line per row, for notebooks.

    Returns:
      A DataFrame indexed by row with the columns token, name, count,
      group and vector: name, count and group are None (count: <NA>,
      pandas' nullable Int64) where the table has none; vector holds each
      row's float32 [dimension] array (`np.stack(frame.vector)` gives the
      matrix back).
    """
    # pandas is for notebooks; the commands that load tables start without
    # it (it costs a noticeable part of a second).
    # pylint: disable-next=g-import-not-at-top
    import pandas as pd
    size = self.size
    counts = ([None] * size if self.counts is None else
              [int(count) for count in self.counts])
    return pd.DataFrame({
        "token": self.tokens,
        "name": self.names if self.names is not None else [None] * size,
        "count": pd.array(counts, dtype="Int64"),
        "group": self.groups if self.groups is not None else [None] * size,
        "vector": list(self.vectors),
    }, index=pd.RangeIndex(size, name="row"))

  def save(self, directory: str) -> str:
    """Writes the artifact directory (see the module docstring).

    Args:
      directory: where to write; created if missing. Existing artifact files
        are overwritten.

    Returns:
      `directory`.
    """
    paths = layout.TableLayout(directory)
    files.makedirs(directory)
    metadata = dict(self.metadata)
    metadata.update({
        "format_version": FORMAT_VERSION,
        "name": self.name,
        "size": self.size,
        "dimension": self.dimension,
        "tensor_name": self.tensor_name,
        "checkpoint": layout.CHECKPOINT_PREFIX,
        "files": {"vocabulary": layout.VOCAB_FILE,
                  "vectors": layout.VECTORS_NPY,
                  "word2vec": layout.WORD2VEC_FILE,
                  "vectors_tsv": layout.VECTORS_TSV,
                  "metadata_tsv": layout.METADATA_TSV},
    })
    metadata.setdefault("vocabulary_size", None)
    metadata.setdefault("num_oov_buckets", 0)
    _write_checkpoint(directory, metadata["tensor_name"], self.vectors)
    buffer = io.BytesIO()
    np.save(buffer, self.vectors, allow_pickle=False)
    files.write_bytes(paths.vectors_npy, buffer.getvalue())
    files.write_text(paths.vocab,
                     "".join(f"{token}\n" for token in self.tokens))
    files.write_text(paths.metadata,
                     json.dumps(metadata, indent=2, default=str) + "\n")
    files.write_text(paths.word2vec, _word2vec_text(self.tokens, self.vectors))
    files.write_text(paths.vectors_tsv,
                     "".join("\t".join(_float(x) for x in row) + "\n"
                             for row in self.vectors))
    files.write_text(paths.metadata_tsv, self._metadata_tsv())
    self.metadata = metadata
    return directory

  def _metadata_tsv(self) -> str:
    """metadata.tsv: the header, then row, token, label, name, count, group."""
    empty = [""] * self.size
    names = self.names if self.names is not None else empty
    counts = empty if self.counts is None else [str(c) for c in self.counts]
    groups = self.groups if self.groups is not None else empty
    lines = ["\t".join(METADATA_TSV_COLUMNS)]
    for row, cells in enumerate(zip(self.tokens, self.labels, names, counts,
                                    groups)):
      lines.append("\t".join([str(row)] + [_tsv_cell(c) for c in cells]))
    return "".join(line + "\n" for line in lines)


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


def _read_vectors(paths: layout.TableLayout) -> np.ndarray:
  """vectors.npy, or vectors.tsv (exact too) for exports made before it."""
  if files.exists(paths.vectors_npy):
    return np.load(io.BytesIO(files.read_bytes(paths.vectors_npy)),
                   allow_pickle=False)
  rows = [line.split("\t") for line in
          files.read_text(paths.vectors_tsv).splitlines() if line]
  return np.array(rows, dtype=np.float32)


def _read_row_columns(path: str) -> Dict[str, List[str]]:
  """metadata.tsv's columns by header name; {} when the file is missing.

  The older three-column file (row, token, label) reads as those columns.
  """
  if not files.exists(path):
    return {}
  lines = [line for line in files.read_text(path).split("\n") if line]
  header = lines[0].split("\t")
  columns: Dict[str, List[str]] = {name: [] for name in header}
  for line in lines[1:]:
    cells = line.split("\t")
    cells += [""] * (len(header) - len(cells))
    for name, cell in zip(header, cells):
      columns[name].append(cell)
  return columns


def load_table(directory: str) -> EmbeddingTable:
  """Reads one artifact directory written by `EmbeddingTable.save`.

  The vectors come from vectors.npy (exact float32), the tokens from
  vocab.txt, the description from metadata.json and the labels, names,
  counts and groups from metadata.tsv; a name, count or group column that
  is empty in every row reads back as None. No TensorFlow is needed for
  local paths.

  Args:
    directory: an artifact directory, e.g. `<export>/movie`.

  Returns:
    The EmbeddingTable, equal to the one saved.

  Raises:
    FileNotFoundError: `directory` is not an artifact directory.
  """
  paths = layout.TableLayout(directory)
  metadata = read_metadata(directory)
  columns = _read_row_columns(paths.metadata_tsv)

  def column(name):
    values = columns.get(name)
    return values if values and any(values) else None

  counts = column("count")
  return EmbeddingTable(
      name=metadata["name"], vectors=_read_vectors(paths),
      tokens=read_vocab_file(paths.vocab), metadata=metadata,
      labels=columns.get("label"), names=column("name"),
      counts=None if counts is None else np.array(
          [int(count or 0) for count in counts], dtype=np.int64),
      groups=column("group"))


def _is_table_dir(directory: str) -> bool:
  return files.exists(layout.TableLayout(directory).metadata)


def table_names(export_dir: str) -> List[str]:
  """The tables of an export directory, sorted."""
  if not files.isdir(export_dir):
    return []
  exported = layout.ExportLayout(export_dir)
  return [entry for entry in files.listdir(export_dir)
          if _is_table_dir(exported.table(entry).root)]


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
  lines = files.read_text(path).split("\n")
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
  tf = files.tensorflow()
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
