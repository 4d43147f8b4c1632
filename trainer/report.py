"""What `embeddings train` leaves for people: model card, curve, summary.

Everything here reads the run's report (report.json's content, built by
trainer/task.py), so a card or a curve can be drawn again from a report
alone:

* model_card: a short Markdown model card (ModelLayout.model_card): the
  data and its row counts, the features with their sizes and dimensions,
  the model and the settings that differ from the defaults, the metrics
  against the global-mean baseline, the epoch the model is from;
* draw_training_curve: a PNG of the training and validation metric per
  epoch, the model's epoch marked (ModelLayout.training_curve);
* summary_line: the one line the command ends with.

The picture is drawn on a matplotlib Figure with the Agg canvas (no
pyplot, no display).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Dict, List, Mapping, Optional

from matplotlib import figure as figure_lib
from matplotlib import ticker

from core import files
from core import layout
from trainer import config as config_lib

_METRIC_NAMES = {"rmse": "RMSE", "mae": "MAE", "mse": "MSE", "auc": "AUC",
                 "log_loss": "log loss"}


def metric_name(metric: str) -> str:
  """How people write a metric: RMSE, AUC, log loss."""
  return _METRIC_NAMES.get(metric, metric)


def changed_settings(config: Mapping[str, Any]) -> Dict[str, Any]:
  """The training settings of a report's config that are not the defaults.

  Args:
    config: report["config"] (a TrainerConfig as a dict).

  Returns:
    Field -> value for the fields that change training
    (TrainerConfig.training_fields) and differ from the field's default.
  """
  defaults = {field.name: field.default
              for field in dataclasses.fields(config_lib.TrainerConfig)}
  changed = {}
  for name, value in config.items():
    if name in config_lib.RESUME_NEUTRAL_FIELDS or name not in defaults:
      continue
    default = defaults[name]
    as_list = list(value) if isinstance(value, (list, tuple)) else value
    default_list = list(default) if isinstance(default, tuple) else default
    if as_list != default_list:
      changed[name] = value
  return changed


def _value(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return ", ".join(_value(item) for item in value)
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def _metric_rows(report: Mapping[str, Any]) -> List[str]:
  """The metrics table: each split's metrics and the global mean's."""
  metric = report["metric"]
  names = [metric] + [name for name in ("mae", "log_loss")
                      if name != metric and name in report["metrics"]]
  header = "| rows | examples | " + " | ".join(
      f"{metric_name(name)} | global mean {metric_name(name)}"
      for name in names) + " |"
  rows = [header, "|" + "---|" * (2 + 2 * len(names))]
  splits = [("validation", report.get("validation_metrics")),
            (f"test ({report['eval_split']} split)", report["metrics"])]
  for label, metrics in splits:
    if not metrics:
      continue
    baseline = report["baseline"][label.split()[0]]
    cells = [label, f"{metrics['examples']:,}"]
    for name in names:
      cells += [f"{metrics[name]:.4f}", f"{baseline[name]:.4f}"]
    rows.append("| " + " | ".join(cells) + " |")
  return rows


def model_card(report: Mapping[str, Any]) -> str:
  """The run's model card, in Markdown.

  Args:
    report: the run's report (trainer/task.py).

  Returns:
    The card's text.
  """
  config = report["config"]
  metric = report["metric"]
  lines = [f"# Model card: {report['model_type']} ({report['task']})", "",
           "## Data", "",
           f"- preprocessed data: `{config['preprocessed_dir']}`",
           f"- spec: `{config['spec_path']}`",
           f"- training rows: {report['train_examples']:,}"]
  if report["validation_examples"]:
    lines.append(f"- validation rows: {report['validation_examples']:,} "
                 f"(a {report['validation_fraction']:g} hash-selected share "
                 f"of the training split, held out)")
  lines += [f"- test rows: {report['metrics']['examples']:,} (the "
            f"`{report['eval_split']}` split, evaluated once after training)",
            "", "## Features", "", "| feature | rows | dimension |",
            "|---|---|---|"]
  for name, feature in report["features"].items():
    dim = feature.get("dim")
    lines.append(f"| {name} | {feature['size']:,} | "
                 f"{'numeric' if dim is None else dim} |")
  lines += ["", "## Model", "", f"- type: {report['model_type']}"]
  changed = changed_settings(config)
  for name, value in changed.items():
    lines.append(f"- {name}: {_value(value)}")
  if not changed:
    lines.append("- every setting at its default")
  lines += ["", "## Metrics", "",
            f"Global mean: predicting the training rows' mean label "
            f"({report['label_mean']:.4f}) for every row.", ""]
  lines += _metric_rows(report)
  lines += ["", "## Training", "",
            f"- epochs run: {report['epochs_run']} of {report['epochs']}"]
  stopping = report.get("early_stopping")
  if stopping:
    lines.append(
        f"- early stopping on validation {metric_name(metric)} (patience "
        f"{stopping['patience']}): the model holds epoch "
        f"{report['best_epoch']}'s weights")
  else:
    lines.append(f"- the model is the last epoch's ({report['best_epoch']})")
  lines.append(f"- {report['steps']:,} steps of {report['batch_size']} "
               f"examples, {report['fit_seconds']:.0f} s")
  return "\n".join(lines) + "\n"


def draw_training_curve(report: Mapping[str, Any]) -> bytes:
  """The training and validation metric per epoch, as a PNG.

  Args:
    report: the run's report (its train_history and best_epoch).

  Returns:
    The PNG's bytes.
  """
  metric = report["metric"]
  history = report["train_history"]
  epochs = [entry["epoch"] for entry in history]
  figure = figure_lib.Figure(figsize=(7, 4.5), dpi=100)
  axes = figure.add_subplot()
  validation = ("validation" if report["validation_examples"]
                else f"{report['eval_split']} split")
  for key, label in ((metric, "training"),
                     (f"val_{metric}", validation)):
    points = [(epoch, entry[key]) for epoch, entry in zip(epochs, history)
              if key in entry]
    if points:
      axes.plot(*zip(*points), marker="o", label=label)
  best = report["best_epoch"]
  if best in epochs:
    axes.axvline(best, color="gray", linestyle="--",
                 label=f"model (epoch {best})")
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel("epoch")
  axes.set_ylabel(metric_name(metric))
  axes.set_title(f"{report['model_type']}: {metric_name(metric)} per epoch")
  axes.legend()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  return buffer.getvalue()


def write_people_files(report: Mapping[str, Any],
                       out: layout.ModelLayout) -> None:
  """Writes the model card and the training curve beside report.json.

  Args:
    report: the run's report.
    out: where the run writes.
  """
  files.write_text(out.model_card, model_card(report))
  files.write_bytes(out.training_curve, draw_training_curve(report))


def summary_line(report: Mapping[str, Any],
                 out: Optional[layout.ModelLayout] = None) -> str:
  """The line `embeddings train` ends with.

  Args:
    report: the run's report.
    out: where the run wrote (default: its model_dir).

  Returns:
    e.g. `embeddings train: mf on 72,000 rows, 12 epochs (best 9):
    validation RMSE 0.912, test RMSE 0.921 (global mean 1.154) -> DIR
    (report.json, model_card.md, training_curve.png; tensorboard --logdir
    DIR/logs)`.
  """
  out = out or layout.ModelLayout(report["model_dir"])
  metric = report["metric"]
  name = metric_name(metric)
  epochs = f"{report['epochs_run']} epochs"
  if report.get("early_stopping"):
    epochs += f" (best {report['best_epoch']})"
  scores = []
  if report.get("validation_metrics"):
    scores.append(f"validation {name} "
                  f"{report['validation_metrics'][metric]:.3f}")
  scores.append(f"test {name} {report['metrics'][metric]:.3f} (global mean "
                f"{report['baseline']['test'][metric]:.3f})")
  paths = [out.report, out.model_card, out.training_curve]
  if report.get("export_dir"):
    paths.append(out.saved_model)
  written = [layout.split(path)[1] for path in paths]
  return (f"embeddings train: {report['model_type']} on "
          f"{report['train_examples']:,} rows, {epochs}: "
          f"{', '.join(scores)} -> {out.root} ({', '.join(written)}; "
          f"tensorboard --logdir {out.logs})")
