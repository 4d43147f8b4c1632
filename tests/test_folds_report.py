"""`embeddings evaluate` saves its fold table and report into --work_dir."""

import json
import os

import pytest

from core import layout
from workflows import folds
from workflows import folds_options

PER_FOLD = {"u1": {"rmse": 0.9, "mae": 0.7, "examples": 10},
            "u2": {"rmse": 0.94, "mae": 0.74, "examples": 10}}


def test_fold_markdown_has_a_row_per_fold_and_mean_std():
  assert folds.format_fold_markdown(PER_FOLD, ["rmse", "mae"]) == (
      "| fold | rmse | mae |\n"
      "|---|---:|---:|\n"
      "| u1 | 0.9000 | 0.7000 |\n"
      "| u2 | 0.9400 | 0.7400 |\n"
      "| mean ± std | 0.9200 ± 0.0200 | 0.7200 ± 0.0200 |\n")


def test_fold_results_are_saved_and_read_back(tmp_path):
  result = {"folds": PER_FOLD, "summary": folds.summarize_folds(PER_FOLD),
            "reports": {"u1": {"steps": 3}, "u2": {"steps": 3}}}
  table, report = folds.write_fold_results(str(tmp_path), result)
  work = layout.FoldsLayout(str(tmp_path))
  assert (table, report) == (work.table, work.report)
  assert json.loads(open(report, encoding="utf-8").read()) == result
  assert open(table, encoding="utf-8").read() == folds.format_fold_markdown(
      PER_FOLD, ["rmse", "mae"])


def test_train_flags_without_the_fold_protocol_are_one_line_errors(capsys):
  assert folds.run(["--model_dir", "m", "--preprocessed", "p",
                    "--epochs", "2"]) == 2
  assert capsys.readouterr().err == (
      "embeddings evaluate: train flags ['epochs'] need --ml100k_folds\n")


def test_the_parser_takes_every_train_flag_but_the_fold_paths():
  args = folds_options.flag_parser().parse_args(
      ["--ml100k_folds", "d", "--spec", "s", "--epochs", "3",
       "--model_type", "mf", "--task", "regression"])
  assert folds._train_values(args) == {  # pylint: disable=protected-access
      "epochs": 3, "model_type": "mf", "task": "regression"}


def test_a_fold_run_saves_its_table_and_report(ml100k_preprocessed,
                                               ml100k_dir, tmp_path, capsys):
  work = tmp_path / "folds"
  (work / "u1").mkdir(parents=True)
  # The session's preprocessed u1 fold (same spec and env) is reused.
  os.symlink(ml100k_preprocessed, work / "u1" / "preprocessed")
  assert folds.run([
      "--ml100k_folds", ml100k_dir, "--folds", "u1",
      "--spec", "configs/movielens100k.yaml", "--work_dir", str(work),
      "--model_type", "mf", "--epochs", "1", "--steps_per_epoch", "20",
      "--no-export"]) == 0
  out = capsys.readouterr().out
  last = out.splitlines()[-1]
  assert "u1 " in out and "mean" in out and "+-" in out
  report = json.loads((work / "folds_report.json").read_text())
  assert report["folds"]["u1"]["examples"] == 20000
  rmse, mae = report["folds"]["u1"]["rmse"], report["folds"]["u1"]["mae"]
  assert report["summary"]["rmse"] == {"mean": rmse, "std": 0.0}
  assert report["reports"]["u1"]["steps"] == 20
  assert (work / "folds.md").read_text().splitlines()[2] == (
      f"| u1 | {rmse:.4f} | {mae:.4f} |")
  assert last == (f"embeddings evaluate: 1 fold(s): rmse {rmse:.4f} ± 0.0000, "
                  f"mae {mae:.4f} ± 0.0000; table {work}/folds.md, "
                  f"report {work}/folds_report.json")


@pytest.mark.parametrize("argv, message", [
    (["--ml100k_folds", "d"], "--ml100k_folds needs --spec"),
    ([], "give --model_dir and --preprocessed"),
])
def test_missing_inputs_are_one_line_errors(argv, message, capsys):
  assert folds.run(argv) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and message in err[0]
