"""The synthetic world's parameters: everything that decides the bytes.

`embeddings generate` (pipelines/generate.py) writes a dataset from a
Params and nothing else: the same Params give the same files, on every
machine. truth/params.json records every value, and the derived ones
(time_bias, max_ratings_per_user, the rating model as a formula).

The model that generates a rating:

  r = mu + b_user + b_item + <p_user, q_item> - affinity / K
      + time_bias(day_of_week, hour_of_day) + N(0, noise^2)

rounded to `rating_step` and clipped to [1, 5]; pipelines/world.py draws
every term.
"""

import datetime
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

# Recorded in params.json; bump it when the same Params would generate other
# bytes.
GENERATOR_VERSION = 1

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


def _check_values(dim: int, nonnegative: Sequence[Tuple[str, float]],
                  shares: Sequence[Tuple[str, float]], rating_step: float,
                  block_rows: int) -> None:
  """Raises ValueError, naming the flag, for a model value out of range."""
  if dim < 1:
    raise ValueError(f"--dim must be >= 1, got {dim}")
  for name, value in nonnegative:
    if value < 0:
      raise ValueError(f"--{name} must be >= 0, got {value}")
  for name, value in shares:
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"--{name} must be in [0, 1], got {value}")
  if rating_step <= 0 or 4.0 / rating_step != round(4.0 / rating_step):
    raise ValueError(f"--rating_step must divide 4 (1.0, 0.5, ...), got "
                     f"{rating_step}")
  if block_rows < 1:
    raise ValueError(f"--block_rows must be >= 1, got {block_rows}")


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
    self._set_sizes(rows, seed, users, items, clusters)
    _check_values(dim=dim, nonnegative=(
        ("noise", noise), ("affinity", affinity), ("spread", spread),
        ("user_bias_std", user_bias_std), ("item_bias_std", item_bias_std),
        ("time_amplitude", time_amplitude)), shares=(
            ("in_cluster", in_cluster), ("uniform_floor", uniform_floor)),
                  rating_step=rating_step, block_rows=block_rows)
    self.dim = int(dim)
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

  def _set_sizes(self, rows: int, seed: int, users: Optional[int],
                 items: Optional[int], clusters: Optional[int]) -> None:
    """rows, seed, users, items and clusters, defaults resolved, checked."""
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
