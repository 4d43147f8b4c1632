"""How recommend-batch workers search: exact, or a calibrated IVF index.

--index chooses how users are scored: `exact` against every item,
`approximate` with a faiss IVF index over the items augmented by their
bias (maximum inner-product search, retrieval/approximate.py), or `auto`
(the default: approximate above approximate.APPROXIMATE_THRESHOLD items).
The approximate index is built and calibrated here, before the pipeline
runs, on a sample of user vectors (nprobe: the smallest reaching
--target_recall against exact search), written to OUT/ann_index.faiss and
read once per worker process. Built once rather than in every worker: one
calibration then holds for the index every worker searches (faiss' k-means
need not give the same cells on every machine and thread count), the
report names one nprobe, and no worker spends the build's minutes.
"""

import io
import os
from typing import Any, Dict, Tuple

import numpy as np

from core import artifacts
from core import files
from core import layout
from retrieval import approximate
from retrieval import index as index_lib
from retrieval import recommend as recommend_lib
from workflows import recommend_batch_options as options_lib
from workflows import recommend_tables as tables_lib

# Users the approximate index is calibrated on: a recall estimate within
# about 0.005 at 0.96.
CALIBRATION_QUERIES = 2000
INDEX_FILE = "ann_index.faiss"
INDEX_SEED = 0


def check_tables(options: options_lib.RecommendBatchOptions
                 ) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
  """The user table's directory and both metadata, once the tables fit.

  Args:
    options: the job's options.

  Returns:
    (the user table's directory, its metadata, the item table's metadata).

  Raises:
    FileNotFoundError: a table is not in the export.
    ValueError: the tables come from a model whose prediction is not their
      dot product, or differ in dimension.
  """
  user_dir = artifacts.table_dir(options.embeddings, options.user_table)
  user_meta = artifacts.read_metadata(user_dir)
  item_meta = artifacts.read_metadata(
      artifacts.table_dir(options.embeddings, options.item_table))
  refusal = recommend_lib.score_refusal(options.embeddings, user_meta,
                                        item_meta)
  if refusal:
    raise ValueError(refusal)
  if int(user_meta["dimension"]) != int(item_meta["dimension"]):
    raise ValueError(
        f"user table {options.user_table!r} has dimension "
        f"{user_meta['dimension']} and item table {options.item_table!r} "
        f"{item_meta['dimension']}: scoring needs the user and item tables "
        f"of one matrix-factorisation model")
  return user_dir, user_meta, item_meta


def index_kind(choice: str, num_items: int,
               threshold: int = approximate.APPROXIMATE_THRESHOLD) -> str:
  """The search a run uses: --index, with `auto` decided by the item count.

  Args:
    choice: AUTO, EXACT or APPROXIMATE (recommend_batch_options).
    num_items: rows of the item table.
    threshold: items above which `auto` searches approximately.

  Returns:
    EXACT or APPROXIMATE.
  """
  if choice != options_lib.AUTO:
    return choice
  return (options_lib.APPROXIMATE if num_items > threshold else
          options_lib.EXACT)


def _user_sample(user_dir: str, user_meta: Dict[str, Any], size: int,
                 seed: int) -> np.ndarray:
  """Up to `size` user vectors, a seeded sample of the table's real rows."""
  path = layout.TableLayout(user_dir).vectors_npy
  if os.path.exists(path):
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
  elif files.exists(path):
    vectors = np.load(io.BytesIO(files.read_bytes(path)), allow_pickle=False)
  else:
    vectors = artifacts.load_table(user_dir).vectors
  # A learned vocabulary's tokens come first, its OOV rows after them.
  real = int(user_meta.get("vocabulary_size") or len(vectors))
  real = min(real, len(vectors))
  rng = np.random.default_rng(seed)
  rows = np.sort(rng.choice(real, min(size, real), replace=False))
  return np.asarray(vectors[rows], dtype=np.float32)


def prepare_index(options: options_lib.RecommendBatchOptions
                  ) -> Tuple[tables_lib.ItemLoader, Dict[str, Any]]:
  """The item loader the workers use, and the "index" entry of the report.

  With the approximate search this builds the index over the augmented
  items, calibrates nprobe on a sample of users and writes the index to
  OUT/ann_index.faiss (see the module doc).

  Args:
    options: the job's options.

  Returns:
    (the ItemLoader, {"kind", "nlist", "nprobe", "calibrated_recall",
    "calibration_queries"}; the last four None or 0 for exact search).
  """
  user_dir, user_meta, item_meta = check_tables(options)
  use_bias = not options.no_bias
  kind = index_kind(options.index, int(item_meta["size"]))
  report = {"kind": kind, "nlist": None, "nprobe": None,
            "calibrated_recall": None, "calibration_queries": 0}
  if kind == options_lib.EXACT:
    return tables_lib.ItemLoader(options.embeddings, options.item_table,
                                 use_bias), report
  items = tables_lib.load_item_table(options.embeddings, options.item_table,
                                     use_bias)
  index = approximate.ApproximateIndex(
      approximate.augment_items(items.vectors, items.bias),
      metric=index_lib.DOT, seed=INDEX_SEED)
  del items
  queries = _user_sample(user_dir, user_meta, CALIBRATION_QUERIES,
                         INDEX_SEED)
  calibration = index.calibrate_queries(
      approximate.augment_queries(queries), options.target_recall,
      k=options.top_k)
  path = f"{layout.RecommendationsLayout(options.output).root}/{INDEX_FILE}"
  files.makedirs(layout.split(path)[0])
  files.write_bytes(path, index.to_bytes())
  report.update(nlist=index.nlist, nprobe=calibration.nprobe,
                calibrated_recall=round(calibration.recall, 4),
                calibration_queries=calibration.sample)
  return tables_lib.ItemLoader(options.embeddings, options.item_table,
                               use_bias, index_file=path,
                               nprobe=calibration.nprobe), report
