"""The tables `embeddings recommend-batch` workers hold: items, user rows.

Both are loaded once per worker process (beam.utils.shared.Shared, in
DoFn.setup) from the export through core.files, so gs:// paths work and no
local path is baked into the job:

  * ItemTable: the item vectors, bias and optional approximate index that
    scoring needs, and item token -> row for the seen ratings.
  * UserRows: user token -> row of the user table. The seen side turns its
    user ids into these rows where it reads them, so what crosses the seen
    join's shuffle is two int32 per rating rather than a string; the
    scoring side names dead-lettered users from it.

Token lookups go through TokenRows: 64-bit hashes of the tokens, sorted,
searched with numpy and checked against the tokens themselves (an Arrow
string array), so a table costs about 30 bytes a token where a pandas or
Python index of strings costs over 100, and looking up a batch of ids runs
in numpy rather than per id in Python.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core import artifacts
from core import files
from core import layout
from retrieval import approximate
from retrieval import index as index_lib


def token_hashes(tokens: pa.Array) -> np.ndarray:
  """A hash of every token, the same in every process (pandas' hash_array).

  Args:
    tokens: an Arrow string array.

  Returns:
    uint64 [len(tokens)].
  """
  if len(tokens) == 0:
    return np.zeros(0, np.uint64)
  return pd.util.hash_array(tokens.to_numpy(zero_copy_only=False),
                            categorize=False)


def word2vec_tokens(tokens: pa.Array) -> pa.Array:
  """artifacts.word2vec_token of every token, Python only where needed."""
  # Printable ASCII but space holds no whitespace to escape.
  odd = pc.or_(pc.match_substring_regex(tokens, r"[^!-~]"),
               pc.equal(pc.utf8_length(tokens), 0))
  rows = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
  if not len(rows):
    return tokens
  values = tokens.to_numpy(zero_copy_only=False).copy()
  values[rows] = [artifacts.word2vec_token(token) for token in values[rows]]
  return pa.array(values, pa.string())


class TokenRows:
  """Token -> row of a list of tokens; a repeated token maps to its first row.

  Attributes:
    tokens: the tokens, an Arrow string array (row i named by tokens[i]).
  """

  def __init__(self, tokens: pa.Array):
    self.tokens = tokens
    hashes = token_hashes(tokens)
    # Stable, so among equal hashes the smallest row comes first.
    self._order = np.argsort(hashes, kind="stable")
    self._sorted = hashes[self._order]
    # Distinct tokens sharing a hash: the first one is found by hash, the
    # others through this dict (empty unless 64-bit hashes collide).
    self._collided: Dict[str, int] = {}
    same = np.flatnonzero(self._sorted[1:] == self._sorted[:-1]) + 1
    for row in np.sort(self._order[same]):
      self._collided.setdefault(tokens[int(row)].as_py(), int(row))

  def __len__(self) -> int:
    return len(self.tokens)

  def rows_of(self, tokens: pa.Array,
              hashes: Optional[np.ndarray] = None) -> np.ndarray:
    """The row of every token, -1 for tokens not in the table.

    Args:
      tokens: an Arrow string array.
      hashes: token_hashes(tokens), when the caller has them.

    Returns:
      int32 [len(tokens)].
    """
    if hashes is None:
      hashes = token_hashes(tokens)
    if not len(self.tokens) or not len(tokens):
      return np.full(len(tokens), -1, np.int32)
    at = np.minimum(np.searchsorted(self._sorted, hashes),
                    len(self._sorted) - 1)
    rows = self._order[at].astype(np.int32)
    found = self._sorted[at] == hashes
    candidates = np.flatnonzero(found)
    found[candidates] = pc.equal(
        self.tokens.take(pa.array(rows[candidates])),
        tokens.take(pa.array(candidates))).to_numpy(zero_copy_only=False)
    rows[~found] = -1
    if self._collided:
      for at in np.flatnonzero(~found):
        rows[at] = self._collided.get(tokens[int(at)].as_py(), -1)
    return rows

  def token_list(self, rows: np.ndarray) -> List[str]:
    """The tokens of some rows, in order."""
    return self.tokens.take(pa.array(rows, pa.int64())).to_pylist()


class ItemTable:
  """The item side of scoring: real rows, their tokens, bias, token -> row.

  A plain class (not a tuple) so beam.utils.shared can hold it by weak
  reference, once per worker process.

  Attributes:
    vectors: float32 [n, d].
    tokens: the row names.
    bias: optional float32 [n].
    ann: optional approximate.ApproximateIndex over
      approximate.augment_items(vectors, bias); None searches exactly.
  """

  def __init__(self, vectors: np.ndarray, tokens: Sequence[str],
               bias: Optional[np.ndarray] = None,
               ann: Optional[approximate.ApproximateIndex] = None):
    self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    self.tokens = list(tokens)
    self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
    self.ann = ann
    self._token_array = np.array(self.tokens, dtype=object)
    self._rows = TokenRows(pa.array(self.tokens, pa.string()))

  def rows_of(self, tokens: pa.Array) -> np.ndarray:
    """The row of every token (an Arrow string array), -1 if not in the table.

    Returns:
      int32 [len(tokens)].
    """
    return self._rows.rows_of(tokens)

  def token_list(self, rows: np.ndarray) -> List[str]:
    """The tokens of some rows, in order."""
    return self._token_array[rows].tolist()


def load_item_table(embeddings: str, table: str, use_bias: bool,
                    index_file: Optional[str] = None,
                    nprobe: Optional[int] = None) -> ItemTable:
  """Reads an export's item table (real rows only), its bias and index.

  Args:
    embeddings: the export directory (`embeddings export --output`).
    table: the item feature name.
    use_bias: add the exported `bias_<table>` when there is one.
    index_file: optional file of a serialized ApproximateIndex over the
      augmented real rows (approximate.augment_items).
    nprobe: the index's calibrated cells per query.

  Returns:
    The ItemTable.
  """
  loaded = artifacts.load(embeddings, table)
  rows = loaded.real_rows
  bias = artifacts.find_bias(embeddings, loaded) if use_bias else None
  ann = (approximate.ApproximateIndex.from_bytes(
      files.read_bytes(index_file), index_lib.DOT, nprobe)
         if index_file else None)
  return ItemTable(loaded.vectors[rows], [loaded.tokens[r] for r in rows],
                   None if bias is None else bias[rows], ann)


class ItemLoader:
  """A picklable loader of the item table (no closure over local state).

  Attributes:
    embeddings: the export directory.
    table: the item feature name.
    use_bias: add the exported item bias when there is one.
    index_file: optional serialized approximate index (load_item_table).
    nprobe: its calibrated cells per query.
  """

  def __init__(self, embeddings: str, table: str, use_bias: bool,
               index_file: Optional[str] = None,
               nprobe: Optional[int] = None):
    self.embeddings = embeddings
    self.table = table
    self.use_bias = use_bias
    self.index_file = index_file
    self.nprobe = nprobe

  def __call__(self) -> ItemTable:
    return load_item_table(self.embeddings, self.table, self.use_bias,
                           self.index_file, self.nprobe)


def load_user_rows(embeddings: str, table: str) -> TokenRows:
  """The user table's rows by their word2vec.txt token (vocab.txt, escaped).

  Args:
    embeddings: the export directory.
    table: the user feature name.

  Returns:
    TokenRows over every row of the table (reserved rows too: the user
    side drops them, so ratings of theirs are those of users without an
    embedding).
  """
  path = layout.TableLayout(artifacts.table_dir(embeddings, table)).vocab
  tokens = pa.array(artifacts.read_vocab_file(path), pa.string())
  return TokenRows(word2vec_tokens(tokens))


class UserRowsLoader:
  """A picklable loader of the user table's TokenRows (load_user_rows).

  Attributes:
    embeddings: the export directory.
    table: the user feature name.
  """

  def __init__(self, embeddings: str, table: str):
    self.embeddings = embeddings
    self.table = table

  def __call__(self) -> TokenRows:
    return load_user_rows(self.embeddings, self.table)


class JobTables:
  """What a worker holds: the item table and, to join seen items, user rows.

  A plain class so beam.utils.shared can hold it by weak reference.

  Attributes:
    items: the ItemTable.
    users: the user table's TokenRows (load_user_rows); None when the job
      has no seen items to join.
  """

  def __init__(self, items: ItemTable, users: Optional[TokenRows] = None):
    self.items = items
    self.users = users


class TablesLoader:
  """A picklable loader of a worker's JobTables.

  Attributes:
    items: the ItemLoader.
    users: a UserRowsLoader, or None when there are no seen items.
  """

  def __init__(self, items: ItemLoader,
               users: Optional[UserRowsLoader] = None):
    self.items = items
    self.users = users

  def __call__(self) -> JobTables:
    return JobTables(self.items(), self.users() if self.users else None)
