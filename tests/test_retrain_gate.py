"""The promotion gate scores both models on rows neither trained on.

The leak: the current model trained on an earlier window. When windows
overlap and their rows are not split alike (here the spec's split seed
changed between the windows; an explicit eval_path or a backfilled window
do the same), rows of the new window's eval split are in the current
model's train split.
"""

import csv
import os
import types

import pytest
import tensorflow as tf
import yaml

from pipelines import preprocess
from pipelines import split as split_lib
from trainer import metrics as metrics_lib
from trainer import warmstart
from transforms import loader
from workflows import gate
from workflows import retrain
from workflows import retrain_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
KEY = ("user", "movie")


def _spec_with_seed(root, seed):
  with open(SPEC, encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  raw["split"]["seed"] = seed
  path = os.path.join(root, f"seed{seed}.yaml")
  with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(raw, handle)
  return path


def _in_eval(row, seed, spec):
  key = "\x1f".join(row[column] for column in spec.split.key)
  return split_lib.eval_fraction_of(key, seed) < spec.split.eval_fraction


@pytest.fixture(scope="module")
def windows_of_one_dataset(synthetic_data, tmp_path_factory):
  """The same rows preprocessed twice: split seed 7, then seed 8."""
  root = str(tmp_path_factory.mktemp("retrain_gate"))
  run = types.SimpleNamespace()
  run.current, run.candidate = (os.path.join(root, name)
                                for name in ("current", "candidate"))
  for seed, output in ((7, run.current), (8, run.candidate)):
    preprocess.run(["--spec", _spec_with_seed(root, seed), "--output", output,
                    "--env", f"DATA_DIR={synthetic_data}", "--raw_eval"])
  run.spec = loader.load_spec(_spec_with_seed(root, 8),
                              {"DATA_DIR": synthetic_data})
  with open(os.path.join(synthetic_data, "ratings.csv"), encoding="utf-8",
            newline="") as handle:
    run.ratings = list(csv.DictReader(handle))
  return run


def _pairs(examples):
  parsed = tf.io.parse_example(tf.constant(examples), {
      "user_id": tf.io.FixedLenFeature([], tf.string),
      "item_id": tf.io.FixedLenFeature([], tf.string)})
  return list(zip((u.decode() for u in parsed["user_id"].numpy()),
                  (i.decode() for i in parsed["item_id"].numpy())))


def test_rows_the_current_model_trained_on_are_not_scored(
    windows_of_one_dataset):
  run = windows_of_one_dataset
  examples, labels = gate.holdout_examples(run.candidate, run.spec, 10 ** 6)
  current_train = {(row["user_id"], row["item_id"]) for row in run.ratings
                   if not _in_eval(row, 7, run.spec)}
  holdout = _pairs(examples)
  # The leak exists: the new eval split holds rows the current model
  # trained on.
  assert any(pair in current_train for pair in holdout)

  unseen = gate.unseen_rows(examples, run.spec, [run.candidate, run.current],
                            KEY)
  assert len(unseen) == len(labels)
  kept = [pair for pair, keep in zip(holdout, unseen) if keep]
  assert not set(kept) & current_train
  expected = sum(1 for row in run.ratings
                 if _in_eval(row, 8, run.spec) and _in_eval(row, 7, run.spec))
  assert len(kept) == expected > 0


def test_the_candidates_own_eval_rows_are_all_unseen(windows_of_one_dataset):
  run = windows_of_one_dataset
  examples, _ = gate.holdout_examples(run.candidate, run.spec, 10 ** 6)
  assert gate.unseen_rows(examples, run.spec, [run.candidate], KEY).all()


@pytest.mark.parametrize("candidate,current,tolerance,promote,reason", [
    (0.7471, 0.9400, 0.01, True,
     "candidate rmse 0.7471 vs current 0.9400: better by 0.1929"),
    (0.9900, 0.9400, 0.01, False,
     "candidate rmse 0.9900 vs current 0.9400: worse by 0.0500 (tolerance "
     "0.0100)"),
    (0.9300, 0.9400, -0.02, False,
     "candidate rmse 0.9300 vs current 0.9400: better by 0.0100 (tolerance "
     "-0.0200)"),
    (0.9400, 0.9400, 0.0, True,
     "candidate rmse 0.9400 vs current 0.9400: better by 0.0000"),
])
def test_gate_words_the_change(candidate, current, tolerance, promote,
                               reason):
  assert gate.gate("rmse", candidate, current, tolerance) == (promote, reason)


def test_auc_gains_read_as_better():
  assert gate.gate("auc", 0.75, 0.70, 0.01) == (
      True, "candidate auc 0.7500 vs current 0.7000: better by 0.0500")


def test_no_window_says_how_windows_are_named(tmp_path, capsys):
  pattern = str(tmp_path / "ratings" / "{date}")
  assert retrain.run(["--spec", SPEC, "--data_pattern", pattern,
                      "--root", str(tmp_path / "registry")]) == 1
  assert capsys.readouterr().err == (
      f"embeddings retrain: error: no data matches --data_pattern "
      f"{pattern!r}: it looks for {str(tmp_path / 'ratings' / '*')!r} where "
      f"* is a date (2024-01-07, 20240107 or 2024-01-07T06); put each "
      f"window in its own dated folder, e.g. "
      f"{str(tmp_path / 'ratings' / '2024-01-07')!r}\n")


def test_flag_choices_agree_with_the_modules_they_stand_for():
  assert retrain_options.NEW_ROW_MODES == warmstart.NEW_ROW_MODES
  assert retrain_options.GATE_METRICS == tuple(metrics_lib.METRICS)


def test_parsers_are_the_subcommands():
  assert retrain_options.flag_parser().prog == "embeddings retrain"
  args = retrain_options.flag_parser().parse_args(
      ["--spec", "s.yaml", "--data_pattern", "d/{date}", "--root", "r",
       "--freeze_carried_rows"])
  assert args.freeze_carried_rows is True
  rollback = retrain_options.rollback_parser()
  assert rollback.prog == "embeddings rollback"
  assert rollback.parse_args(["--root", "r"]).root == "r"
