"""TrainerConfig: the one typed, frozen configuration of a training run.

A config is built from three layers, later ones winning: the defaults below,
the YAML spec's `model:` section, then command-line flags. Every value is
validated once, here, with an error that names the field, so the trainer
never meets a bad value halfway through a run.

Each field is declared once, with its help text (core/flags.py): the
`embeddings train` flags are generated from the fields (`add_flags`), and
the fields marked `model=True` are the ones the spec's `model:` section may
set (MODEL_FIELDS); paths and run-time options (model_dir, strategy, ...)
come only from flags. The flags default to unset, so a flag that is not
given never hides the spec's value.

This module imports no TensorFlow (nor the spec loader), so building the
flags costs no TensorFlow start-up.

It runs past 400 lines because the record, its help texts, its rules and
its merge are one thing: a new option is one field here plus its check,
and splitting them would put a field's meaning and its validation in
different files.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple

from core import flags as flags_lib
from core import layout
from transforms import dims as dims_lib
from transforms import spec as spec_lib

MODEL_TYPES = ("mf", "dnn")
OPTIMIZERS = ("lazy_adam", "adam", "adagrad", "sgd")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker",
              "parameter_server")
INPUT_MODES = ("auto", "tfrecord", "numpy")
VERBOSITY = (0, 1, 2)

# Metric -> "minimize" or "maximize": how everything that picks by a metric
# (early stopping, tuning, the retraining gate) reads it. Here, not in
# trainer/metrics.py, so that the flags of `embeddings tune` need no
# TensorFlow.
METRICS = {"rmse": "minimize", "mae": "minimize", "mse": "minimize",
           "auc": "maximize", "log_loss": "minimize"}

# Fields that do not change what a run trains: where it reads and writes,
# how often it checkpoints, what it prints, whether it exports. A backup
# made with other values of these still resumes (trainer/backup.py); every
# other field must match. The data and the spec are compared by content,
# not by path.
RESUME_NEUTRAL_FIELDS = frozenset({
    "preprocessed_dir", "model_dir", "spec_path", "spec_env",
    "checkpoint_every", "data_service_port", "eval_split", "export",
    "verbose", "restart"})


class ConfigError(ValueError):
  """A trainer configuration that cannot be used; names the field at fault."""


def _model(default: Any, **kwargs: Any) -> Any:
  """A field the spec's `model:` section may set, as well as its flag."""
  return flags_lib.option(default, model=True, **kwargs)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Everything one training run needs.

  Every field's meaning is its `help` text below (also the flag's help).
  """
  preprocessed_dir: str = flags_lib.option(
      help="output directory of `embeddings preprocess` (has _SUCCESS)",
      flag="preprocessed", metavar="DIR")
  model_dir: str = flags_lib.option(
      help="where checkpoints, TensorBoard logs, the SavedModel and the "
           "report go", metavar="DIR")
  spec_path: str = flags_lib.option(
      help="the YAML feature spec the data was preprocessed with",
      flag="spec", metavar="YAML")
  spec_env: Tuple[Tuple[str, str], ...] = flags_lib.option(
      (), help="override a ${VAR} of the spec (repeatable)", flag="env",
      metavar="NAME=VALUE", repeat=True, parse=spec_lib.parse_env_flags)
  model_type: str = _model(
      "mf", help="mf (biased matrix factorisation) or dnn",
      choices=MODEL_TYPES)
  task: Optional[str] = _model(
      None, help="regression or binary; unset: the spec's label task",
      choices=spec_lib.TASKS)
  user_feature: Optional[str] = _model(
      None, help="the user id feature (MF term and user bias)")
  item_feature: Optional[str] = _model(
      None, help="the item id feature (MF term and item bias)")
  features: Optional[Tuple[str, ...]] = _model(
      None, help="dnn: the features fed to the tower; unset: every feature",
      metavar="NAME,...")
  user_side_features: Tuple[str, ...] = _model(
      (), help="features whose embeddings are added to the user vector of "
               "the dot product (SVDFeature-style: age, gender, ... share "
               "strength across users with few ratings)",
      metavar="NAME,...")
  item_side_features: Tuple[str, ...] = _model(
      (), help="the same for the item vector (genres, ...)",
      metavar="NAME,...")
  embedding_dims: Tuple[Tuple[str, int], ...] = _model(
      (), help="per-feature dimension overrides", metavar="FEATURE=DIM,...")
  mf_dim: Optional[int] = _model(
      None, help="dimension of the user and item tables (and their side "
                 "features) when they take part in the dot product (mf, or "
                 "dnn with hybrid); unset: the larger of the two tables' "
                 "resolved dimensions")
  hidden_units: Tuple[int, ...] = _model(
      (64, 32), help="dnn hidden layer widths", metavar="WIDTH,...")
  dropout: float = _model(0.0, help="dropout rate after each hidden layer")
  hybrid: bool = _model(
      False, help="dnn: also add the MF dot product and a user bias")
  l2_user: float = _model(
      0.1, help="L2 strength on the looked-up user rows, per example; the "
                "default is the best found on MovieLens 100K u1")
  l2_item: float = _model(
      0.1, help="L2 strength on the looked-up item rows, per example")
  l2_embedding: float = _model(
      0.05, help="L2 strength on other looked-up embedding rows")
  l2_bias: float = _model(0.001, help="L2 strength on looked-up bias rows")
  l2_dense: float = _model(0.0, help="L2 strength on dense kernels")
  optimizer: str = _model(
      "lazy_adam", help="lazy_adam (updates only the rows in the batch), "
                        "adam, adagrad or sgd", choices=OPTIMIZERS)
  learning_rate: float = _model(0.003, help="the optimizer's learning rate")
  learning_rate_decay: float = _model(
      1.0, help="the learning rate is multiplied by this once per epoch "
                "(smoothly, step by step); 1.0 keeps it constant")
  batch_size: int = _model(256, help="global batch size")
  epochs: int = _model(10, help="training epochs")
  steps_per_epoch: Optional[int] = _model(
      None, help="steps per epoch; unset: ceil(train examples / "
                 "batch_size)")
  shuffle: bool = _model(
      True, help="shuffle the training data (off keeps the file order)")
  shuffle_buffer: int = _model(100_000,
                               help="shuffle buffer size in examples")
  seed: int = _model(
      42, help="seeds initialisers, shuffling, dropout and which training "
               "rows --validation_fraction holds out")
  validation_fraction: float = _model(
      0.0, help="hold out this fraction of the training split (rows chosen "
                "by a hash of the row, salted with --seed: the same rows "
                "every run) to validate each epoch and to select by; the "
                "eval split is then evaluated once, after training, as the "
                "test set. 0: no held-out rows, epochs are validated on the "
                "eval split and nothing may select by it")
  early_stopping_patience: int = _model(
      0, help="stop when the validation metric (rmse, or auc for binary) "
              "has not improved for this many epochs, and keep the best "
              "epoch's weights; needs --validation_fraction; 0: off")
  input_mode: str = flags_lib.option(
      "auto", help="tfrecord (streamed from the shards each epoch), numpy "
                   "(read once into memory, then batched from there), or "
                   "auto: numpy when the model's inputs fit "
                   "--max_input_memory_mb, else tfrecord",
      choices=INPUT_MODES)
  max_input_memory_mb: int = flags_lib.option(
      4096, help="the in-memory budget input_mode auto loads within")
  checkpoint_every: int = flags_lib.option(
      0, help="checkpoint every N training steps (0: at each epoch's end); "
              "a checkpoint writes every table and its optimizer moments, "
              "so N should cover minutes of training")
  strategy: str = flags_lib.option(
      "auto", help="the distribution strategy; auto: from TF_CONFIG and the "
                   "local GPUs", choices=STRATEGIES)
  data_service_port: int = flags_lib.option(
      2223, help="parameter_server: the port of the tf.data service "
                 "dispatcher the coordinator runs on the chief's host (give "
                 "every task the same value); the workers share each pass "
                 "over the training data through it")
  min_shard_bytes: int = flags_lib.option(
      256 << 10, help="parameter_server: smallest variable shard")
  max_shards: Optional[int] = flags_lib.option(
      None, help="parameter_server: most shards per variable; unset: the "
                 "number of parameter servers")
  eval_split: str = flags_lib.option(
      layout.EVAL, help="the split evaluated after training")
  clip_predictions: bool = _model(
      True, help="clip regression predictions to the label's range at "
                 "inference (never while training: clipping would stop "
                 "gradients)")
  export: bool = flags_lib.option(
      True, help="write the serving SavedModel after training")
  restart: bool = flags_lib.option(
      False, help="discard the backup a killed run left in --model_dir and "
                  "train from scratch (without it a backup is resumed only "
                  "when it was made with the same settings, data and spec)")
  # The flag is not --verbose: the `embeddings` command takes that one for
  # itself (all of TensorFlow's and Beam's log lines).
  verbose: int = flags_lib.option(
      0, help="Keras's own progress output (0 none, 1 bar, 2 a line per "
              "epoch); the trainer prints its own line per epoch regardless",
      choices=VERBOSITY, flag="keras_verbose")

  def __post_init__(self):
    _validate(self)

  @property
  def embedding_dim_overrides(self) -> Dict[str, int]:
    """embedding_dims as a dict."""
    return dict(self.embedding_dims)

  @property
  def env(self) -> Dict[str, str]:
    """spec_env as a dict."""
    return dict(self.spec_env)

  @property
  def has_dot_product(self) -> bool:
    """Whether the model has the MF term (mf, or dnn with hybrid)."""
    return self.model_type == "mf" or self.hybrid

  def training_fields(self) -> Dict[str, Any]:
    """The fields that change what this run trains (its resume fingerprint).

    Returns:
      Field -> value (tuples as lists, as JSON holds them) for every field
      outside RESUME_NEUTRAL_FIELDS.
    """
    return {name: _as_json(getattr(self, name)) for name in _FIELDS
            if name not in RESUME_NEUTRAL_FIELDS}

  def resolve_task(self, spec: spec_lib.FeatureSpec) -> str:
    """The task to train: this config's, else the spec label's."""
    return self.task or spec.label.task

  def tied_tables(self) -> Tuple[str, ...]:
    """The tables the dot product ties to one dimension.

    Returns:
      The user and item tables and the side features added to them when
      the model has the dot product, else ().
    """
    if not self.has_dot_product:
      return ()
    named = (self.user_feature, self.item_feature)
    return tuple(name for name in named if name is not None) + (
        self.user_side_features + self.item_side_features)

  def table_dims(self, infos: Mapping[str, Any], tables: Sequence[str]
                ) -> Dict[str, int]:
    """The dimension of each of `tables` in a model built from this config.

    Args:
      infos: feature -> FeatureInfo of the training data (its recorded
        embedding_dim).
      tables: the features whose tables to size.

    Returns:
      Feature -> dimension (transforms/dims.py's rule: override, the tied
      tables' shared mf_dim, else the recorded dimension).
    """
    tied = self.tied_tables()
    return dims_lib.table_dimensions(
        {name: info.embedding_dim for name, info in infos.items()}, tables,
        overrides=self.embedding_dim_overrides, tied=tied,
        tied_basis=(self.user_feature, self.item_feature) if tied else (),
        tied_dim=self.mf_dim)

  def with_table_dims(self, dims: Mapping[str, int]) -> TrainerConfig:
    """This config with the given table dimensions pinned.

    Untied tables' dimensions go into embedding_dims; the tied tables'
    (tied_tables()) common dimension into mf_dim.

    Args:
      dims: feature -> dimension, e.g. a previous model's report's
        embedding_dims.

    Returns:
      The new config, whose table_dims give `dims` for those tables.

    Raises:
      ConfigError: the tied tables in `dims` have different dimensions.
    """
    tied = self.tied_tables()
    shared = sorted({int(dim) for name, dim in dims.items() if name in tied})
    if len(shared) > 1:
      raise ConfigError(
          f"embedding_dims: the dot product's tables {list(tied)} share one "
          f"dimension, but {dict(dims)} gives them {shared}")
    overrides = {**self.embedding_dim_overrides,
                 **{name: int(dim) for name, dim in dims.items()
                    if name not in tied}}
    changes: Dict[str, Any] = {"embedding_dims": tuple(sorted(
        overrides.items()))}
    if shared:
      changes["mf_dim"] = shared[0]
    return dataclasses.replace(self, **changes)

  def resolve_user_item(self, spec: spec_lib.FeatureSpec
                       ) -> Tuple[Optional[str], Optional[str]]:
    """The user and item features, checked against the spec.

    Args:
      spec: the feature spec the data was preprocessed with.

    Returns:
      (user_feature, item_feature); either may be None for a dnn without
      the hybrid term.

    Raises:
      ConfigError: a named feature is missing, numeric or multi-valued, or
        mf/hybrid has no user or item feature.
    """
    names = {f.name for f in spec.features}
    for field in ("user_feature", "item_feature"):
      value = getattr(self, field)
      if value is None:
        continue
      if value not in names:
        raise ConfigError(f"model.{field}: {value!r} is not a feature of spec "
                          f"{spec.name!r}; features: {sorted(names)}")
      feature = spec.feature(value)
      if not feature.is_categorical or spec.is_multivalent(value):
        raise ConfigError(f"model.{field}: {value!r} must be a single-valued "
                          f"categorical feature (it is {feature.kind!r})")
    if self.has_dot_product and (
        self.user_feature is None or self.item_feature is None):
      what = "mf" if self.model_type == "mf" else "dnn with hybrid: true"
      raise ConfigError(f"model: {what} needs both user_feature and "
                        f"item_feature (set them in the spec's model: section "
                        f"or with --user_feature/--item_feature)")
    _check_side_features(self, spec, names)
    if self.features is not None:
      unknown = sorted(set(self.features) - names)
      if unknown:
        raise ConfigError(f"model.features: {unknown} are not features of "
                          f"spec {spec.name!r}")
    unknown = sorted(set(self.embedding_dim_overrides) - names)
    if unknown:
      raise ConfigError(f"model.embedding_dims: {unknown} are not features of "
                        f"spec {spec.name!r}")
    return self.user_feature, self.item_feature


def _check_side_features(config: TrainerConfig, spec: spec_lib.FeatureSpec,
                         names: Set[str]) -> None:
  """Raises ConfigError for a side feature that cannot join the dot product."""
  for field in ("user_side_features", "item_side_features"):
    for value in getattr(config, field):
      if value not in names:
        raise ConfigError(f"model.{field}: {value!r} is not a feature of "
                          f"spec {spec.name!r}")
      if not spec.feature(value).is_categorical:
        raise ConfigError(f"model.{field}: {value!r} is numeric; only "
                          f"categorical features have embeddings to add")
      if value in (config.user_feature, config.item_feature):
        raise ConfigError(f"model.{field}: {value!r} is the user or item "
                          f"feature itself")


# Fields the spec's `model:` section may set.
MODEL_FIELDS = tuple(field.name for field in dataclasses.fields(TrainerConfig)
                     if field.metadata.get("model"))
_FIELDS = {field.name: field for field in dataclasses.fields(TrainerConfig)}


def _as_json(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_as_json(item) for item in value]
  return value


def _is_tuple(hint: Any) -> bool:
  return typing.get_origin(hint) is tuple or any(
      typing.get_origin(arg) is tuple for arg in typing.get_args(hint))


# List and pairs fields: what a YAML list or mapping, or flag text, becomes.
_TUPLE_FIELDS = frozenset(
    name for name, hint in typing.get_type_hints(TrainerConfig).items()
    if _is_tuple(hint))


def add_flags(parser: argparse.ArgumentParser) -> None:
  """Adds a flag for every TrainerConfig field, each defaulting to unset.

  Args:
    parser: the parser (`embeddings train`'s, or one that extends it).
  """
  flags_lib.add_flags(parser, TrainerConfig, unset_defaults=True)


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings train` flags: one per TrainerConfig field.

  Builds without TensorFlow, so `embeddings train --help` is fast.

  Returns:
    The parser; every flag but --spec, --preprocessed and --model_dir
    defaults to unset (the spec's `model:` section or the field's default
    applies; the help shows the default). Commands that extend it
    (`embeddings tune`) add their own.
  """
  parser = argparse.ArgumentParser(
      prog="embeddings train",
      description="Train a Keras embedding model on preprocessed data; "
                  "writes report.json, model_card.md, training_curve.png "
                  "and the serving SavedModel to --model_dir.")
  add_flags(parser)
  return parser


def values_from_args(args: argparse.Namespace) -> Dict[str, Any]:
  """The TrainerConfig values of the flags given.

  Args:
    args: parsed by a parser `add_flags` filled; attributes that are not
      TrainerConfig fields (a caller's own flags) are ignored.

  Returns:
    Field -> typed value, for every flag that was given.

  Raises:
    ConfigError: a flag's text does not convert (the message names it).
  """
  try:
    return flags_lib.values_from_args(TrainerConfig, args)
  except ValueError as error:
    raise ConfigError(str(error)) from None


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(config: TrainerConfig) -> None:
  """Raises ConfigError for the first field that cannot be used."""
  for field in ("preprocessed_dir", "model_dir", "spec_path"):
    value = getattr(config, field)
    if not isinstance(value, str) or not value:
      raise ConfigError(f"{field}: required (a path), got {value!r}")
  for name, field in _FIELDS.items():
    allowed = field.metadata.get("choices")
    value = getattr(config, name)
    if allowed is None or (value is None and field.default is None):
      continue
    # type(): True is not one of the verbosity levels 0, 1, 2.
    if value not in allowed or type(value) not in {type(c) for c in allowed}:
      raise ConfigError(f"{name}: must be one of {tuple(allowed)}, got "
                        f"{value!r}")
  _validate_counts(config)
  _validate_rates(config)
  _validate_model(config)


def _validate_counts(config: TrainerConfig) -> None:
  positive_ints = ("batch_size", "epochs", "shuffle_buffer", "min_shard_bytes",
                   "max_input_memory_mb")
  for field in positive_ints:
    value = getattr(config, field)
    if not _is_int(value) or value <= 0:
      raise ConfigError(f"{field}: must be a positive integer, got {value!r}")
  for field in ("steps_per_epoch", "mf_dim", "max_shards"):
    value = getattr(config, field)
    if value is not None and (not _is_int(value) or value <= 0):
      raise ConfigError(f"{field}: must be a positive integer or unset, got "
                        f"{value!r}")
  if not _is_int(config.checkpoint_every) or config.checkpoint_every < 0:
    raise ConfigError(f"checkpoint_every: must be an integer >= 0 (0: each "
                      f"epoch), got {config.checkpoint_every!r}")
  if (not _is_int(config.data_service_port)
      or not 0 < config.data_service_port < 65536):
    raise ConfigError(f"data_service_port: must be a port number (1-65535), "
                      f"got {config.data_service_port!r}")
  if not _is_int(config.seed):
    raise ConfigError(f"seed: must be an integer, got {config.seed!r}")
  if (not _is_int(config.early_stopping_patience)
      or config.early_stopping_patience < 0):
    raise ConfigError(f"early_stopping_patience: must be an integer >= 0 "
                      f"(0: off), got {config.early_stopping_patience!r}")


def _validate_rates(config: TrainerConfig) -> None:
  for field in ("l2_user", "l2_item", "l2_embedding", "l2_bias", "l2_dense"):
    value = getattr(config, field)
    if not _is_number(value) or value < 0:
      raise ConfigError(f"{field}: must be a number >= 0, got {value!r}")
  if not _is_number(config.learning_rate) or config.learning_rate <= 0:
    raise ConfigError(f"learning_rate: must be a number > 0, got "
                      f"{config.learning_rate!r}")
  if (not _is_number(config.learning_rate_decay)
      or not 0 < config.learning_rate_decay <= 1):
    raise ConfigError(f"learning_rate_decay: must be in (0, 1], got "
                      f"{config.learning_rate_decay!r}")
  if not _is_number(config.dropout) or not 0 <= config.dropout < 1:
    raise ConfigError(f"dropout: must be in [0, 1), got {config.dropout!r}")
  if (not _is_number(config.validation_fraction)
      or not 0 <= config.validation_fraction < 1):
    raise ConfigError(f"validation_fraction: must be in [0, 1), got "
                      f"{config.validation_fraction!r}")
  if config.early_stopping_patience and not config.validation_fraction:
    raise ConfigError(
        "early_stopping_patience: needs --validation_fraction > 0 (e.g. "
        "0.1): without held-out training rows the epochs are validated on "
        "the eval split, the test set, which nothing may select by")


def _validate_model(config: TrainerConfig) -> None:
  if config.model_type == "dnn" and not config.hidden_units:
    raise ConfigError("hidden_units: a dnn needs at least one hidden layer")
  for units in config.hidden_units:
    if not _is_int(units) or units <= 0:
      raise ConfigError(f"hidden_units: every width must be a positive "
                        f"integer, got {config.hidden_units!r}")
  for name, dim in config.embedding_dims:
    if not isinstance(name, str) or not _is_int(dim) or dim <= 0:
      raise ConfigError(f"embedding_dims: {name!r} -> {dim!r}; each entry "
                        f"must map a feature name to a positive integer")
  if config.features is not None and not config.features:
    raise ConfigError("features: an empty list leaves the model no input")
  if (config.user_side_features or config.item_side_features) and not (
      config.has_dot_product):
    raise ConfigError("user_side_features / item_side_features: need the dot "
                      "product (model_type 'mf', or 'dnn' with hybrid)")
  if config.hybrid and config.model_type != "dnn":
    raise ConfigError("hybrid: only applies to model_type 'dnn' (mf already "
                      "is the dot product)")


def _coerce(field: str, value: Any, where: str) -> Any:
  """A spec or Python value as the field's type.

  Text for a list or pairs field reads as its flag does (`64,32`,
  `user=8,movie=6`); YAML lists and mappings become tuples.

  Args:
    field: the TrainerConfig field.
    value: the value given.
    where: "model" (the spec's section) or "flag", for messages.

  Returns:
    The value to construct the config with.

  Raises:
    ConfigError: text that does not parse, or a list field given neither a
      list nor text.
  """
  if value is None or field not in _TUPLE_FIELDS:
    return value
  if isinstance(value, str):
    try:
      return flags_lib.values_from_args(
          TrainerConfig, argparse.Namespace(**{field: value}))[field]
    except ValueError as error:
      raise ConfigError(f"{where}.{field}: {value!r} does not parse "
                        f"({error})") from None
  if isinstance(value, Mapping):
    value = list(value.items())
  if not isinstance(value, (list, tuple)):
    raise ConfigError(f"{where}.{field}: must be a list, got {value!r}")
  return tuple(tuple(item) if isinstance(item, (list, tuple)) else item
               for item in value)


def build_config(spec: spec_lib.FeatureSpec,
                 flags: Optional[Mapping[str, Any]] = None,
                 **paths: Any) -> TrainerConfig:
  """Merges defaults, the spec's `model:` section and flags into a config.

  Args:
    spec: the loaded feature spec (its `model:` section is read).
    flags: field -> value from the command line (values_from_args) or a
      caller; None values are ignored so an unset flag never hides the
      spec's value.
    **paths: preprocessed_dir, model_dir, spec_path, spec_env and other
      run-time fields.

  Returns:
    The validated TrainerConfig.

  Raises:
    ConfigError: an unknown field in `model:` or a value that fails
      validation.
  """
  unknown = sorted(set(spec.model) - set(MODEL_FIELDS))
  if unknown:
    raise ConfigError(f"spec {spec.name!r} model: unknown field(s) {unknown}; "
                      f"allowed: {sorted(MODEL_FIELDS)}")
  values: Dict[str, Any] = {}
  for field, value in spec.model.items():
    values[field] = _coerce(field, value, "model")
  for field, value in dict(flags or {}).items():
    if field not in _FIELDS:
      raise ConfigError(f"flag --{field}: not a trainer option")
    if value is not None:
      values[field] = _coerce(field, value, "flag")
  for field, value in paths.items():
    if field not in _FIELDS:
      raise ConfigError(f"{field}: not a trainer option")
    values[field] = value
  try:
    return TrainerConfig(**values)
  except TypeError as error:
    raise ConfigError(f"trainer config: {error}") from None
