"""`embeddings retrain` / `embeddings rollback` (workflows/retrain.py).

The end-to-end test runs real windows of generated data through
preprocessing, warm start, training (1 epoch), the gate and the drift
report; the unit tests pin the gate, the drift numbers, window discovery,
pointer updates, rollback and pruning on tiny inputs.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import embeddings_cli
from core import artifacts
from transforms import loader
from workflows import drift
from workflows import gate
from workflows import registry as registry_lib
from workflows import retrain
from workflows import windows as windows_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
TRAIN_ARGS = "--epochs 1 --batch_size 128 --keras_verbose 0"


# --- unit tests --------------------------------------------------------------

@pytest.mark.parametrize("metric,candidate,current,tolerance,promote", [
    ("rmse", 0.95, 0.94, 0.02, True),
    ("rmse", 0.97, 0.94, 0.02, False),
    ("rmse", 0.93, 0.94, -0.02, False),   # negative: must improve by 0.02
    ("rmse", 0.91, 0.94, -0.02, True),
    ("auc", 0.70, 0.71, 0.02, True),
    ("auc", 0.60, 0.71, 0.02, False),
    ("rmse", float("nan"), 0.94, 1.0, False),
    ("rmse", 5.0, None, 0.0, True),       # the first model has no rival
])
def test_gate(metric, candidate, current, tolerance, promote):
  verdict, reason = gate.gate(metric, candidate, current, tolerance)
  assert verdict is promote
  assert reason


def _table(name, tokens, vectors):
  return artifacts.EmbeddingTable(name=name, vectors=np.array(vectors),
                                  tokens=list(tokens), metadata={})


def test_drift_identical_rotated_and_reordered_tables_do_not_drift():
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(12, 4))
  tokens = [f"m{i}" for i in range(12)]
  rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  current = _table("movie", tokens + ["[OOV_0]"],
                   np.vstack([vectors, rng.normal(size=(1, 4))]))
  # Same geometry, other row order, one new token and a different OOV row.
  order = rng.permutation(12)
  candidate = _table(
      "movie", [tokens[i] for i in order] + ["m99", "[OOV_0]"],
      np.vstack([vectors[order] @ rotation, rng.normal(size=(2, 4))]))
  report = drift.drift_report(current, candidate, items=5, k=3)
  assert report["shared_tokens"] == 12
  assert report["items"] == 5
  assert [item["token"] for item in report["per_item"]] == [
      tokens[i] for i in order[:5]]
  assert report["neighbor_overlap_mean"] == pytest.approx(1.0)
  assert report["spearman_mean"] == pytest.approx(1.0)


def test_drift_of_swapped_vectors_is_exact():
  a, b, c = [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]
  current = _table("movie", ["a", "b", "c"], [a, b, c])
  # b and c swap vectors: every nearest neighbour changes and every
  # similarity ranking is reversed.
  candidate = _table("movie", ["a", "b", "c"], [a, c, b])
  report = drift.drift_report(current, candidate, items=3, k=1)
  assert [i["neighbor_overlap"] for i in report["per_item"]] == [0, 0, 0]
  assert [i["spearman"] for i in report["per_item"]] == pytest.approx(
      [-1.0, -1.0, -1.0])
  with pytest.raises(registry_lib.RetrainError, match="only 3 tokens"):
    drift.drift_report(current, candidate, items=3, k=3)


def test_list_windows_and_window_path(tmp_path):
  for date in ("2024-01-03", "2024-01-01", "2024-01-02"):
    (tmp_path / "data" / date).mkdir(parents=True)
  (tmp_path / "data" / "latest").mkdir()
  (tmp_path / "data" / "notes.txt").write_text("not a window")
  pattern = str(tmp_path / "data" / "{date}")
  assert windows_lib.list_windows(pattern) == [
      "2024-01-01", "2024-01-02", "2024-01-03"]
  for name in ("ratings_20240102.csv", "ratings_20240101.csv",
               "ratings_old.csv"):
    (tmp_path / name).write_text("x")
  assert windows_lib.list_windows(str(tmp_path / "ratings_{date}.csv")) == [
      "20240101", "20240102"]
  assert windows_lib.window_path(pattern, "2024-01-02") == str(
      tmp_path / "data" / "2024-01-02")
  with pytest.raises(registry_lib.RetrainError, match="exactly once"):
    windows_lib.window_path("data/no-date", "2024-01-02")
  with pytest.raises(registry_lib.RetrainError, match="is not a date"):
    windows_lib.window_path(pattern, "../etc")


def _fake_version(registry, window, status):
  os.makedirs(registry.model_dir(window))
  registry.write_marker(window, {"window": window, "status": status})


def test_rollback_and_prune(tmp_path, capsys):
  root = str(tmp_path / "registry")
  registry = registry_lib.Registry(root)
  assert embeddings_cli.main(["rollback", "--root", root]) == 1
  for window in ("w1", "w2", "w3"):
    _fake_version(registry, window, registry_lib.PROMOTED)
  _fake_version(registry, "w4", registry_lib.FAILED)
  registry.set_current("w3", ["w2", "w3"])
  assert registry.prune(["w2", "w3"]) == ["w1"]
  assert sorted(os.listdir(os.path.join(root, "versions"))) == [
      "w2", "w3", "w4"]
  assert embeddings_cli.main(["rollback", "--root", root]) == 0
  assert "current is now w2 (was w3)" in capsys.readouterr().out
  assert registry.read_current()["history"] == ["w2"]
  assert "rolled_back" in registry.read_marker("w3")
  assert embeddings_cli.main(["rollback", "--root", root]) == 1
  assert "nothing to roll back to" in capsys.readouterr().err
  assert registry.current_version() == "w2"
  # The pointer is replaced by rename: no temporary file is left behind.
  assert sorted(os.listdir(root)) == ["current", "runs", "versions"]


def test_bad_options_are_clear_errors(tmp_path, capsys):
  assert embeddings_cli.main([
      "retrain", "--spec", SPEC, "--data_pattern", str(tmp_path / "d"),
      "--root", str(tmp_path / "r")]) == 1
  assert "must contain {date} exactly once" in capsys.readouterr().err
  assert embeddings_cli.main([
      "retrain", "--spec", SPEC, "--data_pattern",
      str(tmp_path / "none" / "{date}"), "--root", str(tmp_path / "r")]) == 1
  assert "no data matches" in capsys.readouterr().err


def test_a_live_run_of_the_same_window_is_not_raced(tmp_path):
  root = str(tmp_path / "registry")
  registry = registry_lib.Registry(root)
  # pid 1 is alive on every Linux host.
  registry.write_marker("2024-01-01", {"status": registry_lib.RUNNING,
                                       "pid": 1, "host": socket.gethostname()})
  with pytest.raises(registry_lib.RetrainError, match="being retrained"):
    retrain.retrain(retrain.RetrainOptions(
        spec_path=SPEC, data_pattern=str(tmp_path / "{date}"), root=root,
        window="2024-01-01"))


def test_retrain_refuses_a_bigquery_spec_with_the_reason():
  spec = loader.load_spec(os.path.join(REPO, "configs",
                                       "movielens100k_bigquery.yaml"),
                          {"BQ_DATASET": "my-project.movielens"})
  with pytest.raises(registry_lib.RetrainError) as error:
    windows_lib.check_file_inputs(spec)
  assert str(error.value) == (
      "input 'ratings' is read from BigQuery; retrain finds each window as "
      "files matching --data_pattern")


# --- end to end on generated windows ----------------------------------------

@pytest.fixture(scope="module")
def windows(tmp_path_factory):
  """Three daily windows, each with new users and movies, and a corrupt one."""
  from pipelines import generate
  base = tmp_path_factory.mktemp("retrain")
  data = base / "data"
  for day, (users, items) in enumerate([(40, 30), (50, 40), (60, 50)], 1):
    generate.run(["--output", str(data / f"2024-01-0{day}"), "--rows", "900",
                  "--users", str(users), "--items", str(items),
                  "--seed", str(day)])
  corrupt = data / "2024-01-04"
  corrupt.mkdir()
  for name in ("users.csv", "items.csv"):
    (corrupt / name).write_bytes((data / "2024-01-03" / name).read_bytes())
  # A truncated upload: binary garbage where the ratings should be.
  (corrupt / "ratings.csv").write_bytes(bytes(range(256)) * 4)
  return str(data / "{date}"), str(base / "registry")


def _retrain(pattern, root, *extra):
  return embeddings_cli.main(
      ["retrain", "--spec", SPEC, "--data_pattern", pattern, "--root", root,
       "--train_args", TRAIN_ARGS, "--keep", "2"] + list(extra))


def _eval_rows(registry, version):
  path = os.path.join(registry.preprocessed_dir(version), "run_report.json")
  with open(path) as handle:
    return json.load(handle)["rows_written"]["eval"]


def test_three_windows_warm_start_gate_drift_failures_rollback(windows,
                                                               capsys):
  pattern, root = windows
  registry = registry_lib.Registry(root)

  # Window 1: nothing to compare against, promoted.
  assert _retrain(pattern, root, "--window", "2024-01-01") == 0
  first = registry.read_marker("2024-01-01")
  assert first["status"] == registry_lib.PROMOTED
  assert registry.current_version() == "2024-01-01"
  assert first["warm_start"] == {"from": None, "tables": {}}
  assert first["evaluation"]["current"] is None
  # The held-out rows are exactly the window's eval split, and the raw
  # serving path scores them as the trainer's own evaluation did.
  assert first["evaluation"]["holdout_rows"] == _eval_rows(registry,
                                                           "2024-01-01")
  assert first["evaluation"]["candidate"]["rmse"] == pytest.approx(
      first["train"]["metrics"]["rmse"], rel=1e-5)

  # Window 2: new users and movies; warm start; a loose gate promotes.
  assert _retrain(pattern, root, "--window", "2024-01-02",
                  "--tolerance", "10") == 0
  second = registry.read_marker("2024-01-02")
  assert second["status"] == registry_lib.PROMOTED
  assert registry.read_current()["history"] == ["2024-01-01", "2024-01-02"]
  warm = second["warm_start"]
  assert warm["from"] == "2024-01-01"
  for feature in ("user", "movie"):
    table = warm["tables"][feature]
    assert table["by"] == "token"
    assert table["kept"] > 0 and table["new"] > 0
    assert table["kept"] + table["new"] == table["new_size"]
  evaluation = second["evaluation"]
  assert evaluation["candidate"]["examples"] == evaluation["current"][
      "examples"] == _eval_rows(registry, "2024-01-02")
  drift = second["drift"]
  assert drift["feature"] == "movie" and drift["k"] == 10
  assert drift["items"] == min(100, drift["shared_tokens"]) > 10
  assert 0.0 <= drift["neighbor_overlap_mean"] <= 1.0
  assert -1.0 <= drift["spearman_mean"] <= 1.0
  assert evaluation["holdout_rows_trained_on"] == 0
  # The stages print their own lines; the run ends with its summary.
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"embeddings retrain: window 2024-01-02: candidate 2024-01-02 vs "
      f"current 2024-01-01: promoted ({second['reason']}); model "
      f"{registry.version_dir('2024-01-02')}")

  # The same window again: nothing is retrained.
  marker_before = registry.read_marker("2024-01-02")
  assert _retrain(pattern, root, "--window", "2024-01-02") == 0
  assert registry.read_marker("2024-01-02") == marker_before
  assert "already promoted" in capsys.readouterr().out

  # Window 3: the trainer fails after preprocessing; current is untouched.
  assert embeddings_cli.main(
      ["retrain", "--spec", SPEC, "--data_pattern", pattern, "--root", root,
       "--window", "2024-01-03",
       "--train_args", TRAIN_ARGS + " --model_type dnn --features nosuch"]) == 1
  crashed = registry.read_marker("2024-01-03")
  assert crashed["status"] == registry_lib.FAILED
  assert crashed["stage"] == "train"
  assert "nosuch" in crashed["reason"]
  assert registry.current_version() == "2024-01-02"
  assert not os.path.exists(registry.model_dir("2024-01-03"))

  # Retried with a gate that demands a large gain: preprocessing is reused,
  # the candidate is rejected and deleted, current stays.
  assert _retrain(pattern, root, "--window", "2024-01-03",
                  "--tolerance", "-5", "--freeze_carried_rows") == 0
  third = registry.read_marker("2024-01-03")
  assert third["warm_start"]["trainable"] == "new_rows"
  assert third["reason"].endswith("(tolerance -5.0000)")
  assert third["status"] == registry_lib.REJECTED
  assert third["attempt"] == 2 and third["preprocess_reused"] is True
  assert third["warm_start"]["from"] == "2024-01-02"
  assert "drift" in third and third["evaluation"]["current"] is not None
  assert registry.current_version() == "2024-01-02"
  assert not os.path.exists(registry.version_dir("2024-01-03"))

  # The newest window is corrupt: failed with the reason, current untouched.
  assert _retrain(pattern, root) == 1
  corrupt = registry.read_marker("2024-01-04")
  assert corrupt["status"] == registry_lib.FAILED
  assert corrupt["stage"] == "preprocess"
  assert "InputError" in corrupt["reason"]
  assert registry.current_version() == "2024-01-02"

  # Rollback goes back one version; with --keep 2 both are still there,
  # and the failed windows left nothing behind.
  assert sorted(os.listdir(os.path.join(root, "versions"))) == [
      "2024-01-01", "2024-01-02"]
  assert embeddings_cli.main(["rollback", "--root", root]) == 0
  assert registry.current_version() == "2024-01-01"


def test_a_run_killed_midway_is_retried_or_recovered(tmp_path):
  root = str(tmp_path / "registry")
  registry = registry_lib.Registry(root)
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)
  host = socket.gethostname()
  # Killed before promoting: the window is free to run again.
  registry.write_marker("2024-01-02", {"status": registry_lib.RUNNING,
                                       "pid": pid, "host": host})
  assert registry.claim("2024-01-02") is None
  # Killed right after switching `current`: the promotion is recorded.
  registry.set_current("2024-01-02", ["2024-01-01", "2024-01-02"])
  marker, reason = registry.claim("2024-01-02")
  assert marker["status"] == registry_lib.PROMOTED and "recovered" in reason
  assert registry.read_marker("2024-01-02")["status"] == registry_lib.PROMOTED
  assert "recovered" in registry.read_marker("2024-01-02")["reason"]
