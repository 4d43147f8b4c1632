"""`embeddings generate`: a synthetic movie-ratings dataset with planted structure.

Writes (see the team brief, "Synthetic data layout"):

  DIR/ratings.csv   user_id,item_id,rating,timestamp  (u17, m42, 1.0..5.0, unix s)
  DIR/users.csv     user_id,age,gender,occupation
  DIR/items.csv     item_id,title,genres              ("Action|Comedy")
  DIR/truth/user_clusters.csv, DIR/truth/item_clusters.csv, DIR/truth/params.json
  DIR/truth/{user,item}_factors.npy, {user,item}_bias.npy, centroids.npy

The model that generates a rating (all parameters land in truth/params.json):

  r = mu + b_user + b_item + <p_user, q_item> - affinity / K
      + time_bias(day_of_week, hour_of_day) + N(0, noise^2)

rounded to `rating_step` and clipped to [1, 5]. Users and items belong to K
taste clusters; p and q are sqrt(affinity) * (centroid + spread * N(0, I/d))
with orthonormal centroids, so a user's own-cluster items score about
`affinity` higher than the others and item embeddings learned by matrix
factorisation group by cluster. Side features carry cluster signal: each
cluster has its own age mean, gender mix, occupation and genre mix.

Who rates what: each user gets an exact number of ratings (skewed activity,
at least one), drawn without repeats where the catalogue allows it; a
fraction `in_cluster` of a user's picks come from their own cluster (people
watch what they like), the rest from the whole catalogue. Item popularity is
Zipf-like mixed with a uniform floor so every item has ratings. Timestamps
fall in a fixed five-year window with more ratings on weekends and evenings.

Scale and determinism: ratings are produced in blocks of whole users; each
block draws from its own random stream keyed by (seed, block index), so the
bytes depend on the seed and the generation parameters only, not on
`--chunk_rows` (how many rows are formatted and written at a time). Memory is
O(users + items + block + chunk), independent of the number of ratings.
"""

import argparse
import datetime
import json
import logging
import math
import os
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

GENERATOR_VERSION = 1

RATINGS_HEADER = ("user_id", "item_id", "rating", "timestamp")
USERS_HEADER = ("user_id", "age", "gender", "occupation")
ITEMS_HEADER = ("item_id", "title", "genres")

# MovieLens' genre and occupation lists, so specs and code written for one
# read the other.
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
          "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer",
               "entertainment", "executive", "healthcare", "homemaker",
               "lawyer", "librarian", "marketing", "none", "other",
               "programmer", "retired", "salesman", "scientist", "student",
               "technician", "writer")

# Title words: no commas, quotes or newlines, so CSV fields never need quoting.
_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Frozen", "Lost",
    "Wild", "Dark", "Bright", "Burning", "Endless", "Secret", "Quiet", "Savage",
    "Electric", "Hollow", "Iron", "Midnight", "Northern", "Painted", "Restless",
    "Scarlet", "Shattered", "Sleeping", "Stolen", "Sunken", "Twisted",
    "Velvet", "Wandering", "Yellow", "Ancient", "Blue", "Cold", "Distant",
    "Empty", "Fading", "Glass", "Haunted", "Infinite", "Lonely", "Lucky",
    "Mad", "Neon", "Open", "Pale", "Rising", "Rusty", "Shadow", "Small",
    "Strange", "Sweet", "Tender", "Thin", "Violent", "Wicked", "Young",
    "Brave", "Falling", "Green", "Hungry", "Little", "Red")
_NOUNS = (
    "River", "City", "Garden", "Road", "Heart", "Dream", "Mountain", "Night",
    "Kingdom", "Summer", "Winter", "Shadow", "Island", "Storm", "Empire",
    "Horizon", "Harbor", "Letter", "Machine", "Mirror", "Ocean", "Planet",
    "Promise", "Rain", "Season", "Signal", "Song", "Station", "Stranger",
    "Tower", "Valley", "Voyage", "Angel", "Bridge", "Circus", "Desert",
    "Engine", "Forest", "Frontier", "Ghost", "Hotel", "Hunter", "Journey",
    "Legend", "Lighthouse", "Memory", "Moon", "Orchard", "Palace", "Prairie",
    "Queen", "Saint", "Secret", "Sky", "Soldier", "Sun", "Thief", "Train",
    "Voice", "War", "Wind", "Wolf", "World", "Zone")

# 2015-01-05 00:00 UTC is a Monday: weeks counted from it start on Monday.
START_TIMESTAMP = int(datetime.datetime(
    2015, 1, 5, tzinfo=datetime.timezone.utc).timestamp())
NUM_WEEKS = 260
# Relative rating activity, Monday .. Sunday, and per hour 0..23 (UTC).
WEEKDAY_WEIGHTS = (1.0, 0.95, 1.0, 1.05, 1.25, 1.6, 1.5)
HOUR_WEIGHTS = (0.5, 0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.45, 0.55, 0.6,
                0.65, 0.75, 0.7, 0.65, 0.7, 0.8, 1.0, 1.3, 1.6, 1.9, 2.0, 1.6,
                1.0)

DEFAULT_BLOCK_ROWS = 1 << 16
DEFAULT_CHUNK_ROWS = 1 << 19


def default_sizes(rows: int) -> Tuple[int, int]:
  """Default (users, items) for a dataset of `rows` ratings.

  About 100 ratings per user and 200 per item at scale; at small scale both
  grow like 2 * sqrt(rows) instead, so tiny datasets keep a sparse rating
  matrix (few forced repeats) and every item still has ratings.

  Args:
    rows: the number of ratings.

  Returns:
    (users, items), each at least 2.
  """
  floor = int(round(2 * math.sqrt(rows)))
  return max(2, rows // 100, floor), max(2, rows // 200, floor)


def time_bias_table(amplitude: float) -> np.ndarray:
  """The known time-of-rating effect on ratings, [7, 24], Monday first.

  Fixed by `amplitude` alone (not by the seed), so datasets generated with
  different seeds share it: a `day_of_week x hour_of_day` embedding learned on
  one transfers to another.

  Args:
    amplitude: the hour-of-day swing; weekends add half of it.

  Returns:
    float64 [7, 24] rating offsets.
  """
  hours = np.arange(24)
  daily = amplitude * np.cos(2 * np.pi * (hours - 21) / 24.0)
  weekend = np.array([0, 0, 0, 0, 0, 1, 1], dtype=np.float64) * amplitude / 2
  return np.round(weekend[:, None] + daily[None, :], 6)


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


class Params:
  """The generator's parameters; everything that decides the output bytes.

  Args:
    rows: ratings to write.
    seed: the random seed.
    users, items: population sizes (default: `default_sizes(rows)`).
    clusters: taste clusters K (default min(8, users, items)).
    dim: latent factor dimension (centroids are orthonormal when K <= dim).
    noise: standard deviation of the rating noise.
    affinity: how much higher a user rates own-cluster items.
    spread: within-cluster spread of factors, relative to the centroid.
    global_mean, user_bias_std, item_bias_std: the bias terms.
    in_cluster: share of a user's picks drawn from their own cluster.
    item_zipf, user_zipf: Zipf exponents of item popularity and user
      activity.
    uniform_floor: share of popularity/activity spread uniformly.
    time_amplitude: size of the known time-of-rating effect.
    rating_step: rating granularity (1.0 or 0.5).
    block_rows: ratings per random-stream block.

  Raises:
    ValueError: a parameter out of range, naming its flag.
  """

  def __init__(self, rows: int, seed: int, users: Optional[int] = None,
               items: Optional[int] = None, clusters: Optional[int] = None,
               dim: int = 16, noise: float = 0.5, affinity: float = 1.5,
               spread: float = 0.3, global_mean: float = 3.0,
               user_bias_std: float = 0.25, item_bias_std: float = 0.3,
               in_cluster: float = 0.5, item_zipf: float = 1.0,
               user_zipf: float = 0.8, uniform_floor: float = 0.3,
               time_amplitude: float = 0.15, rating_step: float = 1.0,
               block_rows: int = DEFAULT_BLOCK_ROWS):
    if rows < 1:
      raise ValueError(f"--rows must be >= 1, got {rows}")
    default_users, default_items = default_sizes(rows)
    self.rows = int(rows)
    self.seed = int(seed)
    self.users = int(users if users is not None else min(default_users, rows))
    self.items = int(items if items is not None else default_items)
    if self.users < 1 or self.items < 1:
      raise ValueError("--users and --items must be >= 1")
    if self.users > rows:
      raise ValueError(f"--users {self.users} exceeds --rows {rows}: every "
                       f"user gets at least one rating")
    self.clusters = int(clusters if clusters is not None
                        else min(8, self.users, self.items))
    if not 1 <= self.clusters <= min(self.users, self.items):
      raise ValueError(f"--clusters must be in [1, min(users, items)] = "
                       f"[1, {min(self.users, self.items)}], got "
                       f"{self.clusters}")
    if dim < 1:
      raise ValueError(f"--dim must be >= 1, got {dim}")
    self.dim = int(dim)
    for name, value in (("noise", noise), ("affinity", affinity),
                        ("spread", spread), ("user_bias_std", user_bias_std),
                        ("item_bias_std", item_bias_std),
                        ("time_amplitude", time_amplitude)):
      if value < 0:
        raise ValueError(f"--{name} must be >= 0, got {value}")
    for name, value in (("in_cluster", in_cluster),
                        ("uniform_floor", uniform_floor)):
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"--{name} must be in [0, 1], got {value}")
    if rating_step <= 0 or 4.0 / rating_step != round(4.0 / rating_step):
      raise ValueError(f"--rating_step must divide 4 (1.0, 0.5, ...), got "
                       f"{rating_step}")
    if block_rows < 1:
      raise ValueError(f"--block_rows must be >= 1, got {block_rows}")
    self.noise = float(noise)
    self.affinity = float(affinity)
    self.spread = float(spread)
    self.global_mean = float(global_mean)
    self.user_bias_std = float(user_bias_std)
    self.item_bias_std = float(item_bias_std)
    self.in_cluster = float(in_cluster)
    self.item_zipf = float(item_zipf)
    self.user_zipf = float(user_zipf)
    self.uniform_floor = float(uniform_floor)
    self.time_amplitude = float(time_amplitude)
    self.rating_step = float(rating_step)
    self.block_rows = int(block_rows)

  @property
  def max_per_user(self) -> int:
    """Most ratings one user gets: 50x the mean (MovieLens 20M's heaviest
    user has about 64x) and at most half the catalogue, so picks can stay
    distinct, unless rows force more (then repeats are unavoidable)."""
    mean = -(-self.rows // self.users)
    return max(1, mean, min(self.items // 2, 50 * mean))

  def to_json(self) -> Dict:
    """Everything truth/params.json records (JSON-serializable)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "rows": self.rows, "seed": self.seed, "users": self.users,
        "items": self.items, "clusters": self.clusters, "dim": self.dim,
        "noise": self.noise, "affinity": self.affinity,
        "spread": self.spread, "global_mean": self.global_mean,
        "user_bias_std": self.user_bias_std,
        "item_bias_std": self.item_bias_std, "in_cluster": self.in_cluster,
        "item_zipf": self.item_zipf, "user_zipf": self.user_zipf,
        "uniform_floor": self.uniform_floor,
        "time_amplitude": self.time_amplitude,
        "rating_step": self.rating_step, "block_rows": self.block_rows,
        "max_ratings_per_user": self.max_per_user,
        "start_timestamp": START_TIMESTAMP, "num_weeks": NUM_WEEKS,
        "weekday_weights": list(WEEKDAY_WEIGHTS),
        "hour_weights": list(HOUR_WEIGHTS),
        "time_bias": time_bias_table(self.time_amplitude).tolist(),
        "rating_model": ("clip(round_to_step(global_mean + user_bias + "
                         "item_bias + dot(user_factor, item_factor) - "
                         "affinity / clusters + time_bias[dow][hour] + "
                         "normal(0, noise)), 1, 5)"),
        "genres": list(GENRES), "occupations": list(OCCUPATIONS),
    }


class World:
  """Users, items and their latent parameters: O(users + items) memory."""

  def __init__(self, params: Params):
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

    self.time_bias = time_bias_table(p.time_amplitude)
    self.weekday_cdf = _cdf(np.asarray(WEEKDAY_WEIGHTS))
    self.hour_cdf = _cdf(np.asarray(HOUR_WEIGHTS))


  @property
  def num_blocks(self) -> int:
    return -(-self.params.users // self.users_per_block)

  def sample_items(self, clusters: np.ndarray, own: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Items for picks of users in `clusters`; own-cluster where `own`."""
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
    # Redraw repeated (user, item) pairs: first from the same mix, then from
    # the whole catalogue by popularity, then uniformly, which always has
    # room (a user rates at most half the catalogue unless rows force more).
    local = users - first
    check = np.arange(n)
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
      touched = np.zeros(last - first, dtype=bool)
      touched[local[repeat]] = True
      check = np.nonzero(touched[local])[0]

    weeks = rng.integers(0, NUM_WEEKS, n)
    weekday = np.searchsorted(self.weekday_cdf, rng.random(n), side="right")
    weekday = np.minimum(weekday, 6)
    hour = np.minimum(np.searchsorted(self.hour_cdf, rng.random(n),
                                      side="right"), 23)
    seconds = rng.integers(0, 3600, n)
    timestamps = (START_TIMESTAMP + weeks * 7 * 86400 + weekday * 86400
                  + hour * 3600 + seconds).astype(np.int64)

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
    occupation_mix = _cluster_mix(k, len(OCCUPATIONS), 2, 0.7, rng)
    occupation = _sample_rows(occupation_mix, self.user_cluster, rng)
    return {"age": ages.astype(np.int64),
            "gender": np.where(female, 1, 0),
            "occupation": occupation}

  def items_table(self) -> Dict[str, np.ndarray]:
    """title, year and genre sets per item, genres correlated with cluster."""
    p, rng = self.params, _rng(self.params.seed, 3)
    k = p.clusters
    genre_mix = _cluster_mix(k, len(GENRES), 2, 0.75, rng)
    # 1 to 3 distinct genres per item, by Gumbel top-k over the cluster mix.
    num_genres = np.minimum(
        np.searchsorted(np.cumsum([0.45, 0.4, 0.15]), rng.random(p.items),
                        side="right") + 1, 3)
    chosen = np.zeros((p.items, len(GENRES)), dtype=bool)
    # In slices of items: the [items, genres] key matrix would dominate memory.
    log_mix = np.log(genre_mix)
    for start in range(0, p.items, 1 << 16):
      part = slice(start, min(p.items, start + (1 << 16)))
      keys = log_mix[self.item_cluster[part]] + rng.gumbel(
          size=(part.stop - part.start, len(GENRES)))
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


def _id_strings(prefix: str, n: int) -> pa.Array:
  """["{prefix}1", ..., "{prefix}{n}"], 1-based like MovieLens."""
  return pa.array(np.char.add(prefix, np.arange(1, n + 1).astype("U")),
                  pa.string())


def _titles(title_ids: np.ndarray, years: np.ndarray) -> List[str]:
  """Unique titles: (adjective, noun, sequel number) is unique per id."""
  a, b = len(_ADJECTIVES), len(_NOUNS)
  titles = []
  for tid, year in zip(title_ids.tolist(), years.tolist()):
    sequel = tid // (a * b)
    name = f"{_ADJECTIVES[tid % a]} {_NOUNS[(tid // a) % b]}"
    if sequel:
      name += f" {sequel + 1}"
    titles.append(f"{name} ({year})")
  return titles


class _CsvFile:
  """A CSV file written in pieces; bytes do not depend on the pieces."""

  def __init__(self, path: str, header: Sequence[str], schema: pa.Schema):
    self._handle = open(path, "wb")
    self._handle.write((",".join(header) + "\n").encode("ascii"))
    # No field ever holds a comma, quote or newline, so nothing is quoted.
    self._writer = pa_csv.CSVWriter(
        self._handle, schema, write_options=pa_csv.WriteOptions(
            include_header=False, quoting_style="none"))
    self.rows = 0

  def write(self, batch: pa.RecordBatch) -> None:
    self._writer.write_batch(batch)
    self.rows += batch.num_rows

  def close(self) -> None:
    self._writer.close()
    self._handle.close()


def _ratings_batches(world: World, chunk_rows: int
                     ) -> Iterator[Dict[str, np.ndarray]]:
  """Re-slices the per-block ratings into pieces of chunk_rows rows."""
  pending: List[Dict[str, np.ndarray]] = []
  pending_rows = 0
  for block in range(world.num_blocks):
    part = world.ratings_block(block)
    pending.append(part)
    pending_rows += len(part["user"])
    while pending_rows >= chunk_rows:
      merged = {key: np.concatenate([piece[key] for piece in pending])
                for key in pending[0]}
      yield {key: value[:chunk_rows] for key, value in merged.items()}
      rest = {key: value[chunk_rows:] for key, value in merged.items()}
      pending, pending_rows = [rest], pending_rows - chunk_rows
  if pending_rows:
    yield {key: np.concatenate([piece[key] for piece in pending])
           for key in pending[0]}


def _write_ratings(world: World, path: str, chunk_rows: int) -> int:
  p = world.params
  user_ids = _id_strings("u", p.users)
  item_ids = _id_strings("m", p.items)
  steps = int(round(4.0 / p.rating_step)) + 1
  rating_text = pa.array([str(round(1.0 + i * p.rating_step, 6))
                          for i in range(steps)], pa.string())
  schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                      ("rating", pa.string()), ("timestamp", pa.int64())])
  out = _CsvFile(path, RATINGS_HEADER, schema)
  try:
    for piece in _ratings_batches(world, chunk_rows):
      step_index = np.round((piece["rating"] - 1.0) / p.rating_step)
      batch = pa.record_batch([
          user_ids.take(pa.array(piece["user"])),
          item_ids.take(pa.array(piece["item"])),
          rating_text.take(pa.array(step_index.astype(np.int32))),
          pa.array(piece["timestamp"]),
      ], schema=schema)
      out.write(batch)
  finally:
    out.close()
  return out.rows


def _write_table(path: str, header: Sequence[str], columns: Sequence[pa.Array],
                 chunk_rows: int) -> None:
  schema = pa.schema([(name, column.type)
                      for name, column in zip(header, columns)])
  out = _CsvFile(path, header, schema)
  try:
    n = len(columns[0])
    for start in range(0, n, chunk_rows):
      out.write(pa.record_batch(
          [column.slice(start, chunk_rows) for column in columns],
          schema=schema))
  finally:
    out.close()


def generate(output: str, params: Params,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Dict:
  """Writes the dataset under `output` (created if missing).

  Args:
    output: destination directory.
    params: generation parameters (decide the bytes written).
    chunk_rows: rows formatted and written at a time; bounds memory and does
      not change the output.

  Returns:
    A summary: rows, users, items, clusters, seconds, rows_per_second.
  """
  if chunk_rows < 1:
    raise ValueError(f"--chunk_rows must be >= 1, got {chunk_rows}")
  began = time.perf_counter()
  truth = os.path.join(output, "truth")
  os.makedirs(truth, exist_ok=True)
  world = World(params)
  p = params

  rows = _write_ratings(world, os.path.join(output, "ratings.csv"), chunk_rows)
  if rows != p.rows:
    raise AssertionError(f"wrote {rows} ratings, expected {p.rows}")

  user_ids = _id_strings("u", p.users)
  item_ids = _id_strings("m", p.items)
  users = world.users_table()
  _write_table(os.path.join(output, "users.csv"), USERS_HEADER, [
      user_ids, pa.array(users["age"]),
      pa.array(["M", "F"], pa.string()).take(pa.array(users["gender"])),
      pa.array(OCCUPATIONS, pa.string()).take(pa.array(users["occupation"]))],
      chunk_rows)
  items = world.items_table()
  # Format each distinct genre set once: far fewer sets than items.
  masks = items["chosen"].astype(np.int64) @ (1 << np.arange(len(GENRES)))
  distinct, which = np.unique(masks, return_inverse=True)
  genre_text = pa.array(["|".join(g for j, g in enumerate(GENRES)
                                  if mask >> j & 1)
                         for mask in distinct.tolist()], pa.string())
  _write_table(os.path.join(output, "items.csv"), ITEMS_HEADER, [
      item_ids, pa.array(_titles(items["title_ids"], items["years"]),
                         pa.string()),
      genre_text.take(pa.array(which))], chunk_rows)

  _write_table(os.path.join(truth, "user_clusters.csv"),
               ("user_id", "cluster"),
               [user_ids, pa.array(world.user_cluster.astype(np.int64))],
               chunk_rows)
  _write_table(os.path.join(truth, "item_clusters.csv"),
               ("item_id", "cluster"),
               [item_ids, pa.array(world.item_cluster.astype(np.int64))],
               chunk_rows)
  for name, array in (("user_factors", world.user_factors),
                      ("item_factors", world.item_factors),
                      ("user_bias", world.user_bias),
                      ("item_bias", world.item_bias),
                      ("centroids", world.centroids.astype(np.float32))):
    np.save(os.path.join(truth, f"{name}.npy"), array)
  with open(os.path.join(truth, "params.json"), "w", encoding="utf-8") as f:
    json.dump(p.to_json(), f, indent=2, sort_keys=True)
    f.write("\n")

  seconds = time.perf_counter() - began
  return {"rows": rows, "users": p.users, "items": p.items,
          "clusters": p.clusters, "seconds": round(seconds, 3),
          "rows_per_second": round(rows / max(seconds, 1e-9))}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings generate",
      description="Write a synthetic movie-ratings dataset with planted "
                  "taste clusters (see pipelines/generate.py).")
  parser.add_argument("--output", required=True, help="destination folder")
  parser.add_argument("--rows", type=int, required=True,
                      help="number of ratings")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--users", type=int, default=None,
                      help="default: max(rows/100, 2*sqrt(rows))")
  parser.add_argument("--items", type=int, default=None,
                      help="default: max(rows/200, 2*sqrt(rows))")
  parser.add_argument("--clusters", type=int, default=None,
                      help="taste clusters (default min(8, users, items))")
  parser.add_argument("--dim", type=int, default=16,
                      help="latent factor dimension")
  parser.add_argument("--noise", type=float, default=0.5,
                      help="rating noise standard deviation")
  parser.add_argument("--affinity", type=float, default=1.5,
                      help="own-cluster rating lift")
  parser.add_argument("--spread", type=float, default=0.3,
                      help="within-cluster spread of factors")
  parser.add_argument("--in_cluster", type=float, default=0.5,
                      help="share of a user's picks from their own cluster")
  parser.add_argument("--item_zipf", type=float, default=1.0,
                      help="Zipf exponent of item popularity")
  parser.add_argument("--rating_step", type=float, default=1.0,
                      help="rating granularity (0.5 for half stars)")
  parser.add_argument("--block_rows", type=int, default=DEFAULT_BLOCK_ROWS,
                      help="ratings per random-stream block (part of the "
                           "dataset's identity, like the seed)")
  parser.add_argument("--chunk_rows", type=int, default=DEFAULT_CHUNK_ROWS,
                      help="rows written at a time (memory only; does not "
                           "change the output)")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> Dict:
  """Entry point of `embeddings generate`.

  Args:
    argv: command-line flags (default: sys.argv[1:]).

  Returns:
    The summary `generate` returns.
  """
  args, _ = _parser().parse_known_args(argv)
  params = Params(rows=args.rows, seed=args.seed, users=args.users,
                  items=args.items, clusters=args.clusters, dim=args.dim,
                  noise=args.noise, affinity=args.affinity,
                  spread=args.spread, in_cluster=args.in_cluster,
                  item_zipf=args.item_zipf, rating_step=args.rating_step,
                  block_rows=args.block_rows)
  summary = generate(args.output, params, chunk_rows=args.chunk_rows)
  logging.info("generated %s", summary)
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  run()
