"""benchmarks/quality_floor.py: the noise floor, planted precision and the
data's ceiling, on tiny inputs and on a generated dataset.
"""

import math
import os

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import quality_floor
from core import artifacts
from pipelines import generate
from transforms import loader

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "configs", "synthetic.yaml")


def test_expected_rating_without_noise_is_the_rounded_clipped_mean():
  value, variance = quality_floor.expected_rating(
      np.array([0.2, 2.4, 2.6, 7.0]), 0.0, 1.0)
  np.testing.assert_array_equal(value, [1.0, 2.0, 3.0, 5.0])
  np.testing.assert_array_equal(variance, [0.0] * 4)
  value, _ = quality_floor.expected_rating(np.array([2.2, 2.3]), 0.0, 0.5)
  np.testing.assert_array_equal(value, [2.0, 2.5])


def test_expected_rating_with_noise():
  # 3.0 is the middle of the clipped scale: symmetric, E = 3 exactly.
  value, _ = quality_floor.expected_rating(np.array([3.0, -50.0, 60.0]), 0.7,
                                         1.0)
  np.testing.assert_allclose(value, [3.0, 1.0, 5.0], atol=1e-12)
  # mean 1.0, noise 1.0, step 1: level l takes [l - 0.5, l + 0.5).
  phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
  cuts = [phi(c - 1.0) for c in (1.5, 2.5, 3.5, 4.5)]
  probs = np.diff([0.0] + cuts + [1.0])
  levels = np.arange(1.0, 6.0)
  mean = float(probs @ levels)
  value, variance = quality_floor.expected_rating(np.array([1.0]), 1.0, 1.0)
  assert value[0] == pytest.approx(mean, abs=1e-12)
  assert variance[0] == pytest.approx(float(probs @ levels ** 2) - mean ** 2,
                                      abs=1e-12)


def test_noise_floor():
  floor = quality_floor.noise_floor(np.array([3.0, 4.0]), np.array([3.0, 3.1]),
                                  0.0, 1.0)
  assert floor == {"rmse_of_expected": math.sqrt(0.5), "rmse_expected": 0.0,
                   "rows": 2}


def test_model_mean_is_the_generators_formula():
  start = 1_420_416_000
  params = {"start_timestamp": start, "global_mean": 3.0, "affinity": 1.5,
            "clusters": 3, "time_bias": np.arange(7 * 24).reshape(7, 24)
                                              .tolist()}
  truth = {"user_factors": np.array([[0, 0], [1, 2]], np.float32),
           "item_factors": np.array([[3, 4], [0, 0]], np.float32),
           "user_bias": np.array([0.0, 0.25], np.float32),
           "item_bias": np.array([-0.5, 0.0], np.float32)}
  batch = pa.record_batch({"user_id": ["u2"], "item_id": ["m1"],
                           "timestamp": [start + 86400 + 3 * 3600 + 59]})
  # 3 + 0.25 - 0.5 + (1*3 + 2*4) - 1.5/3 + time_bias[1][3] (= 27).
  np.testing.assert_allclose(
      quality_floor.model_mean(batch, params, truth), [40.25])


def test_cluster_precision():
  vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  labels = np.array([0, 0, 1, 1])
  queries = np.arange(4)
  assert quality_floor.cluster_precision(vectors, labels, queries, 1) == 1.0
  assert quality_floor.cluster_precision(vectors, labels, queries, 2) == 0.5


def test_baseline_rating_leaves_out_only_the_affinity():
  start = 1_420_416_000
  params = {"start_timestamp": start, "global_mean": 3.0, "affinity": 1.5,
            "clusters": 3, "time_bias": np.zeros((7, 24)).tolist()}
  truth = {"user_factors": np.array([[1, 2]], np.float32),
           "item_factors": np.array([[3, 4]], np.float32),
           "user_bias": np.array([0.25], np.float32),
           "item_bias": np.array([-0.5], np.float32)}
  batch = pa.record_batch({"user_id": ["u1"], "item_id": ["m1"],
                           "timestamp": [start]})
  users, items, base = quality_floor.baseline_rating(batch, params, truth)
  assert users.tolist() == [0] and items.tolist() == [0]
  np.testing.assert_allclose(base, [3.0 + 0.25 - 0.5 - 0.5])
  np.testing.assert_allclose(
      quality_floor.model_mean(batch, params, truth), base + 11.0)


def test_item_ridge_recovers_factors_from_noiseless_ratings():
  rng = np.random.default_rng(0)
  truth = rng.normal(size=(3, 2))
  users = rng.normal(size=(40, 2))
  items = np.array([0] * 15 + [2] * 25)
  residuals = np.einsum("ij,ij->i", users, truth[items])
  ridge = quality_floor.ItemRidge(3, 2)
  # Rows arrive in two unsorted blocks, as streamed batches do.
  order = rng.permutation(40)
  for part in np.array_split(order, 2):
    ridge.add(items[part], users[part], residuals[part])
  fitted = ridge.solve(1e-9)
  np.testing.assert_allclose(fitted[[0, 2]], truth[[0, 2]], atol=1e-6)
  np.testing.assert_array_equal(fitted[1], [0.0, 0.0])
  # A strong ridge shrinks towards zero.
  assert np.linalg.norm(ridge.solve(1e6)[0]) < 1e-3


def test_ridge_strength_is_noise_over_prior_variance():
  params = {"noise": 0.5, "rating_step": 1.0}
  factors = np.full((4, 2), 0.5)
  assert quality_floor.ridge_strength(params, factors) == pytest.approx(
      (0.25 + 1 / 12) / 0.25)


def test_query_groups_bands_and_per_rating():
  counts = np.array([1, 5, 19, 20, 49, 50, 199, 200, 5000])
  # 12 queries: all 9 rows uniformly, 3 per band.
  groups = quality_floor.query_groups(counts, 12, np.random.default_rng(0))
  assert list(groups) == ["uniform", "per_rating", "band 1-19",
                          "band 20-49", "band 50-199", "band 200+"]
  assert groups["uniform"].tolist() == list(range(9))
  assert set(groups["band 1-19"].tolist()) == {0, 1, 2}
  assert set(groups["band 20-49"].tolist()) == {3, 4}
  assert set(groups["band 200+"].tolist()) == {7, 8}
  # Per rating: the 5000-rating row is most of the draws.
  assert np.mean(groups["per_rating"] == 8) > 0.5


def test_planted_precision_per_group_and_vector_set():
  vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  labels = np.array([0, 0, 1, 1])
  swapped = vectors[[0, 2, 1, 3]]
  got = quality_floor.planted_precision(
      {"good": vectors, "bad": swapped}, labels,
      {"all": np.arange(4), "first": np.array([0])}, 1)
  assert got == {"all": {"queries": 4, "good": 1.0, "bad": 0.0},
                 "first": {"queries": 1, "good": 1.0, "bad": 0.0}}


def test_quality_of_the_truth_itself(tmp_path):
  """An export holding the generator's own factors scores like the truth;
  the data's ceiling sits below it where movies have few ratings, and
  higher for the movies of random ratings (the popular ones)."""
  synthetic_data = str(tmp_path / "data")
  generate.run(["--output", synthetic_data, "--rows", "6000", "--users",
                "600", "--items", "1500", "--seed", "3"])
  factors = np.load(os.path.join(synthetic_data, "truth",
                                 "item_factors.npy"))
  tokens = [f"m{i + 1}" for i in range(len(factors))]
  counts = np.zeros(len(factors), dtype=np.int64)
  for batch in quality_floor.read_ratings(
      os.path.join(synthetic_data, "ratings.csv"), ["item_id"]):
    np.add.at(counts, quality_floor.generator_index(
        batch.column("item_id")), 1)
  export = tmp_path / "export"
  artifacts.EmbeddingTable(
      name="movie", vectors=factors, tokens=tokens,
      metadata={"name": "movie", "kind": "vocabulary"},
      counts=counts).save(str(export / "movie"))
  spec = loader.load_spec(SPEC, {"DATA_DIR": synthetic_data})
  result = quality_floor.quality(synthetic_data, str(export), spec, 400, 10)
  floor = result["noise_floor"]
  assert 0.4 < floor["rmse_expected"] < 0.6
  assert floor["rows"] > 0
  planted = result["planted"]
  assert planted["precision"] == planted["truth_factors_precision"] == 1.0
  groups = planted["groups"]
  assert groups["per_rating"]["model"] == 1.0
  assert 1 / 8 < planted["data_ceiling_precision"] < 1.0
  assert (groups["per_rating"]["data_ceiling"]
          > planted["data_ceiling_precision"])
