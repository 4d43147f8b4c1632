"""A trained model as a Python object that scores raw rows from pandas.

    model = embeddings.load_model("out/model")
    ratings = embeddings.read_table(model.spec, "ratings", split="eval")
    predictions = model.score(ratings.frame)

The model is the SavedModel `embeddings train` exported
(core.layout.ModelLayout.saved_model), called through its default
signature, which takes serialized raw tf.Examples and applies the
tf.Transform graph itself. `score` does what preprocessing did before that
graph: it types the rows with the spec's column types and joins the side
tables the model's features read (pipelines/frames.py), then serializes
the columns the model reads and calls the signature in batches.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import frames
from trainer import config as config_lib
from trainer import export as export_lib
from trainer import models as models_lib
from trainer import serving
from transforms import loader
from transforms import spec as spec_lib

# Rows per call of the serving signature.
DEFAULT_BATCH_SIZE = 4096
PREDICTION = "prediction"


class TrainedModel:
  """A model directory of `embeddings train`, loaded for scoring.

  Attributes:
    model_dir: the trainer's --model_dir.
    spec: the feature spec the rows are read and joined with.
    report: the run's report.json content (metrics, config, ...).
    columns: the raw columns the model reads, in spec order (never the
      label).
  """

  def __init__(self, model_dir: str, spec: spec_lib.FeatureSpec,
               report: Mapping[str, Any], saved_model_dir: str):
    """Loads the SavedModel; side tables are read on the first `score`.

    Args:
      model_dir: the trainer's --model_dir.
      spec: the feature spec it was trained with.
      report: its report.json content.
      saved_model_dir: its SavedModel.
    """
    self.model_dir = model_dir
    self.spec = spec
    self.report = dict(report)
    config_fields = {field.name for field in dataclasses.fields(
        config_lib.TrainerConfig)}
    config = config_lib.build_config(
        spec, {name: value for name, value in
               (report.get("config") or {}).items() if name in config_fields})
    self.columns: Tuple[str, ...] = serving.serving_columns(
        spec, models_lib.model_features(config, spec))
    self._joins, self._main_columns = frames.columns_to_join(spec,
                                                             self.columns)
    # The loaded object owns the variables the signature reads.
    self._loaded = tf.saved_model.load(saved_model_dir)
    self._serve = self._loaded.signatures[serving.SERVING_DEFAULT]
    self._sides: Dict[str, frames.SideRows] = {}

  @property
  def main_columns(self) -> Tuple[str, ...]:
    """The main-table columns a frame given to `score` must hold."""
    return self._main_columns

  def _side_tables(self) -> Dict[str, frames.SideRows]:
    # Read once per model: notebooks score many frames against one data
    # snapshot; load the model again to see changed side tables.
    for join in self._joins:
      if join.table not in self._sides:
        self._sides[join.table] = frames.read_side_table(self.spec,
                                                         join.table)
    return self._sides

  def examples(self, frame: pd.DataFrame) -> np.ndarray:
    """The serialized raw tf.Examples `score` sends for `frame`.

    Args:
      frame: raw main-table rows (see `score`).

    Returns:
      A [len(frame)] object array of serialized tf.Example bytes.

    Raises:
      pipelines.frames.FrameError: see `score`.
    """
    main = frames.typed_main_rows(self.spec, frame, self._main_columns)
    joined = frames.join_side_tables(main, self._joins, self._side_tables())
    return serving.raw_examples(
        self.spec, joined.select(list(self.columns)).to_pylist(),
        self.columns)

  def score(self, frame: pd.DataFrame,
            batch_size: int = DEFAULT_BATCH_SIZE) -> pd.Series:
    """The model's prediction for each raw main-table row.

    Args:
      frame: one row per main-table row (e.g. user_id, item_id, timestamp),
        holding at least `main_columns`; values of any dtype convert to the
        spec's column types as preprocessing converts them (e.g. an int
        user_id 7 is the string "7"). The label is not needed.
      batch_size: rows per call of the serving signature.

    Returns:
      float32 predictions (ratings, or probabilities for a binary task)
      named "prediction", aligned to frame.index.

    Raises:
      pipelines.frames.FrameError: a column is missing, a row that
        preprocessing would reject, or a join key missing from its side
        table (naming how many rows and a sample key).
    """
    examples = self.examples(frame)
    predictions = [np.zeros(0, np.float32)]
    for start in range(0, len(examples), batch_size):
      chunk = tf.constant(list(examples[start:start + batch_size]),
                          dtype=tf.string)
      output = self._serve(examples=chunk)[serving.PREDICTIONS]
      predictions.append(output.numpy().reshape(-1))
    return pd.Series(np.concatenate(predictions), index=frame.index,
                     name=PREDICTION)


def load_model(model_dir: str,
               spec: Union[None, str, spec_lib.FeatureSpec] = None,
               env: Optional[Mapping[str, str]] = None) -> TrainedModel:
  """Loads a trained model and its spec for scoring raw rows.

  Args:
    model_dir: the --model_dir of `embeddings train`.
    spec: a loaded FeatureSpec, a spec path, or None for the spec the run
      recorded in report.json (its --spec, a path as the run saw it).
    env: `${VAR}` values for a spec that is loaded here; they override the
      run's recorded --env values.

  Returns:
    The TrainedModel.

  Raises:
    FileNotFoundError: not a finished training run, or no spec recorded.
    transforms.spec.SpecError: the spec does not load.
    trainer.config.ConfigError: the run's recorded config does not fit the
      spec given.
  """
  trained = export_lib.read_trained_model(model_dir)
  if not isinstance(spec, spec_lib.FeatureSpec):
    path = spec or trained.spec_path
    if not path:
      raise FileNotFoundError(f"{model_dir!r}: its report names no spec; "
                              f"pass spec=")
    spec = loader.load_spec(path, {**dict(trained.spec_env),
                                   **dict(env or {})})
  return TrainedModel(model_dir, spec, trained.report,
                      trained.saved_model_dir)
