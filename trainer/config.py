"""TrainerConfig: the one typed, frozen configuration of a training run.

A config is built from three layers, later ones winning: the defaults below,
the YAML spec's `model:` section, then command-line flags. Every value is
validated once, here, with an error that names the field, so the trainer
never meets a bad value halfway through a run.

The spec's `model:` section may set any model or optimisation field (the
names of TrainerConfig's fields in MODEL_FIELDS); paths and run-time options
(model_dir, strategy, ...) come only from flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from transforms import spec as spec_lib

MODEL_TYPES = ("mf", "dnn")
OPTIMIZERS = ("lazy_adam", "adam", "adagrad", "sgd")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker",
              "parameter_server")
INPUT_MODES = ("auto", "tfrecord", "numpy")


class ConfigError(ValueError):
  """A trainer configuration that cannot be used; names the field at fault."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Everything one training run needs.

  Attributes:
    preprocessed_dir: output of `embeddings preprocess` (has _SUCCESS).
    model_dir: where checkpoints, TensorBoard logs, the SavedModel and the
      report go.
    spec_path: the YAML feature spec the data was preprocessed with.
    spec_env: `${VAR}` overrides used to load the spec, as (name, value).
    model_type: "mf" (biased matrix factorisation) or "dnn".
    task: "regression" or "binary"; defaults to the spec's label task.
    user_feature: the user id feature (MF term and user bias).
    item_feature: the item id feature (MF term and item bias).
    features: for dnn, the features fed to the tower (None: every feature).
    user_side_features: features whose embeddings are added to the user
      vector of the dot product (SVDFeature-style: age, gender, ... share
      strength across users with few ratings).
    item_side_features: the same for the item vector (genres, ...).
    embedding_dims: per-feature dimension overrides, as (feature, dim).
    mf_dim: dimension of the user and item tables when they take part in
      the dot product (mf, or dnn with hybrid); None: the larger of the
      two tables' resolved dimensions.
    hidden_units: dnn hidden layer widths.
    dropout: dropout rate after each hidden layer.
    hybrid: dnn also adds the MF dot product and a user bias.
    l2_user, l2_item: L2 strength on the looked-up user / item rows, per
      example (the defaults are the best found on MovieLens 100K u1).
    l2_embedding: L2 strength on other looked-up embedding rows.
    l2_bias: L2 strength on looked-up bias rows.
    l2_dense: L2 on dense kernels.
    optimizer: lazy_adam (default; sparse rows only), adam, adagrad, sgd.
    learning_rate: the optimizer's learning rate.
    learning_rate_decay: the learning rate is multiplied by this once per
      epoch (smoothly, step by step); 1.0 keeps it constant.
    batch_size: global batch size.
    epochs: training epochs.
    steps_per_epoch: None: ceil(train examples / batch_size).
    shuffle: shuffle training data (False keeps the file order).
    shuffle_buffer: shuffle buffer size in examples.
    seed: seeds initialisers, shuffling and dropout.
    input_mode: "tfrecord" (streamed from the shards each epoch), "numpy"
      (read once into memory, then batched from there), or "auto": numpy
      when the model's inputs fit max_input_memory_mb, else tfrecord.
    max_input_memory_mb: the in-memory budget "auto" loads within.
    checkpoint_every: checkpoint every N training steps (0: each epoch).
    strategy: auto, default, mirrored, multi_worker or parameter_server.
    data_service_port: parameter_server: the port of the tf.data service
      dispatcher the coordinator runs on the chief's host (every task must
      be given the same value); the workers share each pass over the
      training data through it.
    min_shard_bytes: parameter_server: smallest variable shard.
    max_shards: parameter_server: most shards per variable (None: the
      number of parameter servers).
    eval_split: the split evaluated after training.
    clip_predictions: clip regression predictions to the label's range at
      inference (never while training: clipping would stop gradients).
    export: write the serving SavedModel after training.
    verbose: Keras's own progress output (0 none, 1 bar, 2 a line per
      epoch); the trainer prints its own line per epoch regardless.
  """
  preprocessed_dir: str
  model_dir: str
  spec_path: str
  spec_env: Tuple[Tuple[str, str], ...] = ()
  model_type: str = "mf"
  task: Optional[str] = None
  user_feature: Optional[str] = None
  item_feature: Optional[str] = None
  features: Optional[Tuple[str, ...]] = None
  user_side_features: Tuple[str, ...] = ()
  item_side_features: Tuple[str, ...] = ()
  embedding_dims: Tuple[Tuple[str, int], ...] = ()
  mf_dim: Optional[int] = None
  hidden_units: Tuple[int, ...] = (64, 32)
  dropout: float = 0.0
  hybrid: bool = False
  l2_user: float = 0.1
  l2_item: float = 0.1
  l2_embedding: float = 0.05
  l2_bias: float = 0.001
  l2_dense: float = 0.0
  optimizer: str = "lazy_adam"
  learning_rate: float = 0.003
  learning_rate_decay: float = 1.0
  batch_size: int = 256
  epochs: int = 10
  steps_per_epoch: Optional[int] = None
  shuffle: bool = True
  shuffle_buffer: int = 100_000
  seed: int = 42
  input_mode: str = "auto"
  max_input_memory_mb: int = 4096
  checkpoint_every: int = 1000
  strategy: str = "auto"
  data_service_port: int = 2223
  min_shard_bytes: int = 256 << 10
  max_shards: Optional[int] = None
  eval_split: str = "eval"
  clip_predictions: bool = True
  export: bool = True
  verbose: int = 0

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

  def resolve_task(self, spec: spec_lib.FeatureSpec) -> str:
    """The task to train: this config's, else the spec label's."""
    return self.task or spec.label.task

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
    if (self.model_type == "mf" or self.hybrid) and (
        self.user_feature is None or self.item_feature is None):
      what = "mf" if self.model_type == "mf" else "dnn with hybrid: true"
      raise ConfigError(f"model: {what} needs both user_feature and "
                        f"item_feature (set them in the spec's model: section "
                        f"or with --user_feature/--item_feature)")
    for field in ("user_side_features", "item_side_features"):
      for value in getattr(self, field):
        if value not in names:
          raise ConfigError(f"model.{field}: {value!r} is not a feature of "
                            f"spec {spec.name!r}")
        if not spec.feature(value).is_categorical:
          raise ConfigError(f"model.{field}: {value!r} is numeric; only "
                            f"categorical features have embeddings to add")
        if value in (self.user_feature, self.item_feature):
          raise ConfigError(f"model.{field}: {value!r} is the user or item "
                            f"feature itself")
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


# Fields the spec's `model:` section may set.
MODEL_FIELDS = ("model_type", "task", "user_feature", "item_feature",
                "features", "user_side_features", "item_side_features",
                "embedding_dims", "mf_dim", "hidden_units", "dropout",
                "hybrid", "l2_user", "l2_item", "l2_embedding", "l2_bias",
                "l2_dense", "optimizer", "learning_rate",
                "learning_rate_decay", "batch_size", "epochs",
                "steps_per_epoch", "shuffle", "shuffle_buffer", "seed",
                "clip_predictions")


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
  choices = {"model_type": MODEL_TYPES, "optimizer": OPTIMIZERS,
             "strategy": STRATEGIES, "input_mode": INPUT_MODES}
  for field, allowed in choices.items():
    if getattr(config, field) not in allowed:
      raise ConfigError(f"{field}: must be one of {allowed}, got "
                        f"{getattr(config, field)!r}")
  if config.task is not None and config.task not in spec_lib.TASKS:
    raise ConfigError(f"task: must be one of {spec_lib.TASKS}, got "
                      f"{config.task!r}")
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
      config.model_type == "mf" or config.hybrid):
    raise ConfigError("user_side_features / item_side_features: need the dot "
                      "product (model_type 'mf', or 'dnn' with hybrid)")
  if config.hybrid and config.model_type != "dnn":
    raise ConfigError("hybrid: only applies to model_type 'dnn' (mf already "
                      "is the dot product)")
  if not _is_int(config.verbose) or config.verbose not in (0, 1, 2):
    raise ConfigError(f"verbose: must be 0, 1 or 2, got {config.verbose!r}")


def _coerce(field: str, value: Any, where: str) -> Any:
  """Converts YAML / flag values to the field's type (lists -> tuples)."""
  if value is None:
    return None
  if field == "hidden_units":
    if isinstance(value, str):
      value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}.hidden_units: must be a list of widths, "
                        f"got {value!r}")
    try:
      return tuple(int(v) for v in value)
    except (TypeError, ValueError):
      raise ConfigError(f"{where}.hidden_units: must be a list of integers, "
                        f"got {value!r}") from None
  if field in ("features", "user_side_features", "item_side_features"):
    if isinstance(value, str):
      value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}.{field}: must be a list of feature names, "
                        f"got {value!r}")
    return tuple(str(v) for v in value)
  if field == "embedding_dims":
    if isinstance(value, str):
      pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
      if any(len(p) != 2 for p in pairs):
        raise ConfigError(f"{where}.embedding_dims: expected "
                          f"feature=dim[,feature=dim], got {value!r}")
      try:
        return tuple((k.strip(), int(v)) for k, v in pairs)
      except ValueError:
        raise ConfigError(f"{where}.embedding_dims: dimensions must be "
                          f"integers, got {value!r}") from None
    if isinstance(value, Mapping):
      return tuple((str(k), v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
      return tuple((str(k), v) for k, v in value)
    raise ConfigError(f"{where}.embedding_dims: must map feature -> dim, "
                      f"got {value!r}")
  return value


def build_config(spec: spec_lib.FeatureSpec,
                 flags: Optional[Mapping[str, Any]] = None,
                 **paths: Any) -> TrainerConfig:
  """Merges defaults, the spec's `model:` section and flags into a config.

  Args:
    spec: the loaded feature spec (its `model:` section is read).
    flags: field -> value from the command line; None values are ignored so
      an unset flag never hides the spec's value.
    **paths: preprocessed_dir, model_dir, spec_path, spec_env and other
      run-time fields.

  Returns:
    The validated TrainerConfig.

  Raises:
    ConfigError: an unknown field in `model:` or a value that fails
      validation.
  """
  known = {f.name for f in dataclasses.fields(TrainerConfig)}
  unknown = sorted(set(spec.model) - set(MODEL_FIELDS))
  if unknown:
    raise ConfigError(f"spec {spec.name!r} model: unknown field(s) {unknown}; "
                      f"allowed: {sorted(MODEL_FIELDS)}")
  values: Dict[str, Any] = {}
  for field, value in spec.model.items():
    values[field] = _coerce(field, value, "model")
  for field, value in dict(flags or {}).items():
    if field not in known:
      raise ConfigError(f"flag --{field}: not a trainer option")
    if value is not None:
      values[field] = _coerce(field, value, "flag")
  for field, value in paths.items():
    if field not in known:
      raise ConfigError(f"{field}: not a trainer option")
    values[field] = value
  try:
    return TrainerConfig(**values)
  except TypeError as error:
    raise ConfigError(f"trainer config: {error}") from None


