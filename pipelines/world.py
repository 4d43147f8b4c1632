"""The synthetic world: users, items, their latent factors and ratings.

A World draws everything from a Params (pipelines/world_params.py):

Users and items belong to K taste clusters; p and q are sqrt(affinity) *
(centroid + spread * N(0, I/d)) with orthonormal centroids, so a user's
own-cluster items score about `affinity` higher than the others and item
embeddings learned by matrix factorisation group by cluster. Side features
carry cluster signal: each cluster has its own age mean, gender mix,
occupation and genre mix.

Who rates what: each user gets an exact number of ratings (skewed activity,
at least one), drawn without repeats where the catalogue allows it; a
fraction `in_cluster` of a user's picks come from their own cluster (people
watch what they like), the rest from the whole catalogue. Item popularity is
Zipf-like mixed with a uniform floor so every item has ratings. Timestamps
fall in a fixed five-year window with more ratings on weekends and evenings.

Ratings are drawn in blocks of whole users; each block draws from its own
random stream keyed by (seed, block index), so memory is O(users + items +
block) and the draws do not depend on how the writer slices them.
"""

import math
from typing import Dict, Tuple

import numpy as np

from pipelines import world_params

def _rng(seed: int, *key: int) -> np.random.Generator:
  """An independent stream per (seed, key): blocks never share draws."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _cdf(weights: np.ndarray) -> np.ndarray:
  cdf = np.cumsum(weights, dtype=np.float64)
  cdf /= cdf[-1]
  cdf[-1] = 1.0
  return cdf


def _zipf_weights(n: int, exponent: float, uniform: float,
                  rng: np.random.Generator) -> np.ndarray:
  """Zipf(exponent) over a random ranking, mixed with a uniform floor."""
  ranks = rng.permutation(n) + 1.0
  zipf = ranks ** -exponent
  zipf /= zipf.sum()
  return (1.0 - uniform) * zipf + uniform / n


def _allocate(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
  """Splits `total` into integers >= 1 proportional to weights, each <= cap.

  Largest-remainder rounding, so the result sums to `total` exactly.
  """
  n = len(weights)
  counts = np.ones(n, dtype=np.int64)
  capped = np.zeros(n, dtype=bool)
  remaining = total - n
  while remaining > 0:
    w = np.where(capped, 0.0, weights)
    share = remaining * w / w.sum()
    add = np.floor(share).astype(np.int64)
    short = remaining - int(add.sum())
    if short:
      order = np.argsort(-(share - add), kind="stable")
      add[order[:short]] += 1
    counts += add
    over = counts > cap
    remaining = int((counts[over] - cap).sum())
    counts[over] = cap
    capped |= counts >= cap
  return counts


def _balanced_clusters(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
  """Cluster ids 0..k-1 in random order, sizes differing by at most one."""
  return rng.permutation(np.arange(n) % k).astype(np.int32)


def _near_orthogonal(k: int, dim: int, rng: np.random.Generator) -> np.ndarray:
  """k unit vectors: orthonormal when k <= dim, random otherwise."""
  gauss = rng.standard_normal((dim, max(k, 1)))
  if k <= dim:
    q, _ = np.linalg.qr(gauss)
    return q[:, :k].T.copy()
  return (gauss / np.linalg.norm(gauss, axis=0)).T.copy()


def _cluster_mix(k: int, n: int, primary: int, weight: float,
                 rng: np.random.Generator) -> np.ndarray:
  """[k, n] category distributions: each cluster favours `primary` categories.

  Primaries rotate through a random order of the categories, so clusters
  favour different ones while there are enough to go round.
  """
  order = rng.permutation(n)
  mix = np.full((k, n), (1.0 - weight) / n)
  for c in range(k):
    favoured = order[(c * primary + np.arange(primary)) % n]
    mix[c, favoured] += weight / primary
  return mix / mix.sum(axis=1, keepdims=True)


def _sample_rows(probs: np.ndarray, rows: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
  """One category per entry of `rows`, from distribution probs[rows]."""
  u = rng.random(len(rows))
  picks = np.empty(len(rows), dtype=np.int64)
  for c in range(probs.shape[0]):
    where = rows == c
    picks[where] = np.searchsorted(_cdf(probs[c]), u[where], side="right")
  return np.minimum(picks, probs.shape[1] - 1)


class World:
  """Users, items and their latent parameters: O(users + items) memory."""

  def __init__(self, params: world_params.Params):
    p = params
    self.params = p
    rng = _rng(p.seed, 0)
    k, d = p.clusters, max(p.dim, 1)
    self.centroids = _near_orthogonal(k, d, rng)
    self.user_cluster = _balanced_clusters(p.users, k, rng)
    self.item_cluster = _balanced_clusters(p.items, k, rng)
    scale = math.sqrt(p.affinity)
    self.user_factors = (scale * (
        self.centroids[self.user_cluster] + p.spread / math.sqrt(d)
        * rng.standard_normal((p.users, d)))).astype(np.float32)
    self.item_factors = (scale * (
        self.centroids[self.item_cluster] + p.spread / math.sqrt(d)
        * rng.standard_normal((p.items, d)))).astype(np.float32)
    self.user_bias = (p.user_bias_std
                      * rng.standard_normal(p.users)).astype(np.float32)
    self.item_bias = (p.item_bias_std
                      * rng.standard_normal(p.items)).astype(np.float32)

    item_weights = _zipf_weights(p.items, p.item_zipf, p.uniform_floor, rng)
    self.item_cdf = _cdf(item_weights)
    # Per-cluster popularity, searchable in one sorted array: cluster c's
    # cumulative shares are stored as c + cdf_c, so searching c + u (u < 1)
    # always lands inside cluster c.
    self.items_by_cluster = np.argsort(self.item_cluster, kind="stable")
    sizes = np.bincount(self.item_cluster, minlength=k)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    self.cluster_cdf = np.concatenate([
        c + _cdf(item_weights[self.items_by_cluster[bounds[c]:bounds[c + 1]]])
        for c in range(k)])

    user_weights = _zipf_weights(p.users, p.user_zipf, p.uniform_floor, rng)
    self.ratings_per_user = _allocate(p.rows, user_weights, p.max_per_user)
    self.user_offsets = np.concatenate(
        [[0], np.cumsum(self.ratings_per_user)])
    # Whole users per block, about block_rows ratings each.
    self.users_per_block = max(1, int(p.block_rows * p.users // p.rows))

    self.time_bias = world_params.time_bias_table(p.time_amplitude)
    self.weekday_cdf = _cdf(np.asarray(world_params.WEEKDAY_WEIGHTS))
    self.hour_cdf = _cdf(np.asarray(world_params.HOUR_WEIGHTS))

  @property
  def num_blocks(self) -> int:
    """Blocks of whole users, each with its own random stream."""
    return -(-self.params.users // self.users_per_block)

  def sample_items(self, clusters: np.ndarray, own: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Items for picks of users in `clusters`; own-cluster where `own`.

    Args:
      clusters: each pick's user's cluster.
      own: which picks come from the user's own cluster (by its
        popularity), the rest from the whole catalogue.
      rng: the random stream.

    Returns:
      One item index per pick.
    """
    last = self.params.items - 1
    u = rng.random(len(clusters))
    picks = np.empty(len(clusters), dtype=np.int64)
    other = ~own
    picks[other] = np.minimum(
        np.searchsorted(self.item_cdf, u[other], side="right"), last)
    in_pos = np.searchsorted(self.cluster_cdf, clusters[own] + u[own],
                             side="right")
    picks[own] = self.items_by_cluster[np.minimum(in_pos, last)]
    return picks

  def _distinct_items(self, local: np.ndarray, num_users: int,
                      clusters: np.ndarray, items: np.ndarray,
                      own: np.ndarray, rng: np.random.Generator) -> None:
    """Redraws, in place, the items of (user, item) pairs drawn twice.

    First from the same mix, then from the whole catalogue by popularity,
    then uniformly, which always has room (a user rates at most half the
    catalogue unless rows force more).

    Args:
      local: each pick's user, numbered from 0 within the block.
      num_users: users in the block.
      clusters: each pick's user's cluster.
      items: each pick's item, changed in place.
      own: which picks come from the user's own cluster.
      rng: the block's random stream.
    """
    p = self.params
    check = np.arange(len(local))
    for attempt in range(16):
      key = local[check] * p.items + items[check]
      order = np.argsort(key, kind="stable")
      repeat = np.sort(check[order[1:][key[order[1:]] == key[order[:-1]]]])
      count = len(repeat)
      if not count:
        break
      if attempt < 8:
        own_redraw = own[repeat] if attempt < 4 else np.zeros(count, bool)
        items[repeat] = self.sample_items(clusters[repeat], own_redraw, rng)
      else:
        items[repeat] = rng.integers(0, p.items, count)
      # Only users who had a repeat can have one now.
      touched = np.zeros(num_users, dtype=bool)
      touched[local[repeat]] = True
      check = np.nonzero(touched[local])[0]

  def _times(self, n: int, rng: np.random.Generator
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unix seconds, weekday 0..6, hour 0..23) of n ratings."""
    weeks = rng.integers(0, world_params.NUM_WEEKS, n)
    weekday = np.searchsorted(self.weekday_cdf, rng.random(n), side="right")
    weekday = np.minimum(weekday, 6)
    hour = np.minimum(np.searchsorted(self.hour_cdf, rng.random(n),
                                      side="right"), 23)
    seconds = rng.integers(0, 3600, n)
    timestamps = (world_params.START_TIMESTAMP + weeks * 7 * 86400
                  + weekday * 86400 + hour * 3600 + seconds).astype(np.int64)
    return timestamps, weekday, hour

  def ratings_block(self, block: int) -> Dict[str, np.ndarray]:
    """Ratings of the block's users: user, item, rating, timestamp arrays.

    Args:
      block: block index in [0, num_blocks).

    Returns:
      int32 user and item indices (0-based), float64 rating, int64 timestamp,
      rows shuffled within the block.
    """
    p = self.params
    rng = _rng(p.seed, 2, block)
    first = block * self.users_per_block
    last = min(p.users, first + self.users_per_block)
    counts = self.ratings_per_user[first:last]
    users = np.repeat(np.arange(first, last, dtype=np.int64), counts)
    n = len(users)
    clusters = self.user_cluster[users]
    own = rng.random(n) < p.in_cluster
    items = self.sample_items(clusters, own, rng)
    self._distinct_items(users - first, last - first, clusters, items, own,
                         rng)
    timestamps, weekday, hour = self._times(n, rng)

    affinity = np.einsum("ij,ij->i", self.user_factors[users],
                         self.item_factors[items], dtype=np.float64)
    raw = (p.global_mean + self.user_bias[users] + self.item_bias[items]
           + affinity - p.affinity / p.clusters + self.time_bias[weekday, hour]
           + p.noise * rng.standard_normal(n))
    rating = np.clip(np.round(raw / p.rating_step) * p.rating_step, 1.0, 5.0)

    order = rng.permutation(n)
    return {"user": users[order].astype(np.int32),
            "item": items[order].astype(np.int32),
            "rating": rating[order], "timestamp": timestamps[order]}

  def users_table(self) -> Dict[str, np.ndarray]:
    """age, gender, occupation per user, correlated with the user's cluster."""
    p, rng = self.params, _rng(self.params.seed, 1)
    k = p.clusters
    age_means = rng.permutation(np.linspace(19, 55, k)) if k > 1 else np.array(
        [32.0])
    ages = np.clip(np.round(age_means[self.user_cluster]
                            + 7.0 * rng.standard_normal(p.users)), 7, 80)
    female_share = (rng.permutation(np.linspace(0.15, 0.85, k)) if k > 1
                    else np.array([0.5]))
    female = rng.random(p.users) < female_share[self.user_cluster]
    occupation_mix = _cluster_mix(k, len(world_params.OCCUPATIONS), 2, 0.7,
                                  rng)
    occupation = _sample_rows(occupation_mix, self.user_cluster, rng)
    return {"age": ages.astype(np.int64),
            "gender": np.where(female, 1, 0),
            "occupation": occupation}

  def items_table(self) -> Dict[str, np.ndarray]:
    """title, year and genre sets per item, genres correlated with cluster."""
    p, rng = self.params, _rng(self.params.seed, 3)
    k = p.clusters
    genre_mix = _cluster_mix(k, len(world_params.GENRES), 2, 0.75, rng)
    # 1 to 3 distinct genres per item, by Gumbel top-k over the cluster mix.
    num_genres = np.minimum(
        np.searchsorted(np.cumsum([0.45, 0.4, 0.15]), rng.random(p.items),
                        side="right") + 1, 3)
    chosen = np.zeros((p.items, len(world_params.GENRES)), dtype=bool)
    # In slices of items: the [items, genres] key matrix would dominate memory.
    log_mix = np.log(genre_mix)
    for start in range(0, p.items, 1 << 16):
      part = slice(start, min(p.items, start + (1 << 16)))
      keys = log_mix[self.item_cluster[part]] + rng.gumbel(
          size=(part.stop - part.start, len(world_params.GENRES)))
      ranked = np.argsort(-keys, axis=1)
      for j in range(3):
        rows = np.nonzero(num_genres[part] > j)[0]
        chosen[start + rows, ranked[rows, j]] = True
    era = (rng.permutation(np.linspace(1975, 2012, k)) if k > 1
           else np.array([1995.0]))
    years = np.clip(np.round(era[self.item_cluster]
                             + 10 * rng.standard_normal(p.items)), 1930, 2019)
    title_ids = rng.permutation(p.items)
    return {"chosen": chosen, "years": years.astype(np.int64),
            "title_ids": title_ids}
