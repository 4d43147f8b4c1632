"""`embeddings generate` (pipelines/generate.py, world.py, world_params.py).

On tiny datasets: exact sizes, determinism, and the planted structure.
"""

import csv
import json
import os
import re

import numpy as np
import pytest

import embeddings_cli
from pipelines import generate
from pipelines import world
from pipelines import world_params

ROWS = 6000


def _read(path):
  with open(path, newline="", encoding="utf-8") as handle:
    rows = list(csv.reader(handle))
  return rows[0], rows[1:]


def _params(root):
  with open(os.path.join(root, "truth", "params.json"), encoding="utf-8") as f:
    return json.load(f)


def _files(root):
  found = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as handle:
        found[os.path.relpath(path, root)] = handle.read()
  return found


def _make(path, rows=ROWS, seed=3, chunk_rows=generate.DEFAULT_CHUNK_ROWS,
          **kwargs):
  params = world_params.Params(rows=rows, seed=seed, **kwargs)
  generate.generate(str(path), params, chunk_rows=chunk_rows)
  return str(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """One small dataset, several blocks (block_rows well under ROWS)."""
  path = tmp_path_factory.mktemp("synthetic")
  return _make(path, block_rows=1000)


@pytest.fixture(scope="module")
def tables(dataset):
  _, ratings = _read(os.path.join(dataset, "ratings.csv"))
  _, users = _read(os.path.join(dataset, "users.csv"))
  _, items = _read(os.path.join(dataset, "items.csv"))
  _, user_clusters = _read(os.path.join(dataset, "truth", "user_clusters.csv"))
  _, item_clusters = _read(os.path.join(dataset, "truth", "item_clusters.csv"))
  return {
      "ratings": ratings, "users": users, "items": items,
      "user_cluster": {u: int(c) for u, c in user_clusters},
      "item_cluster": {i: int(c) for i, c in item_clusters},
  }


def test_same_seed_gives_identical_bytes(tmp_path, dataset):
  again = _files(_make(tmp_path / "again", block_rows=1000))
  first = _files(dataset)
  assert sorted(again) == sorted(first)
  for name in first:
    assert again[name] == first[name], name


def test_different_seed_differs(tmp_path, dataset):
  other = _make(tmp_path / "other", seed=4, block_rows=1000)
  for name in ("ratings.csv", "users.csv", "items.csv",
               os.path.join("truth", "item_clusters.csv")):
    with open(os.path.join(other, name), "rb") as a, \
        open(os.path.join(dataset, name), "rb") as b:
      assert a.read() != b.read(), name


@pytest.mark.parametrize("chunk_rows", [1, 7, 999, 1000, 4096])
def test_chunk_size_does_not_change_output(tmp_path, dataset, chunk_rows):
  chunked = _files(_make(tmp_path / "chunked", chunk_rows=chunk_rows,
                         block_rows=1000))
  assert chunked == _files(dataset)


def test_headers_and_row_counts_are_exact(dataset):
  params = _params(dataset)
  users, items = world_params.default_sizes(ROWS)
  assert (params["rows"], params["users"], params["items"]) == (
      ROWS, users, items)
  assert params["seed"] == 3 and params["clusters"] == 8
  expected = {
      "ratings.csv": (["user_id", "item_id", "rating", "timestamp"], ROWS),
      "users.csv": (["user_id", "age", "gender", "occupation"], users),
      "items.csv": (["item_id", "title", "genres"], items),
      "truth/user_clusters.csv": (["user_id", "cluster"], users),
      "truth/item_clusters.csv": (["item_id", "cluster"], items),
  }
  for name, (header, count) in expected.items():
    got_header, rows = _read(os.path.join(dataset, name))
    assert got_header == header, name
    assert len(rows) == count, name
  factors = np.load(os.path.join(dataset, "truth", "item_factors.npy"))
  assert factors.shape == (items, 16)


@pytest.mark.parametrize("rows,block_rows", [(1, 1), (37, 5), (3001, 257)])
def test_odd_sizes_are_exact(tmp_path, rows, block_rows):
  out = _make(tmp_path / "odd", rows=rows, block_rows=block_rows,
              chunk_rows=11)
  _, ratings = _read(os.path.join(out, "ratings.csv"))
  _, users = _read(os.path.join(out, "users.csv"))
  assert len(ratings) == rows
  # Every user has at least one rating.
  assert {r[0] for r in ratings} == {u[0] for u in users}


def test_values_are_valid(tables):
  ratings = tables["ratings"]
  assert {r[2] for r in ratings} == {"1.0", "2.0", "3.0", "4.0", "5.0"}
  user_ids = [u[0] for u in tables["users"]]
  item_ids = [i[0] for i in tables["items"]]
  assert user_ids == [f"u{n}" for n in range(1, len(user_ids) + 1)]
  assert item_ids == [f"m{n}" for n in range(1, len(item_ids) + 1)]
  assert {r[0] for r in ratings} <= set(user_ids)
  assert {r[1] for r in ratings} <= set(item_ids)
  stamps = np.array([int(r[3]) for r in ratings])
  assert stamps.min() >= world_params.START_TIMESTAMP
  assert stamps.max() < (world_params.START_TIMESTAMP
                         + world_params.NUM_WEEKS * 604800)
  for _, age, gender, occupation in tables["users"]:
    assert 7 <= int(age) <= 80
    assert gender in ("M", "F")
    assert occupation in world_params.OCCUPATIONS
  titles = [i[1] for i in tables["items"]]
  assert len(set(titles)) == len(titles)
  for title in titles:
    assert re.fullmatch(r"[A-Za-z]+ [A-Za-z]+( \d+)? \(\d{4}\)", title)
  for _, _, genres in tables["items"]:
    names = genres.split("|")
    assert 1 <= len(names) <= 3 and len(set(names)) == len(names)
    assert set(names) <= set(world_params.GENRES)


def test_few_repeated_pairs_at_small_scale(tables):
  pairs = [(r[0], r[1]) for r in tables["ratings"]]
  assert len(set(pairs)) >= 0.995 * len(pairs)


def test_users_prefer_their_own_cluster(tables):
  ratings, uc, ic = tables["ratings"], tables["user_cluster"], tables[
      "item_cluster"]
  same = np.array([uc[r[0]] == ic[r[1]] for r in ratings])
  value = np.array([float(r[2]) for r in ratings])
  assert value[same].mean() - value[~same].mean() > 1.0
  # Users also pick own-cluster items far more often than 1 in K.
  assert same.mean() > 0.3


def test_item_clusters_are_recoverable_from_ratings(tables):
  """Each item's mean rating by user cluster peaks at its own cluster."""
  uc, ic = tables["user_cluster"], tables["item_cluster"]
  k = 1 + max(ic.values())
  items = sorted(ic, key=lambda i: int(i[1:]))
  index = {item: n for n, item in enumerate(items)}
  sums = np.zeros((len(items), k))
  counts = np.zeros((len(items), k))
  for user, item, rating, _ in tables["ratings"]:
    sums[index[item], uc[user]] += float(rating)
    counts[index[item], uc[user]] += 1
  profile = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
  truth = np.array([ic[item] for item in items])
  assert (profile.argmax(axis=1) == truth).mean() > 0.95


def test_side_features_carry_cluster_signal(tables):
  uc, ic = tables["user_cluster"], tables["item_cluster"]
  k = 1 + max(uc.values())
  ages = np.array([int(u[1]) for u in tables["users"]])
  clusters = np.array([uc[u[0]] for u in tables["users"]])
  means = [ages[clusters == c].mean() for c in range(k)]
  assert max(means) - min(means) > 20
  occupations = {}
  for user, cluster in zip(tables["users"], clusters):
    occupations.setdefault(cluster, []).append(user[3])
  top = {c: max(set(o), key=o.count) for c, o in occupations.items()}
  assert len(set(top.values())) >= k // 2

  overall = np.zeros(len(world_params.GENRES))
  per_cluster = np.zeros((k, len(world_params.GENRES)))
  for item_id, _, genres in tables["items"]:
    for genre in genres.split("|"):
      per_cluster[ic[item_id], world_params.GENRES.index(genre)] += 1
  overall = per_cluster.sum(axis=0) / per_cluster.sum()
  shares = per_cluster / per_cluster.sum(axis=1, keepdims=True)
  # Total variation distance of each cluster's genre mix from the overall.
  assert (0.5 * np.abs(shares - overall).sum(axis=1) > 0.3).all()


def test_weekly_and_daily_patterns(tables):
  stamps = np.array([int(r[3]) for r in tables["ratings"]])
  weekday = (stamps // 86400 + 3) % 7
  hour = (stamps // 3600) % 24
  by_day = np.bincount(weekday, minlength=7)
  by_hour = np.bincount(hour, minlength=24)
  assert by_day[5:].min() > 1.2 * by_day[:4].max()
  assert by_hour[19:23].sum() > 5 * by_hour[2:6].sum()


def test_popularity_is_skewed(tables):
  _, counts = np.unique([r[1] for r in tables["ratings"]], return_counts=True)
  counts = np.sort(counts)[::-1]
  top_tenth = counts[:len(counts) // 10].sum() / counts.sum()
  assert top_tenth > 0.2
  assert counts.min() > 0 and len(counts) == len(tables["items"])


def test_time_bias_is_the_same_for_every_seed(tmp_path):
  a = _params(_make(tmp_path / "a", rows=50, seed=1))
  b = _params(_make(tmp_path / "b", rows=50, seed=2))
  assert a["time_bias"] == b["time_bias"]
  table = np.array(a["time_bias"])
  assert table.shape == (7, 24)
  # Saturday 21:00 is the peak, Monday 09:00 the trough.
  assert table.argmax() == 5 * 24 + 21 and table.argmin() == 9


def test_half_star_ratings(tmp_path):
  out = _make(tmp_path / "half", rows=2000, rating_step=0.5)
  _, ratings = _read(os.path.join(out, "ratings.csv"))
  values = {r[2] for r in ratings}
  assert values <= {f"{v / 2:.1f}" for v in range(2, 11)}
  assert {"3.5", "4.5"} <= values


def test_allocate_is_exact():
  counts = world._allocate(10, np.array([0.5, 0.3, 0.1, 0.1]), cap=4)
  assert counts.tolist() == [4, 3, 2, 1]
  counts = world._allocate(1000, np.array([100.0, 1, 1, 1, 1]), cap=400)
  assert counts.sum() == 1000 and counts.max() == 400 and counts.min() >= 1


def test_cli_writes_the_layout(tmp_path):
  out = str(tmp_path / "cli")
  status = embeddings_cli.main(["generate", "--output", out, "--rows", "500",
                                "--seed", "9", "--users", "40", "--items",
                                "60", "--clusters", "4"])
  assert status == 0
  params = _params(out)
  assert (params["users"], params["items"], params["clusters"]) == (40, 60, 4)
  _, ratings = _read(os.path.join(out, "ratings.csv"))
  assert len(ratings) == 500


@pytest.mark.parametrize("kwargs,message", [
    ({"rows": 0}, "--rows"),
    ({"rows": 10, "users": 11}, "--users 11 exceeds --rows 10"),
    ({"rows": 100, "items": 3, "clusters": 4}, "--clusters"),
    ({"rows": 100, "rating_step": 0.3}, "--rating_step"),
    ({"rows": 100, "in_cluster": 1.5}, "--in_cluster"),
])
def test_bad_parameters_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    world_params.Params(seed=0, **kwargs)
