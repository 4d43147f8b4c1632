"""Exported embedding tables in notebooks: load them, search them, rank.

    frame = embeddings.table_frame("out/embeddings", "movie")
    embeddings.neighbors("out/embeddings", "movie", "Star Wars (1977)")
    embeddings.recommend("out/embeddings", ["1", "7"], seen="u1.base")

Each function reads an `embeddings export` output (or one table's
directory) and calls the same code the `embeddings neighbors` and
`embeddings recommend` commands call (retrieval/neighbors.py,
retrieval/recommend.py), so a frame here holds what the command prints.
"""

from typing import Dict, Mapping, Optional, Sequence, Set, Union

import pandas as pd

from core import artifacts
from retrieval import neighbors as neighbors_lib
from retrieval import recommend as recommend_lib

# A ratings file (path), user -> rated items, or a DataFrame of ratings
# with recommend_lib.USER_COLUMN and ITEM_COLUMN columns.
Seen = Union[str, Mapping[str, Set[str]], pd.DataFrame]


def load_table(embeddings_dir: str,
               table: Optional[str] = None) -> artifacts.EmbeddingTable:
  """Loads one exported table.

  Args:
    embeddings_dir: an `embeddings export` output, or one table's directory.
    table: the table name (e.g. "movie"; None when `embeddings_dir` is the
      table's directory).

  Returns:
    The EmbeddingTable: vectors, tokens, metadata, names, counts, groups.

  Raises:
    FileNotFoundError: no such table; the message names the tables there.
  """
  return artifacts.load(embeddings_dir, table)


def table_frame(embeddings_dir: str,
                table: Optional[str] = None) -> pd.DataFrame:
  """One exported table as a DataFrame (EmbeddingTable.to_frame).

  Args:
    embeddings_dir: an `embeddings export` output, or one table's directory.
    table: the table name (None when `embeddings_dir` is its directory).

  Returns:
    One line per row, indexed by row: token, name, count, group, and
    vector (each row's float32 array; `np.stack(frame.vector)` is the
    matrix).

  Raises:
    FileNotFoundError: no such table.
  """
  return load_table(embeddings_dir, table).to_frame()


def neighbors(embeddings_dir: str, table: str,
              item: Union[str, Sequence[str]], k: int = 10,
              min_count: int = neighbors_lib.DEFAULT_MIN_COUNT
             ) -> pd.DataFrame:
  """The nearest rows of items by cosine similarity, as `neighbors` finds.

  Args:
    embeddings_dir: an `embeddings export` output, or the table's directory.
    table: the table name, e.g. "movie".
    item: a token or a display name (title), or a list of them.
    k: neighbours per item.
    min_count: leave out neighbours seen in fewer training rows (0 keeps
      all; off for tables without counts).

  Returns:
    Columns query, rank, token, name, similarity, count
    (retrieval.neighbors.neighbors_frame).

  Raises:
    FileNotFoundError: no such table.
    retrieval.catalog.UnknownItemError: an item names no row, or several.
  """
  return neighbors_lib.neighbors_frame(load_table(embeddings_dir, table),
                                       item, k=k, min_count=min_count)


def _seen_items(seen: Optional[Seen],
                users: Sequence[str]) -> Optional[Dict[str, Set[str]]]:
  """user -> rated item tokens, from any of the Seen forms."""
  if seen is None:
    return None
  if isinstance(seen, str):
    return recommend_lib.read_seen(seen, users)
  if isinstance(seen, pd.DataFrame):
    columns = (recommend_lib.USER_COLUMN, recommend_lib.ITEM_COLUMN)
    missing = [c for c in columns if c not in seen.columns]
    if missing:
      raise ValueError(f"the seen ratings frame lacks column(s) {missing}")
    rated: Dict[str, Set[str]] = {}
    for user, item in zip(seen[columns[0]].astype(str),
                          seen[columns[1]].astype(str)):
      rated.setdefault(user, set()).add(item)
    return rated
  return {str(user): {str(item) for item in items}
          for user, items in seen.items()}


def recommend(embeddings_dir: str, users: Union[str, Sequence[str]],
              k: int = 10, seen: Optional[Seen] = None,
              user_table: str = "user", item_table: str = "movie",
              use_bias: bool = True) -> pd.DataFrame:
  """Top-k unseen items for users, as `embeddings recommend` ranks them.

  Items rank by user . item + item bias, which is the model's own ranking
  only for a matrix-factorisation export; other exports are refused.

  Args:
    embeddings_dir: an `embeddings export` output.
    users: a user token or a list of them.
    k: items per user.
    seen: items never recommended to a user: a ratings file (header with
      user_id and item_id, or MovieLens u.data), a mapping user -> items,
      or a DataFrame with user_id and item_id columns.
    user_table: the user feature's table.
    item_table: the item feature's table.
    use_bias: add the exported item bias (`bias_<item_table>`) when there
      is one.

  Returns:
    Columns user, rank, item, name, score
    (retrieval.recommend.recommendations_frame).

  Raises:
    FileNotFoundError: a table is missing.
    KeyError: a user is not in the user table.
    ValueError: the export is not a dot-product model's, or `seen` is
      malformed.
  """
  users = [users] if isinstance(users, str) else [str(u) for u in users]
  user_embeddings = load_table(embeddings_dir, user_table)
  item_embeddings = load_table(embeddings_dir, item_table)
  bias = (artifacts.find_bias(embeddings_dir, item_embeddings) if use_bias
          else None)
  return recommend_lib.recommendations_frame(
      user_embeddings, item_embeddings, users, k=k,
      seen=_seen_items(seen, users), item_bias=bias)
