"""Trainer building blocks on tiny in-memory data: layers, LazyAdam, models.

No preprocessing run is needed: the spec is parsed from a dict and the
feature info written by hand, as the pipeline would.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer import config as config_lib
from trainer import data as data_lib
from trainer import layers
from trainer import models
from trainer import optimizers
from transforms import feature_info as feature_info_lib
from transforms import loader

NUM_USERS = 12
NUM_ITEMS = 9
NUM_GENRES = 4


# A spec as YAML gives it, less `model:` (tests/test_trainer_config.py too).
TINY_SPEC = {
    "name": "tiny",
    "inputs": {"ratings": {
        "format": "csv", "path": "unused.csv", "eval_path": "unused.csv",
        "columns": ["user_id", "item_id", "genres", "age", "rating"],
        "types": {"age": "float", "rating": "float"}}},
    "label": {"column": "rating", "task": "regression", "min": 0, "max": 5},
    "features": [
        {"name": "user", "kind": "vocabulary", "source": "user_id"},
        {"name": "movie", "kind": "vocabulary", "source": "item_id"},
        {"name": "genres", "kind": "tokens", "source": "genres",
         "delimiter": "|"},
        {"name": "age", "kind": "numeric", "source": "age"},
    ],
}


def _spec(task="regression", model=None):
  return loader.parse_spec(dict(
      TINY_SPEC, label=dict(TINY_SPEC["label"], task=task),
      model=model or {"user_feature": "user", "item_feature": "movie"}))


def _infos(spec):
  return feature_info_lib.resolve_feature_info(
      spec, {"user": NUM_USERS - 1, "movie": NUM_ITEMS - 1,
             "genres": NUM_GENRES - 1})


def _config(spec, **overrides):
  return config_lib.build_config(
      spec, overrides, preprocessed_dir="unused", model_dir="unused",
      spec_path="unused.yaml")


def _data(n=64, seed=0, used_users=8, used_items=6, binary=False):
  """Ratings touching only the first used_users users / used_items items."""
  rng = np.random.RandomState(seed)
  users = rng.randint(0, used_users, n).astype(np.int64)
  items = rng.randint(0, used_items, n).astype(np.int64)
  lengths = rng.randint(0, 3, n)  # some rows have no genre at all
  values = rng.randint(0, NUM_GENRES, lengths.sum()).astype(np.int64)
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  labels = (rng.rand(n) > 0.5).astype(np.float32) if binary else (
      1 + 4 * rng.rand(n)).astype(np.float32)
  return data_lib.InMemorySplit(
      dense={"user": users, "movie": items,
             "age": rng.randn(n).astype(np.float32), "label": labels},
      sparse={"genres": (values, splits)})


def _dataset(data, names, batch_size=16):
  return data_lib.numpy_dataset(
      data, data_lib.InputOptions(batch_size=batch_size), names)


def test_single_valued_lookup_returns_the_rows():
  values = np.arange(12, dtype=np.float32).reshape(4, 3)
  table = layers.EmbeddingLookup("f", size=4, dim=3, initial_value=values)
  out = table(tf.constant([2, 0, 2], tf.int64)).numpy()
  np.testing.assert_array_equal(out, values[[2, 0, 2]])
  assert table.name == "embedding_f"
  assert table.embeddings.name == "embedding_f/embeddings:0"


def test_sparse_lookup_is_the_mean_and_empty_rows_are_zero():
  values = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], np.float32)
  table = layers.EmbeddingLookup("f", size=4, dim=2, initial_value=values)
  ids = tf.SparseTensor(indices=[[0, 0], [0, 1], [2, 0]], values=[0, 3, 2],
                        dense_shape=[4, 2])
  out = table(tf.cast(ids, tf.int64)).numpy()
  np.testing.assert_array_equal(out, [[4, 5], [0, 0], [5, 6], [0, 0]])


def test_l2_is_on_looked_up_rows_and_the_gradient_stays_sparse():
  values = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
  table = layers.EmbeddingLookup("f", size=3, dim=2, l2=0.5,
                                initial_value=values)
  with tf.GradientTape() as tape:
    table(tf.constant([1, 1], tf.int64))
    loss = tf.add_n(table.losses)
  # 0.5 * (|row1|^2 + |row1|^2) / batch of 2 = 0.5 * 25
  assert loss.numpy() == pytest.approx(12.5)
  gradient = tape.gradient(loss, table.embeddings)
  assert isinstance(gradient, tf.IndexedSlices)
  np.testing.assert_array_equal(gradient.indices.numpy(), [1, 1])


def test_pretrained_table_validates_shapes():
  with pytest.raises(ValueError, match="frozen_rows"):
    layers.PretrainedTable(np.zeros((3, 2)), True, np.zeros(4, bool))
  with pytest.raises(ValueError, match=r"\[size, dim\]"):
    layers.PretrainedTable(np.zeros(3))
  spec = _spec()
  with pytest.raises(ValueError, match="'movie'.*shape"):
    models.build_model(_config(spec), spec, _infos(spec),
                       pretrained={"movie": layers.PretrainedTable(
                           np.zeros((NUM_ITEMS, 99)))})


def _one_step(optimizer, variable, ids):
  with tf.GradientTape() as tape:
    rows = tf.nn.embedding_lookup(variable, ids)
    loss = tf.reduce_sum(rows * tf.constant([1.0, -2.0, 3.0]))
  gradient = tape.gradient(loss, variable)
  assert isinstance(gradient, tf.IndexedSlices)
  optimizer.apply_gradients([(gradient, variable)])


def test_lazy_adam_leaves_rows_outside_the_batch_bit_identical():
  initial = np.random.RandomState(0).randn(10, 3).astype(np.float32)
  variable = tf.Variable(initial)
  optimizer = optimizers.LazyAdam(learning_rate=0.1)
  _one_step(optimizer, variable, tf.constant([1, 4], tf.int64))
  before_m, before_v = (t.numpy() for t in optimizer.moments(variable))
  before = variable.numpy().copy()
  _one_step(optimizer, variable, tf.constant([4, 7, 7], tf.int64))
  after = variable.numpy()
  m, v = (t.numpy() for t in optimizer.moments(variable))
  untouched = [0, 1, 2, 3, 5, 6, 8, 9]
  # Row 1 was in the first batch only: its values and moments do not decay.
  np.testing.assert_array_equal(after[untouched], before[untouched])
  np.testing.assert_array_equal(m[untouched], before_m[untouched])
  np.testing.assert_array_equal(v[untouched], before_v[untouched])
  assert (after[[4, 7]] != before[[4, 7]]).all()
  assert (m[[4, 7]] != before_m[[4, 7]]).all()
  # tf_keras Adam moves row 1 again (its momentum decays densely).
  adam_var = tf.Variable(initial)
  adam = keras.optimizers.Adam(learning_rate=0.1)
  _one_step(adam, adam_var, tf.constant([1, 4], tf.int64))
  row1 = adam_var.numpy()[1].copy()
  _one_step(adam, adam_var, tf.constant([4, 7, 7], tf.int64))
  assert (adam_var.numpy()[1] != row1).all()


def test_lazy_adam_sums_repeated_indices_like_dense_adam():
  initial = np.random.RandomState(1).randn(6, 3).astype(np.float32)
  lazy_var, adam_var = tf.Variable(initial), tf.Variable(initial)
  lazy = optimizers.LazyAdam(learning_rate=0.05)
  adam = keras.optimizers.Adam(learning_rate=0.05)
  ids = tf.constant([2, 2, 5, 2], tf.int64)
  _one_step(lazy, lazy_var, ids)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.gather(tf.convert_to_tensor(adam_var), ids)
                         * tf.constant([1.0, -2.0, 3.0]))
  adam.apply_gradients([(tape.gradient(loss, adam_var), adam_var)])
  # From zero moments, one step of Adam on the dense gradient moves exactly
  # the rows in the batch, by the summed gradient of the repeated ids.
  np.testing.assert_allclose(lazy_var.numpy(), adam_var.numpy(), atol=1e-6)
  np.testing.assert_array_equal(lazy_var.numpy()[[0, 1, 3, 4]],
                                initial[[0, 1, 3, 4]])


@pytest.mark.parametrize("shape", [(5, 4), (4,), ()])
def test_lazy_adam_equals_adam_on_dense_variables(shape):
  rng = np.random.RandomState(2)
  initial = np.asarray(rng.randn(*shape), np.float32)
  lazy_var, adam_var = tf.Variable(initial), tf.Variable(initial)
  lazy = optimizers.LazyAdam(learning_rate=0.01)
  adam = keras.optimizers.Adam(learning_rate=0.01)
  for _ in range(3):
    gradient = tf.constant(np.asarray(rng.randn(*shape), np.float32))
    lazy.apply_gradients([(gradient, lazy_var)])
    adam.apply_gradients([(gradient, adam_var)])
  np.testing.assert_array_equal(lazy_var.numpy(), adam_var.numpy())
  m, v = lazy.moments(lazy_var)
  np.testing.assert_array_equal(m.numpy(), adam._momentums[0].numpy())
  np.testing.assert_array_equal(v.numpy(), adam._velocities[0].numpy())


@pytest.mark.parametrize("shape", [(6, 3), (6,)])
def test_lazy_adam_equals_adam_when_every_row_is_in_every_batch(shape):
  # No row is ever absent, so nothing is lazy: the sparse path (packed
  # moments, gathered rows) must then be Adam on the dense gradient.
  rng = np.random.RandomState(3)
  initial = np.asarray(rng.randn(*shape), np.float32)
  weights = tf.constant(np.asarray(rng.randn(*shape[1:]), np.float32))
  lazy_var, adam_var = tf.Variable(initial), tf.Variable(initial)
  lazy = optimizers.LazyAdam(learning_rate=0.05)
  adam = keras.optimizers.Adam(learning_rate=0.05)
  for step in range(4):
    ids = tf.constant(rng.permutation(np.repeat(np.arange(6), 1 + step % 2)),
                      tf.int64)
    for optimizer, variable in ((lazy, lazy_var), (adam, adam_var)):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(variable, ids) * weights)
      gradient = tape.gradient(loss, variable)
      assert isinstance(gradient, tf.IndexedSlices)
      if optimizer is adam:
        gradient = tf.convert_to_tensor(gradient)
      optimizer.apply_gradients([(gradient, variable)])
  np.testing.assert_allclose(lazy_var.numpy(), adam_var.numpy(), rtol=1e-6)
  m, v = lazy.moments(lazy_var)
  np.testing.assert_allclose(m.numpy(), adam._momentums[0].numpy(), rtol=1e-6)
  np.testing.assert_allclose(v.numpy(), adam._velocities[0].numpy(),
                             rtol=1e-6)


def test_lazy_adam_keeps_both_moments_of_a_row_in_one_variable():
  variable = tf.Variable(tf.zeros([10, 3]))
  optimizer = optimizers.LazyAdam(learning_rate=0.1)
  _one_step(optimizer, variable, tf.constant([3, 3, 8], tf.int64))
  slots = optimizer.variables()[1:]  # after the iteration count
  assert [tuple(s.shape) for s in slots] == [(10, 2, 3)]
  packed = slots[0].numpy()
  # Row 3's gradient is twice row 8's; m = 0.1 g and v = 0.001 g^2.
  np.testing.assert_allclose(packed[3, 0], [0.2, -0.4, 0.6], rtol=1e-6)
  np.testing.assert_allclose(packed[3, 1], [0.004, 0.016, 0.036], rtol=1e-5)
  np.testing.assert_allclose(packed[8], packed[3] / [[2], [4]], rtol=1e-6)
  assert not packed[[0, 1, 2, 4, 5, 6, 7, 9]].any()


def _fit(model, data, names, config, spec, epochs=3):
  models.compile_model(model, config, spec,
                       optimizers.make_optimizer(config.optimizer,
                                                 config.learning_rate))
  model.fit(_dataset(data, names), epochs=epochs, verbose=0)
  return model


@pytest.mark.parametrize("model_type,extra", [("mf", {}),
                                              ("dnn", {"hybrid": True})])
def test_rows_never_seen_in_training_stay_bit_identical(model_type, extra):
  spec = _spec()
  config = _config(spec, model_type=model_type, l2_user=0.1, l2_item=0.1,
                   **extra)
  infos = _infos(spec)
  keras.utils.set_random_seed(0)
  model = models.build_model(config, spec, infos, label_mean=3.0)
  users = models.embedding_table(model, "user").embeddings
  items = models.embedding_table(model, "movie").embeddings
  before_users, before_items = users.numpy().copy(), items.numpy().copy()
  _fit(model, _data(used_users=8, used_items=6),
       models.model_features(config, spec), config, spec)
  # Users 8.. and items 6.. never occur: L2 on looked-up rows and lazy
  # updates leave them exactly as initialized.
  np.testing.assert_array_equal(users.numpy()[8:], before_users[8:])
  np.testing.assert_array_equal(items.numpy()[6:], before_items[6:])
  assert (users.numpy()[:8] != before_users[:8]).any(axis=1).all()
  m, v = (t.numpy() for t in model.optimizer.moments(users))
  assert not m[8:].any() and not v[8:].any()
  assert m[:8].any(axis=1).all() and v[:8].any(axis=1).all()


def test_frozen_table_and_frozen_rows_do_not_change():
  spec = _spec()
  config = _config(spec, model_type="dnn", hybrid=True)
  infos = _infos(spec)
  rng = np.random.RandomState(3)
  user_dim = models.embedding_dim(config, infos, "user")
  user_values = rng.randn(NUM_USERS, user_dim).astype(np.float32)
  genre_values = rng.randn(NUM_GENRES, infos["genres"].embedding_dim)
  frozen = np.zeros(NUM_USERS, bool)
  frozen[:4] = True
  pretrained = {
      "user": layers.PretrainedTable(user_values, trainable=True,
                                     frozen_rows=frozen),
      "genres": layers.PretrainedTable(genre_values, trainable=False),
  }
  model = models.build_model(config, spec, infos, label_mean=3.0,
                             pretrained=pretrained)
  genres = models.embedding_table(model, "genres")
  users = models.embedding_table(model, "user")
  np.testing.assert_array_equal(users.embeddings.numpy(), user_values)
  assert genres.embeddings.name not in {v.name
                                        for v in model.trainable_variables}
  _fit(model, _data(used_users=NUM_USERS), models.model_features(config, spec),
       config, spec)
  np.testing.assert_array_equal(genres.embeddings.numpy(),
                                genre_values.astype(np.float32))
  np.testing.assert_array_equal(users.embeddings.numpy()[:4],
                                user_values[:4])
  assert (users.embeddings.numpy()[4:] != user_values[4:]).any(axis=1).all()


def test_mf_output_is_dot_plus_biases_plus_global_mean():
  spec = _spec()
  config = _config(spec, model_type="mf", mf_dim=2)
  infos = _infos(spec)
  users = np.arange(NUM_USERS * 2, dtype=np.float32).reshape(-1, 2) / 10
  items = np.arange(NUM_ITEMS * 2, dtype=np.float32).reshape(-1, 2) / 10
  model = models.build_model(
      config, spec, infos, label_mean=0.5,
      pretrained={"user": layers.PretrainedTable(users, True),
                  "movie": layers.PretrainedTable(items, True)})
  model.get_layer("bias_user").embeddings.assign(
      np.arange(NUM_USERS, dtype=np.float32)[:, None] / 100)
  got = model({"user": tf.constant([1, 3], tf.int64),
               "movie": tf.constant([2, 0], tf.int64)}).numpy()
  expected = [users[1] @ items[2] + 0.01 + 0.5,
              users[3] @ items[0] + 0.03 + 0.5]
  # Inference clips to the label's range [0, 5].
  np.testing.assert_allclose(got, np.minimum(expected, 5.0), rtol=1e-6)


def test_saved_model_revives_the_registered_layers_without_custom_objects(
    tmp_path):
  spec = _spec()
  config = _config(spec, model_type="dnn", hybrid=True, hidden_units=[4])
  infos = _infos(spec)
  model = models.build_model(config, spec, infos, label_mean=3.0)
  data = _data(n=32)
  names = models.model_features(config, spec)
  features, _ = next(iter(_dataset(data, names, batch_size=32)))
  expected = model(features, training=False).numpy()
  model.save(str(tmp_path / "model"), save_format="tf")
  revived = keras.models.load_model(str(tmp_path / "model"))
  # Revived as the trainer's own classes, not as generic Keras layers.
  assert type(revived.get_layer("embedding_user")) is layers.EmbeddingLookup
  assert type(revived.get_layer("global_bias")) is layers.GlobalBias
  assert type(revived.get_layer(models.PREDICTION)) is layers.ClipAtInference
  np.testing.assert_allclose(revived(features, training=False).numpy(),
                             expected, rtol=1e-6)
  for cls in (layers.EmbeddingLookup, layers.GlobalBias,
              layers.ClipAtInference, optimizers.LazyAdam):
    assert keras.saving.get_registered_name(cls) == (
        f"embeddings>{cls.__name__}")


def test_binary_task_trains_with_log_loss_and_auc():
  spec = _spec(task="binary")
  config = _config(spec, model_type="dnn", hidden_units=[8])
  infos = _infos(spec)
  model = models.build_model(config, spec, infos, label_mean=0.25)
  # The global bias starts at the logit of the label mean.
  assert model.get_layer("global_bias").bias.numpy() == pytest.approx(
      np.log(0.25 / 0.75), rel=1e-5)
  names = models.model_features(config, spec)
  models.compile_model(model, config, spec, optimizers.LazyAdam(0.01))
  history = model.fit(_dataset(_data(binary=True), names), epochs=2,
                      verbose=0)
  assert {"loss", "auc", "log_loss"} <= set(history.history)
  predictions = model.predict(_dataset(_data(binary=True), names), verbose=0)
  assert ((predictions > 0) & (predictions < 1)).all()


def test_config_merges_spec_model_section_and_flags():
  spec = _spec(model={"user_feature": "user", "item_feature": "movie",
                      "hidden_units": [16, 8], "learning_rate": 0.01,
                      "embedding_dims": {"genres": 3}})
  config = _config(spec, learning_rate=0.002, batch_size=None)
  assert config.hidden_units == (16, 8)
  assert config.learning_rate == 0.002
  assert config.batch_size == 256
  assert config.embedding_dim_overrides == {"genres": 3}
  infos = _infos(spec)
  assert models.embedding_dim(config, infos, "genres") == 3


@pytest.mark.parametrize("model,flags,message", [
    ({"user_feature": "user", "item_feature": "movie", "hiden_units": [4]},
     {}, r"unknown field\(s\) \['hiden_units'\]"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"learning_rate": -1.0}, "learning_rate: must be a number > 0"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"optimizer": "adamw"}, "optimizer: must be one of"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"hidden_units": "32,x"}, "hidden_units"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"model_type": "mf", "hybrid": True}, "hybrid: only applies"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"learning_rate_decay": 1.5}, r"learning_rate_decay: must be in \(0, 1\]"),
    ({"user_feature": "user", "item_feature": "movie"},
     {"model_type": "dnn", "item_side_features": "genres"},
     "need the dot product"),
])
def test_bad_config_gives_a_clear_error(model, flags, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    _config(_spec(model=model), **flags)


@pytest.mark.parametrize("model,message", [
    ({"item_feature": "movie"}, "mf needs both user_feature and item_feature"),
    ({"user_feature": "usr", "item_feature": "movie"},
     "'usr' is not a feature"),
    ({"user_feature": "genres", "item_feature": "movie"},
     "must be a single-valued categorical"),
])
def test_config_that_does_not_fit_the_spec_is_refused(model, message):
  spec = _spec(model=model)
  with pytest.raises(config_lib.ConfigError, match=message):
    models.build_model(_config(spec), spec, _infos(spec))


def test_item_side_features_are_added_to_the_item_vector():
  spec = _spec()
  config = _config(spec, model_type="mf", mf_dim=2,
                   item_side_features=["genres"])
  infos = _infos(spec)
  rng = np.random.RandomState(4)
  users = rng.randn(NUM_USERS, 2).astype(np.float32)
  items = rng.randn(NUM_ITEMS, 2).astype(np.float32)
  genres = rng.randn(NUM_GENRES, 2).astype(np.float32)
  model = models.build_model(
      config, spec, infos, label_mean=2.5,
      pretrained={"user": layers.PretrainedTable(users, True),
                  "movie": layers.PretrainedTable(items, True),
                  "genres": layers.PretrainedTable(genres, True)})
  assert models.model_features(config, spec) == ["user", "movie", "genres"]
  ids = tf.SparseTensor([[0, 0], [0, 1]], tf.constant([1, 3], tf.int64),
                        [2, 2])
  got = model({"user": tf.constant([0, 5], tf.int64),
               "movie": tf.constant([4, 2], tf.int64), "genres": ids}).numpy()
  # Row 0 has genres 1 and 3 (averaged); row 1 has none (zeros).
  expected = [users[0] @ (items[4] + (genres[1] + genres[3]) / 2) + 2.5,
              users[5] @ items[2] + 2.5]
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def _rows_of(data, batches):
  """Maps each batch row back to its row number (user ids are unique)."""
  position = {int(user): row for row, user in enumerate(data.dense["user"])}
  return [position[int(user)] for features, _ in batches
          for user in features["user"]]


def test_numpy_shuffle_is_a_full_permutation_per_epoch_gathered_whole():
  data = _data(n=50, seed=4)
  data.dense["user"][:] = np.arange(100, 150)  # unique: identifies each row
  options = data_lib.InputOptions(batch_size=16, shuffle=True, seed=9)
  dataset = data_lib.numpy_dataset(data, options, ["user", "genres"])
  first, second = list(dataset), list(dataset)
  assert [len(features["user"]) for features, _ in first] == [16, 16, 16, 2]
  order = _rows_of(data, first)
  assert sorted(order) == list(range(50)) and order != list(range(50))
  assert sorted(_rows_of(data, second)) == list(range(50))
  assert _rows_of(data, second) != order  # a new permutation per epoch
  again = data_lib.numpy_dataset(data, options, ["user", "genres"])
  assert _rows_of(data, list(again)) == order  # the seed reproduces it
  values, splits = data.sparse["genres"]
  for batch_number, (features, labels) in enumerate(first):
    rows = order[16 * batch_number:16 * (batch_number + 1)]
    np.testing.assert_array_equal(labels, data.dense["label"][rows])
    genres = tf.RaggedTensor.from_sparse(features["genres"]).to_list()
    assert genres == [list(values[splits[r]:splits[r + 1]]) for r in rows]


def test_numpy_repeat_runs_epochs_back_to_back_across_batches():
  data = _data(n=10, seed=1)
  data.dense["user"][:] = np.arange(10)
  options = data_lib.InputOptions(batch_size=4, shuffle=True, seed=2,
                                  repeat=True)
  batches = list(data_lib.numpy_dataset(data, options, ["user"]).take(5))
  assert [len(features["user"]) for features, _ in batches] == [4] * 5
  rows = _rows_of(data, batches)
  # Two whole epochs, each a permutation, the second starting mid-batch.
  assert sorted(rows[:10]) == list(range(10))
  assert sorted(rows[10:]) == sorted(rows[10:20]) and len(set(rows[10:])) == 10


@pytest.mark.parametrize("lengths, values", [
    ([2, 0, 1, 2, 0, 1, 2, 0], [3, 0, 2, 1, 0, 2, 0, 1]),  # padded
    ([1, 0, 0, 9, 0], [5, 1, 2, 3, 4, 5, 6, 7, 8, 9]),  # too sparse: ragged
    ([1, 2, 1], [0, -1, 4, 2]),  # a negative id: ragged
])
def test_numpy_multivalued_batches_match_the_parsed_layout(lengths, values):
  splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  values = np.array(values, np.int64)
  rows = data_lib._multivalued_rows(values, splits)
  reference = tf.RaggedTensor.from_row_splits(values, splits)
  n = len(lengths)
  for batch in ([0, 1, 2], [1, n - 1], list(range(n))[::-1], [n - 1]):
    batch = tf.constant(batch, tf.int64)
    got = data_lib._sparse_batch(rows, batch)
    # tf.io.parse_example's layout: row-major, [batch, longest row].
    want = tf.gather(reference, batch).to_sparse()
    assert got.indices.numpy().tolist() == want.indices.numpy().tolist()
    assert got.values.numpy().tolist() == want.values.numpy().tolist()
    assert got.dense_shape.numpy().tolist() == want.dense_shape.numpy().tolist()
  assert isinstance(rows, tf.RaggedTensor) == (lengths[0] != 2)
