"""`embeddings tune` (workflows/tune.py, search_space.py): space, study."""

import dataclasses
import json
import os

import optuna
import pytest

from core import layout
from trainer import config as config_lib
from trainer import models
from trainer import data as data_lib
from transforms import dims
from transforms import feature_info as feature_info_lib
from transforms import loader
from workflows import search_space
from workflows import tune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")
# MovieLens 100K's vocabularies (u1.base): 943 users, 1650 movies, ...
VOCABULARY_SIZES = {"user": 943, "movie": 1650, "gender": 2,
                    "occupation": 21, "genres": 19}


@pytest.fixture(scope="module")
def spec():
  return loader.load_spec(SPEC, {"ML100K_DIR": "/data"})


@pytest.fixture(scope="module")
def infos(spec):
  return feature_info_lib.resolve_feature_info(spec, VOCABULARY_SIZES)


def _config(spec, **fields):
  return config_lib.build_config(spec, fields, preprocessed_dir="p",
                                 model_dir="m", spec_path=SPEC)


def test_mf_searches_one_shared_dimension_in_both_ranges(spec, infos):
  space = search_space.search_space(_config(spec), spec, infos)
  # 944 and 1651 rows: fourth roots 5.5 and 6.4 -> 6 and 6, ranges (3, 9).
  assert infos["user"].dim_range == infos["movie"].dim_range == (3, 9)
  assert space.dims == {"mf_dim": (3, 9)}
  assert space.mf_features == ("user", "movie")
  assert space.l2_fields == ("l2_user", "l2_item")


def test_dot_product_of_very_different_tables_searches_the_hull(spec, infos):
  infos = dict(infos, movie=dataclasses.replace(
      infos["movie"], size=1_000_000, embedding_dim=32,
      dim_range=dims.embedding_dim_range(32)))
  space = search_space.search_space(_config(spec), spec, infos)
  assert infos["movie"].dim_range == (19, 45)
  assert space.dims == {"mf_dim": (3, 45)}


def test_dnn_searches_every_tower_table_and_the_trainer_uses_the_trial(
    spec, infos):
  base = _config(spec, model_type="dnn", hybrid=True,
                 features=["gender", "age_bucket", "occupation_x_genre"])
  space = search_space.search_space(base, spec, infos)
  assert space.dims == {"mf_dim": (3, 9), "dim_gender": (1, 2),
                        "dim_age_bucket": (1, 3),
                        "dim_occupation_x_genre": (3, 9)}
  assert space.l2_fields == ("l2_user", "l2_item", "l2_embedding")
  trial = optuna.trial.FixedTrial({
      "mf_dim": 8, "dim_gender": 2, "dim_age_bucket": 1,
      "dim_occupation_x_genre": 4, "learning_rate": 0.01, "l2_user": 1e-3,
      "l2_item": 2e-3, "l2_embedding": 3e-4})
  config = search_space.suggest_config(trial, space, base, "m/trial_000")
  assert config.model_dir == "m/trial_000" and not config.export
  assert (config.learning_rate, config.l2_user, config.l2_item,
          config.l2_embedding) == (0.01, 1e-3, 2e-3, 3e-4)
  assert config.mf_dim == 8
  dims = {name: models.embedding_dim(config, infos, name)
          for name in ("user", "movie", "gender", "age_bucket",
                       "occupation_x_genre")}
  assert dims == {"user": 8, "movie": 8, "gender": 2, "age_bucket": 1,
                  "occupation_x_genre": 4}


def test_side_features_in_the_dot_product_follow_mf_dim(spec, infos):
  base = _config(spec, user_side_features=["age_bucket"],
                 item_side_features=["genres"])
  space = search_space.search_space(base, spec, infos)
  assert space.dims == {"mf_dim": (3, 9)}
  assert space.l2_fields == ("l2_user", "l2_item", "l2_embedding")
  trial = optuna.trial.FixedTrial({"mf_dim": 7, "learning_rate": 0.01,
                                   "l2_user": 1e-3, "l2_item": 1e-3,
                                   "l2_embedding": 1e-3})
  config = search_space.suggest_config(trial, space, base, "m")
  assert {name: models.embedding_dim(config, infos, name)
          for name in ("user", "movie", "age_bucket", "genres")} == {
              "user": 7, "movie": 7, "age_bucket": 7, "genres": 7}


def test_same_study_seed_samples_the_same_trials(spec, infos):
  base = _config(spec, model_type="dnn")
  space = search_space.search_space(base, spec, infos)

  def sampled(seed):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    return [search_space.suggest_config(study.ask(), space, base, "m")
            for _ in range(3)]

  first, again, other = sampled(5), sampled(5), sampled(6)
  assert first == again
  assert first != other
  for config in first:
    for name, dim in config.embedding_dims:
      low, high = infos[name].dim_range
      assert low <= dim <= high


def test_bad_ranges_are_refused(spec, infos):
  with pytest.raises(config_lib.ConfigError, match="l2_range"):
    search_space.search_space(_config(spec), spec, infos, l2_range=(0.0, 1.0))
  with pytest.raises(config_lib.ConfigError, match="learning_rate_range"):
    search_space.search_space(_config(spec), spec, infos,
                      learning_rate_range=(0.1, 0.01))


def _count_reads(monkeypatch):
  """Counts the datasets built over each split (e.g. reads["eval"])."""
  reads = {}
  original = data_lib.tfrecord_dataset

  def counting(preprocessed_dir, split, *args, **kwargs):
    reads[split] = reads.get(split, 0) + 1
    return original(preprocessed_dir, split, *args, **kwargs)

  monkeypatch.setattr(data_lib, "tfrecord_dataset", counting)
  return reads


def test_tiny_study_writes_a_valid_spec_with_dims_in_range(
    ml100k_preprocessed, ml100k_dir, tmp_path, capsys, monkeypatch):
  output = str(tmp_path / "tuned.yaml")
  work = str(tmp_path / "study")
  reads = _count_reads(monkeypatch)
  code = tune.run([
      "--spec", SPEC, "--env", f"ML100K_DIR={ml100k_dir}",
      "--preprocessed", ml100k_preprocessed, "--model_dir", work,
      "--output", output, "--trials", "3", "--study_seed", "1",
      "--model_type", "dnn", "--hybrid", "--hidden_units", "8",
      "--epochs", "1", "--steps_per_epoch", "5", "--batch_size", "1024",
      "--keras_verbose", "0", "--learning_rate_range", "0.001,0.03"])
  printed = capsys.readouterr().out
  assert code == 0
  # The eval split (u1.test) is read once: to test the chosen setting.
  assert reads["eval"] == 1

  with open(layout.TuneLayout(work).report) as handle:
    report = json.load(handle)
  trials = report["trials"]
  assert [t["number"] for t in trials] == [0, 1, 2]
  assert all(t["state"] == "COMPLETE" for t in trials)
  best = min(trials, key=lambda t: t["value"])
  assert report["best"]["trial"] == best["number"]
  assert report["best"]["value"] == best["value"] == best["metrics"]["rmse"]
  # Trials are ranked on the rows tune holds out of the training split
  # (0.1 by default), never on the eval split's 20,000.
  assert report["scored_on"] == "validation"
  assert report["validation_fraction"] == 0.1
  assert all(7000 < t["metrics"]["examples"] < 9000 for t in trials)
  tested = report["test"]
  assert tested["split"] == "eval" and tested["metrics"]["examples"] == 20000
  # The chosen setting, trained again, scores what its trial scored.
  assert tested["validation_metrics"]["rmse"] == pytest.approx(
      best["value"], abs=1e-4)
  assert printed.strip().splitlines()[-1].startswith(
      f"embeddings tune: best of 3 trials is trial {best['number']} "
      f"(validation RMSE {best['value']:.4f}); tested once on the eval "
      f"split: RMSE {tested['metrics']['rmse']:.4f}")
  # The table: a header, a rule and one row per trial, the best starred.
  table = printed[printed.index("trial     state"):].splitlines()
  rows = [line.split() for line in table[2:5]]
  assert [row[0] for row in rows] == [
      f"{t['number']}{'*' if t is best else ''}" for t in trials]
  assert [row[2] for row in rows] == [f"{t['value']:.4f}" for t in trials]

  env = {"ML100K_DIR": ml100k_dir}
  tuned = loader.load_spec(output, env)
  with open(output) as handle:
    assert "${ML100K_DIR" in handle.read()  # placeholders kept, not expanded
  # The dimensions live in the model section only, once.
  assert all(f.embedding_dim is None for f in tuned.features)

  # The model section trains exactly the best trial's model, tables sized
  # as the best trial's were, each within its tuning range.
  config = config_lib.build_config(
      tuned, {}, preprocessed_dir=ml100k_preprocessed, model_dir="unused",
      spec_path=output)
  infos = feature_info_lib.read_feature_info(ml100k_preprocessed)
  names = [name for name in models.model_features(config, tuned)
           if infos[name].size]
  table_dims = config.table_dims(infos, names)
  assert set(report["best"]["embedding_dims"]) == set(infos)  # all embedded
  assert table_dims == report["best"]["embedding_dims"]
  for name, dim in table_dims.items():
    low, high = infos[name].dim_range
    assert low <= dim <= high, (name, dim, (low, high))
  params = best["params"]
  assert config.model_type == "dnn" and config.hybrid
  assert config.hidden_units == (8,) and config.steps_per_epoch == 5
  assert config.learning_rate == params["learning_rate"]
  assert 0.001 <= config.learning_rate <= 0.03
  for field in ("l2_user", "l2_item", "l2_embedding"):
    assert getattr(config, field) == params[field]
    assert 1e-5 <= params[field] <= 1e-1
  assert config.mf_dim == params["mf_dim"]
  assert {name: models.embedding_dim(config, infos, name)
          for name in infos} == table_dims


def test_tune_refuses_to_score_trials_without_held_out_rows(
    ml100k_preprocessed, ml100k_dir, tmp_path, capsys):
  code = tune.run([
      "--spec", SPEC, "--env", f"ML100K_DIR={ml100k_dir}",
      "--preprocessed", ml100k_preprocessed, "--model_dir",
      str(tmp_path / "study"), "--output", str(tmp_path / "tuned.yaml"),
      "--trials", "1", "--validation_fraction", "0"])
  assert code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--validation_fraction" in err
  assert not (tmp_path / "study").exists()
