"""The generator's truth as a yardstick for model quality.

  noise floor        the RMSE on the eval split of the best possible
                     predictor, E[rating | the generator's truth].
  planted precision  cosine precision@k of the exported movie vectors
                     against the planted clusters: for a uniform sample of
                     the catalog, for queries drawn in proportion to their
                     ratings (what a rated movie gets on average), and per
                     band of training ratings per movie.
  ceilings           the same precision of the generator's own item factors
                     (1.0 by construction), and of the data's ceiling: each
                     movie's factor fitted by ridge regression on its
                     training ratings with everything else taken from the
                     truth (user factors, biases, time bias). No model that
                     learns the user side too can beat the data's ceiling
                     by much; a tail movie with a handful of noisy ratings
                     cannot be placed in its cluster, by any model.

Run by benchmarks/scale_floor.py quality (which scale_bench runs).
"""

import json
import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from scipy import special

from core import artifacts
from pipelines import split as split_lib
from retrieval import catalog

BLOCK_BYTES = 4 << 20
SEED = 1
# Lower edges of the bands of training ratings per movie.
BAND_EDGES = (1, 20, 50, 200)


# ---------------------------------------------------------------- math


def expected_rating(mean: np.ndarray, noise: float, step: float
                   ) -> Tuple[np.ndarray, np.ndarray]:
  """E and Var of clip(round_to_step(mean + N(0, noise^2)), 1, 5).

  The generator's rating model (pipelines/world.py); the predictor with the
  least squared error given everything but the noise draw is this E.

  Args:
    mean: the rating model's value before noise, per row.
    noise: the noise's standard deviation.
    step: the rating step (1.0 or 0.5).

  Returns:
    (expected rating, its variance), float64 per row.
  """
  mean = np.asarray(mean, dtype=np.float64)
  levels = 1.0 + step * np.arange(int(round(4.0 / step)) + 1)
  if noise <= 0:
    value = np.clip(np.round(mean / step) * step, 1.0, 5.0)
    return value, np.zeros_like(value)
  # Level l takes [l - step/2, l + step/2); the end levels take the tails.
  edges = (levels[:-1] + step / 2)[None, :]
  below = special.ndtr((edges - mean[:, None]) / noise)
  cdf = np.concatenate([np.zeros((len(mean), 1)), below,
                        np.ones((len(mean), 1))], axis=1)
  probs = np.diff(cdf, axis=1)
  first = probs @ levels
  second = probs @ (levels ** 2)
  return first, np.maximum(second - first ** 2, 0.0)


def noise_floor(ratings: np.ndarray, mean: np.ndarray, noise: float,
                step: float) -> Dict[str, float]:
  """The RMSE a perfect model gets on these rows.

  Args:
    ratings: the observed ratings.
    mean: the rating model's value before noise for the same rows.
    noise, step: the generator's noise and rating step.

  Returns:
    rmse_of_expected (observed ratings vs E[rating]), rmse_expected (the
    square root of the mean variance: what the former tends to), rows.
  """
  value, variance = expected_rating(mean, noise, step)
  error = np.asarray(ratings, dtype=np.float64) - value
  return {"rmse_of_expected": float(np.sqrt(np.mean(error ** 2))),
          "rmse_expected": float(np.sqrt(np.mean(variance))),
          "rows": int(len(value))}



def neighbour_hits(vectors: np.ndarray, labels: np.ndarray,
                   queries: np.ndarray, k: int) -> np.ndarray:
  """Per query row, how many of its k cosine neighbours share its label.

  The measure of retrieval.neighbors.neighbor_precision (own row excluded,
  a hit is a neighbour with the query's label), for a sample of queries.

  Args:
    vectors: [n, d] rows.
    labels: [n] true group per row.
    queries: row numbers to query (repeats allowed).
    k: neighbours per query.

  Returns:
    int64 [len(queries)] hits in 0..k.
  """
  unit = np.asarray(vectors, dtype=np.float32)
  unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
  flat = faiss.IndexFlatIP(unit.shape[1])
  flat.add(np.ascontiguousarray(unit))
  _, ids = flat.search(np.ascontiguousarray(unit[queries]), k + 1)
  hits = np.zeros(len(queries), dtype=np.int64)
  for row, (query, found) in enumerate(zip(queries, ids)):
    kept = [int(i) for i in found if i >= 0 and i != query][:k]
    hits[row] = int(np.sum(labels[kept] == labels[query]))
  return hits


def cluster_precision(vectors: np.ndarray, labels: np.ndarray,
                      queries: np.ndarray, k: int) -> float:
  """Cosine neighbour precision@k of the query rows against all rows.

  Args:
    vectors, labels, queries, k: as neighbour_hits.

  Returns:
    Precision in [0, 1].
  """
  return float(neighbour_hits(vectors, labels, queries, k).sum()
               / (k * len(queries)))

# ---------------------------------------------------------- the world


def read_ratings(path: str, columns: Sequence[str]
                ) -> Iterator[pa.RecordBatch]:
  """Streams the generated ratings.csv in blocks of BLOCK_BYTES.

  Args:
    path: a ratings.csv of `embeddings generate`.
    columns: the columns to read.

  Yields:
    RecordBatches with typed columns.
  """
  types = {"user_id": pa.string(), "item_id": pa.string(),
           "rating": pa.float64(), "timestamp": pa.int64()}
  reader = pa_csv.open_csv(
      path, read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
      convert_options=pa_csv.ConvertOptions(
          column_types=types, include_columns=list(columns)))
  yield from reader


def split_settings(spec_split) -> Tuple[Tuple[str, ...], float, int]:
  """A spec's split as (key columns, eval fraction, seed)."""
  return (tuple(spec_split.key), spec_split.eval_fraction, spec_split.seed)


def generator_index(ids: pa.Array) -> np.ndarray:
  """"u17" / "m42" -> 16 / 41 (the generator's 1-based ids)."""
  return pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int64()).to_numpy(
      zero_copy_only=False) - 1


def baseline_rating(batch: pa.RecordBatch, params: Mapping,
                    truth: Mapping[str, np.ndarray]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The rating model without its user-item affinity, for ratings rows.

  Args:
    batch: rows with user_id, item_id and timestamp.
    params: truth/params.json.
    truth: user_bias, item_bias arrays.

  Returns:
    (user index, item index, global_mean + biases - affinity / K +
    time_bias) per row.
  """
  users = generator_index(batch.column("user_id"))
  items = generator_index(batch.column("item_id"))
  since = batch.column("timestamp").to_numpy() - params["start_timestamp"]
  weekday = (since // 86400) % 7
  hour = (since // 3600) % 24
  base = (params["global_mean"] + truth["user_bias"][users]
          + truth["item_bias"][items].astype(np.float64)
          - params["affinity"] / params["clusters"]
          + np.asarray(params["time_bias"])[weekday, hour])
  return users, items, base


def model_mean(batch: pa.RecordBatch, params: Mapping,
               truth: Mapping[str, np.ndarray]) -> np.ndarray:
  """The generator's rating model before noise, for ratings rows.

  Args:
    batch: rows with user_id, item_id and timestamp.
    params: truth/params.json.
    truth: user_factors, item_factors, user_bias, item_bias arrays.

  Returns:
    float64 per row: global_mean + biases + p.q - affinity / K + time_bias.
  """
  users, items, base = baseline_rating(batch, params, truth)
  return base + np.einsum("ij,ij->i", truth["user_factors"][users],
                          truth["item_factors"][items], dtype=np.float64)


class ItemRidge:
  """Per-item ridge regression of residual ratings on known user factors.

  Accumulates each item's Gram matrix sum(p p^T) and moment sum(y p) over
  streamed rows: O(items * dim^2) memory, none per rating.
  """

  def __init__(self, items: int, dim: int):
    self.gram = np.zeros((items, dim, dim))
    self.moment = np.zeros((items, dim))

  def add(self, items: np.ndarray, user_factors: np.ndarray,
          residuals: np.ndarray) -> None:
    """Adds rows: item index, its rater's factor and the residual rating."""
    if len(items) == 0:
      return
    order = np.argsort(items, kind="stable")
    items = items[order]
    factors = np.asarray(user_factors, np.float64)[order]
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
    self.gram[items[starts]] += np.add.reduceat(
        np.einsum("ni,nj->nij", factors, factors), starts, axis=0)
    self.moment[items[starts]] += np.add.reduceat(
        factors * np.asarray(residuals, np.float64)[order, None], starts,
        axis=0)

  def solve(self, ridge: float) -> np.ndarray:
    """[items, dim] argmin_q sum (y - p.q)^2 + ridge |q|^2 (0 unrated)."""
    dim = self.moment.shape[1]
    return np.linalg.solve(self.gram + ridge * np.eye(dim),
                           self.moment[..., None])[..., 0]


def ridge_strength(params: Mapping, item_factors: np.ndarray) -> float:
  """noise variance / prior variance per dimension: the MAP ridge.

  The rating noise plus the rounding's (step^2 / 12), over the item
  factors' mean square per dimension (a zero-mean isotropic prior: the
  clusters are what is to be found, so the prior does not know them).
  """
  noise = params["noise"] ** 2 + params["rating_step"] ** 2 / 12.0
  return float(noise / np.mean(np.square(item_factors, dtype=np.float64)))


def catalog_rows(table: artifacts.EmbeddingTable, rows: Sequence[int]
                ) -> np.ndarray:
  """The generator's item index of each table row ("m42" -> 41)."""
  return generator_index(pa.array([table.tokens[r] for r in rows],
                                  pa.string()))


# -------------------------------------------------------- the measures


def query_groups(counts: np.ndarray, sample: int, rng: np.random.Generator
                ) -> Dict[str, np.ndarray]:
  """The query rows of each measure of planted precision.

  Args:
    counts: training ratings per row.
    sample: queries of "uniform" and "per_rating"; each band gets a
      quarter of it.
    rng: the sampler.

  Returns:
    "uniform" (rows without repeats), "per_rating" (drawn with repeats in
    proportion to counts: the movie of a random training rating) and
    "band <lo>-<hi>" per BAND_EDGES band that has rows.
  """
  size = len(counts)
  groups = {}
  groups["uniform"] = np.sort(rng.choice(size, min(sample, size),
                                         replace=False))
  total = counts.sum()
  if total > 0:
    groups["per_rating"] = rng.choice(size, sample, p=counts / total)
  for name, (low, high) in zip(band_names(), _band_ranges()):
    inside = np.flatnonzero((counts >= low) & (
        counts < high if high else True))
    if len(inside):
      groups[name] = np.sort(rng.choice(
          inside, min(max(sample // 4, 1), len(inside)), replace=False))
  return groups


def _band_ranges() -> List[Tuple[int, Optional[int]]]:
  return list(zip(BAND_EDGES, BAND_EDGES[1:] + (None,)))


def band_names() -> List[str]:
  """"band 1-19", ..., "band 200+": the bands of BAND_EDGES in order."""
  return [f"band {low}-{high - 1}" if high else f"band {low}+"
          for low, high in _band_ranges()]


def group_order(name: str) -> int:
  """Sort key of query_groups' names: uniform, per_rating, the bands."""
  order = ["uniform", "per_rating"] + band_names()
  return order.index(name) if name in order else len(order)


def planted_precision(vectors: Mapping[str, np.ndarray], labels: np.ndarray,
                      groups: Mapping[str, np.ndarray], k: int) -> Dict:
  """Precision@k of each set of vectors for each group of queries.

  Args:
    vectors: name -> [n, d] rows (the same n rows, e.g. the model's, the
      data ceiling's, the truth's).
    labels: [n] planted cluster per row.
    groups: query_groups(...).
    k: neighbours per query.

  Returns:
    group -> {"queries": q, name: precision, ...}.
  """
  order = list(groups)
  every = np.concatenate([groups[g] for g in order])
  ends = np.cumsum([len(groups[g]) for g in order])
  result = {g: {"queries": int(len(groups[g]))} for g in order}
  for name, rows in vectors.items():
    hits = np.split(neighbour_hits(rows, labels, every, k), ends[:-1])
    for group, got in zip(order, hits):
      result[group][name] = round(float(got.sum() / (k * len(got))), 4)
  return result


def quality(data: str, export: Optional[str], spec, sample: int, k: int
           ) -> Dict:
  """The noise floor on the eval split and planted-cluster precision.

  One pass over ratings.csv: eval rows feed the noise floor, the other
  rows the data ceiling's per-movie ridge fits.

  Args:
    data: the generated folder (ratings.csv, truth/).
    export: an mf export (its movie table, with training counts), or None.
    spec: the loaded configs/synthetic.yaml (its split).
    sample: query movies per measure (module docstring).
    k: neighbours per movie.

  Returns:
    {"noise_floor": ..., "planted": ...} (planted with an export only).
  """
  with open(os.path.join(data, "truth", "params.json"), encoding="utf-8") as f:
    params = json.load(f)
  truth = {name: np.load(os.path.join(data, "truth", f"{name}.npy"))
           for name in ("user_factors", "item_factors", "user_bias",
                        "item_bias")}
  key, fraction, seed = split_settings(spec.split)
  ridge = ItemRidge(*truth["item_factors"].shape)
  ratings, means = [], []
  cache: Dict[str, bool] = {}
  for batch in read_ratings(os.path.join(data, "ratings.csv"),
                            ("user_id", "item_id", "rating", "timestamp")):
    in_eval = split_lib.eval_mask(split_lib.split_keys(batch, key), fraction,
                                  seed, cache)
    part = batch.filter(pa.array(in_eval))
    ratings.append(part.column("rating").to_numpy())
    means.append(model_mean(part, params, truth))
    if export:
      train = batch.filter(pa.array(~in_eval))
      users, items, base = baseline_rating(train, params, truth)
      ridge.add(items, truth["user_factors"][users],
                train.column("rating").to_numpy() - base)
  result = {"noise_floor": dict(
      noise_floor(np.concatenate(ratings), np.concatenate(means),
                  params["noise"], params["rating_step"]),
      noise=params["noise"], rating_step=params["rating_step"])}
  if export:
    result["planted"] = _planted(data, export, params, truth, ridge, sample,
                                 k)
  return result


def _planted(data: str, export: str, params: Mapping,
             truth: Mapping[str, np.ndarray], ridge: ItemRidge, sample: int,
             k: int) -> Dict:
  clusters = catalog.read_truth_clusters(
      os.path.join(data, "truth", "item_clusters.csv"))
  table = artifacts.load(export, "movie")
  rows = [r for r in table.real_rows if table.tokens[r] in clusters]
  labels = np.array([clusters[table.tokens[r]] for r in rows])
  index = catalog_rows(table, rows)
  strength = ridge_strength(params, truth["item_factors"])
  vectors = {"model": table.vectors[rows],
             "data_ceiling": ridge.solve(strength)[index],
             "truth_factors": truth["item_factors"][index]}
  counts = (table.counts[rows] if table.counts is not None
            else np.ones(len(rows), dtype=np.int64))
  groups = query_groups(counts, sample, np.random.default_rng(SEED))
  measured = planted_precision(vectors, labels, groups, k)
  uniform = measured["uniform"]
  return {"precision": uniform["model"],
          "truth_factors_precision": uniform["truth_factors"],
          "data_ceiling_precision": uniform["data_ceiling"],
          "per_rating_precision": measured.get("per_rating", {}).get("model"),
          "groups": measured, "ridge": round(strength, 4), "k": k,
          "queries": uniform["queries"], "items": len(rows),
          "counts": "training" if table.counts is not None else "none",
          "source": f"{export}/movie", "target": 0.9}
