"""What `embeddings tune` searches, and one trial's trainer config from it.

Per table the preprocessing run records the range around the fourth-root
rule worth searching (`dim_range` in feature_info.json). The search space
holds the dimension of every table the model embeds within its range (the
tables of the dot product share one, `mf_dim`), the L2 strengths of the
tables in the model and the learning rate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import optuna

from trainer import config as config_lib
from trainer import models
from transforms import feature_info as feature_info_lib
from transforms import spec as spec_lib
from workflows import tune_options

DIM_PREFIX = "dim_"
MF_DIM = "mf_dim"
DEFAULT_L2_RANGE = tune_options.DEFAULT_L2_RANGE
DEFAULT_LEARNING_RATE_RANGE = tune_options.DEFAULT_LEARNING_RATE_RANGE


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """What a study searches.

  Attributes:
    dims: parameter name -> (low, high) inclusive, for `dim_<feature>` of
      every embedded feature outside the dot product, and `mf_dim` when the
      model has the MF term.
    mf_features: the features whose dimension is `mf_dim` (user, item).
    l2_fields: the config's L2 fields searched.
    l2_range: (low, high) of every L2 strength, log-uniform.
    learning_rate_range: (low, high), log-uniform.
  """
  dims: Mapping[str, Tuple[int, int]]
  mf_features: Tuple[str, ...]
  l2_fields: Tuple[str, ...]
  l2_range: Tuple[float, float]
  learning_rate_range: Tuple[float, float]

  def feature_dims(self, params: Mapping[str, Any]) -> Dict[str, int]:
    """Feature -> dimension from a trial's parameters.

    Args:
      params: the trial's parameters (names as in `dims`).

    Returns:
      The dimension of every tuned feature's table.
    """
    dims = {}
    for name in self.dims:
      if name == MF_DIM:
        for feature in self.mf_features:
          dims[feature] = int(params[MF_DIM])
      else:
        dims[name[len(DIM_PREFIX):]] = int(params[name])
    return dims


def search_space(config: config_lib.TrainerConfig,
                 spec: spec_lib.FeatureSpec,
                 infos: Mapping[str, feature_info_lib.FeatureInfo],
                 l2_range: Tuple[float, float] = DEFAULT_L2_RANGE,
                 learning_rate_range: Tuple[float, float] = (
                     DEFAULT_LEARNING_RATE_RANGE)) -> SearchSpace:
  """The search space of a model: its tables' dim_ranges, L2 and lr.

  Args:
    config: the base config (model type, features, user/item features).
    spec: the feature spec.
    infos: feature_info.json of the preprocessed data (sizes, dim_range).
    l2_range: (low, high) of the L2 strengths.
    learning_rate_range: (low, high) of the learning rate.

  Returns:
    The SearchSpace.

  Raises:
    config.ConfigError: a range is empty or not positive, or the model
      reads a feature the preprocessed data lacks.
  """
  for what, (low, high) in (("l2_range", l2_range),
                            ("learning_rate_range", learning_rate_range)):
    if not 0 < low <= high:
      raise config_lib.ConfigError(
          f"{what}: need 0 < low <= high, got ({low}, {high})")
  user, item = config.resolve_user_item(spec)
  names = models.model_features(config, spec)
  missing = sorted(set(names) - set(infos))
  if missing:
    raise config_lib.ConfigError(
        f"features {missing} are not in feature_info.json of the "
        f"preprocessed data; was it preprocessed with this spec?")
  # The dot product's tables (side features added to the user and item
  # vectors too) share one dimension: mf_dim sets them all.
  in_dot = config.tied_tables()
  mf_features = (user, item) if in_dot else ()
  tower = set(config.features or [f.name for f in spec.features])
  dims: Dict[str, Tuple[int, int]] = {}
  if in_dot:
    ranges = [tuple(infos[name].dim_range) for name in mf_features]
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
      # Tables of very different sizes: the one dot-product dimension can
      # only lie in one of the two ranges, so search their hull.
      low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    dims[MF_DIM] = (low, high)
  embedded = []
  if config.model_type == "dnn":
    embedded = [name for name in names if name in tower
                and infos[name].kind.categorical and name not in in_dot]
  for name in embedded:
    low, high = infos[name].dim_range
    dims[DIM_PREFIX + name] = (int(low), int(high))
  l2_fields = []
  if user in names:
    l2_fields.append("l2_user")
  if item in names:
    l2_fields.append("l2_item")
  if any(name not in (user, item) and infos[name].kind.categorical
         for name in names):
    l2_fields.append("l2_embedding")
  return SearchSpace(dims=dims, mf_features=tuple(mf_features),
                     l2_fields=tuple(l2_fields),
                     l2_range=tuple(map(float, l2_range)),
                     learning_rate_range=tuple(map(float,
                                                   learning_rate_range)))


def suggest_config(trial: optuna.trial.BaseTrial, space: SearchSpace,
                   base: config_lib.TrainerConfig, model_dir: str
                  ) -> config_lib.TrainerConfig:
  """Samples one trial's config from the space.

  Args:
    trial: the Optuna trial (or a FixedTrial).
    space: from search_space.
    base: the config every trial starts from.
    model_dir: where this trial trains.

  Returns:
    The trial's TrainerConfig (export off: only the score is needed).
  """
  params = {name: trial.suggest_int(name, low, high)
            for name, (low, high) in space.dims.items()}
  # The base's own overrides of tables the study does not search stay.
  table_dims = {name: dim for name, dim in base.embedding_dim_overrides.items()
                if name not in base.tied_tables()}
  table_dims.update(space.feature_dims(params))
  changes: Dict[str, Any] = {
      "model_dir": model_dir, "export": False,
      "learning_rate": trial.suggest_float(
          "learning_rate", *space.learning_rate_range, log=True)}
  for field in space.l2_fields:
    changes[field] = trial.suggest_float(field, *space.l2_range, log=True)
  return dataclasses.replace(base.with_table_dims(table_dims), **changes)
