"""`embeddings evaluate`: metrics of a trained model; the ML100K 5-fold run.

    embeddings evaluate --model_dir M --preprocessed P [--split eval]
        RMSE and MAE (regression) or AUC and log loss (binary) of the model
        exported in M on split P/<split>, read through the model's
        `serving_transformed` signature.

    embeddings evaluate --ml100k_folds DIR --spec configs/movielens100k.yaml \
        [--folds u1,u2,u3,u4,u5] [--work_dir W] [train flags...]
        The standard MovieLens 100K protocol: for each fold, preprocess its
        base file (eval = its test file), train, evaluate on the test file;
        prints per-fold metrics and mean +- std, and saves them in W as a
        Markdown table (folds.md) and JSON (folds_report.json). Train flags
        (--model_type, --epochs, ...) go to the trainer.

The flags are in workflows/folds_options.py (TensorFlow-free).

The setting that `make ml100k-folds` runs, and its measured results, are in
the README.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import files
from core import flags
from core import layout
from core import outputs
from pipelines import preprocess as preprocess_lib
from trainer import config as config_lib
from trainer import metrics as metrics_lib
from trainer import task as task_lib
from transforms import loader
from workflows import folds_options

DEFAULT_FOLDS = folds_options.DEFAULT_FOLDS
# The metrics a fold table shows, in this order, when the task has them.
TABLE_METRICS = ("rmse", "mae", "auc", "log_loss")


def summarize_folds(per_fold: Mapping[str, Mapping[str, float]]
                   ) -> Dict[str, Dict[str, float]]:
  """Mean and standard deviation of each metric over folds.

  The standard deviation is the population one (numpy's default), as
  scikit-surprise's cross_validate reports.

  Args:
    per_fold: fold -> metrics.

  Returns:
    metric -> {"mean": ..., "std": ...}.
  """
  names = sorted({k for m in per_fold.values() for k in m if k != "examples"})
  summary = {}
  for name in names:
    values = np.array([m[name] for m in per_fold.values()], np.float64)
    summary[name] = {"mean": float(values.mean()), "std": float(values.std())}
  return summary


def format_fold_table(per_fold: Mapping[str, Mapping[str, float]],
                      metric_names: Sequence[str]) -> str:
  """Per-fold rows and a mean +- std row, as aligned text."""
  summary = summarize_folds(per_fold)
  header = "fold  " + "  ".join(f"{name:>16}" for name in metric_names)
  lines = [header]
  for fold, metrics in per_fold.items():
    lines.append(f"{fold:<4}  " + "  ".join(
        f"{metrics[name]:>16.4f}" for name in metric_names))
  lines.append("mean  " + "  ".join(
      f"{summary[n]['mean']:>8.4f} +- {summary[n]['std']:.4f}"
      for n in metric_names))
  return "\n".join(lines)


def format_fold_markdown(per_fold: Mapping[str, Mapping[str, float]],
                         metric_names: Sequence[str]) -> str:
  """Per-fold rows and a mean ± std row, as a Markdown table.

  Args:
    per_fold: fold -> metrics.
    metric_names: the columns, in order.

  Returns:
    The table, one line per row, ending with a newline.
  """
  summary = summarize_folds(per_fold)
  lines = ["| fold | " + " | ".join(metric_names) + " |",
           "|---|" + "---:|" * len(metric_names)]
  for fold, metrics in per_fold.items():
    lines.append(f"| {fold} | " + " | ".join(
        f"{metrics[name]:.4f}" for name in metric_names) + " |")
  lines.append("| mean ± std | " + " | ".join(
      f"{summary[n]['mean']:.4f} ± {summary[n]['std']:.4f}"
      for n in metric_names) + " |")
  return "\n".join(lines) + "\n"


def write_fold_results(work_dir: str,
                       result: Mapping[str, Any]) -> Tuple[str, str]:
  """Saves a fold run's table and report into its work directory.

  Args:
    work_dir: the run's --work_dir.
    result: what run_ml100k_folds returned.

  Returns:
    (the Markdown table's path, the JSON report's path).
  """
  work = layout.FoldsLayout(work_dir)
  names = [n for n in TABLE_METRICS if n in result["summary"]]
  files.write_text(work.table, format_fold_markdown(result["folds"], names))
  files.write_json(work.report, dict(result))
  return work.table, work.report


def _train_one_fold(spec_path: str, env: Sequence[Tuple[str, str]],
                    preprocessed: str, model_dir: str,
                    train_values: Mapping[str, Any]) -> Dict[str, Any]:
  """Trains one fold's model afresh; returns its train report."""
  files.remove_tree(model_dir)
  spec = loader.load_spec(spec_path, dict(env))
  config = config_lib.build_config(
      spec, train_values, spec_path=spec_path, spec_env=tuple(env),
      preprocessed_dir=preprocessed, model_dir=model_dir)
  return task_lib.train(config).report


def run_ml100k_folds(ml100k_dir: str, spec_path: str, work_dir: str,
                     folds: Sequence[str] = DEFAULT_FOLDS,
                     train_values: Optional[Mapping[str, Any]] = None,
                     reuse_preprocessed: bool = True) -> Dict[str, Any]:
  """Runs the MovieLens 100K protocol over the given folds.

  Args:
    ml100k_dir: folder with u.data, u.user, u.item, u1.base ... u5.test.
    spec_path: a spec reading ${ML100K_DIR}/${ML100K_FOLD}.base (train) and
      .test (eval), like configs/movielens100k.yaml.
    work_dir: preprocessed data and models go to <work_dir>/<fold>/.
    folds: which folds.
    train_values: trainer field -> value (the train flags given); the
      spec's `model:` section fills the rest.
    reuse_preprocessed: skip preprocessing a fold whose output is finished.

  Returns:
    {"folds": fold -> eval metrics, "summary": metric -> mean/std,
     "reports": fold -> train report}.
  """
  for fold in folds:
    for suffix in ("base", "test"):
      path = layout.join(ml100k_dir, f"{fold}.{suffix}")
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"fold {fold!r}: {path} does not exist")
  work = layout.FoldsLayout(work_dir)
  per_fold: Dict[str, Dict[str, float]] = {}
  reports = {}
  for fold in folds:
    env = (("ML100K_DIR", os.path.abspath(ml100k_dir)), ("ML100K_FOLD", fold))
    preprocessed = work.preprocessed(fold).root
    if not (reuse_preprocessed and outputs.is_finished(preprocessed)):
      started = time.perf_counter()
      preprocess_lib.preprocess(preprocess_lib.PreprocessOptions(
          spec=spec_path, output=preprocessed, env=env))
      print(f"fold {fold}: preprocessed in "
            f"{time.perf_counter() - started:.1f} s", flush=True)
    report = _train_one_fold(spec_path, env, preprocessed,
                             work.model(fold).root, train_values or {})
    per_fold[fold] = report["metrics"]
    reports[fold] = {k: v for k, v in report.items() if k != "config"}
    shown = ", ".join(f"{name} {value:.4f}" for name, value
                      in per_fold[fold].items() if name != "examples")
    print(f"fold {fold}: {shown} on {per_fold[fold]['examples']:,} test rows",
          flush=True)
  return {"folds": per_fold, "summary": summarize_folds(per_fold),
          "reports": reports}


def evaluate_model_dir(model_dir: str, preprocessed_dir: str, split: str,
                       task: Optional[str] = None) -> Dict[str, Any]:
  """Metrics of the model a `train` run exported, on one split.

  Args:
    model_dir: the trainer's --model_dir.
    preprocessed_dir: the preprocessing output to score.
    split: the split (train or eval).
    task: regression or binary (default: the model's training report's).

  Returns:
    {"model_dir", "split", "metrics"}.

  Raises:
    FileNotFoundError: the model directory holds no exported model.
  """
  model = layout.ModelLayout(model_dir)
  if task is None:
    task = (files.read_json(model.report) or {}).get("task")
  if not tf.io.gfile.exists(model.saved_model):
    raise FileNotFoundError(f"{model.saved_model} does not exist: "
                            f"{model_dir!r} holds no exported model")
  metrics = metrics_lib.evaluate_export(model.saved_model, preprocessed_dir,
                                        split, task or "regression")
  return {"model_dir": model_dir, "split": split, "metrics": metrics}


def _train_values(args) -> Dict[str, Any]:
  """The train flags given, with --task: they configure every fold."""
  values = flags.values_from_args(config_lib.TrainerConfig, args,
                                  skip=folds_options.FOLD_SET_FIELDS)
  if args.task:
    values["task"] = args.task
  return values


def _run_folds(args) -> Tuple[Dict[str, Any], str]:
  if not args.spec:
    raise ValueError("--ml100k_folds needs --spec (e.g. "
                     "configs/movielens100k.yaml)")
  folds = flags.comma_list(args.folds)
  result = run_ml100k_folds(args.ml100k_folds, args.spec, args.work_dir,
                            folds, _train_values(args))
  names = [n for n in TABLE_METRICS if n in result["summary"]]
  print(format_fold_table(result["folds"], names))
  table, report = write_fold_results(args.work_dir, result)
  means = ", ".join(f"{n} {result['summary'][n]['mean']:.4f} ± "
                    f"{result['summary'][n]['std']:.4f}" for n in names)
  return result, (f"{len(folds)} fold(s): {means}; table {table}, "
                  f"report {report}")


def _score_model(args) -> Tuple[Dict[str, Any], str]:
  given = _train_values(args)
  given.pop("task", None)
  if given:
    raise ValueError(f"train flags {sorted(given)} need --ml100k_folds")
  if not args.model_dir or not args.preprocessed:
    raise ValueError("give --model_dir and --preprocessed (or "
                     "--ml100k_folds)")
  result = evaluate_model_dir(args.model_dir, args.preprocessed, args.split,
                              args.task)
  metrics = result["metrics"]
  shown = ", ".join(f"{n} {metrics[n]:.4f}" for n in TABLE_METRICS
                    if n in metrics)
  return result, (f"{shown} on {metrics.get('examples', '?')} "
                  f"{args.split} rows of {args.preprocessed} "
                  f"(model {args.model_dir})")


def run(argv: Optional[List[str]] = None) -> int:
  """Entry point of `embeddings evaluate`.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    The exit status (2 for bad flags or inputs).
  """
  args = folds_options.flag_parser().parse_args(argv)
  try:
    if args.ml100k_folds:
      result, summary = _run_folds(args)
    else:
      result, summary = _score_model(args)
  except (ValueError, FileNotFoundError) as error:
    print(f"embeddings evaluate: {error}", file=sys.stderr)
    return 2
  if args.output:
    files.write_json(args.output, result)
    summary += f"; JSON {args.output}"
  print(f"embeddings evaluate: {summary}")
  return 0


if __name__ == "__main__":
  sys.exit(run())
