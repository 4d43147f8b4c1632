"""LazyAdam for tf_keras: Adam whose sparse updates touch only batch rows.

tf_keras Adam applies a sparse gradient by decaying the first and second
moments of *every* row (`m.assign_add(-m * (1 - beta_1))`), so a step costs
O(table size): with million-row tables its steps take many times Adagrad's
(benchmarks/trainer_bench.py measures the ratio). LazyAdam (as in
TensorFlow Addons and the original `tf.contrib.opt.LazyAdamOptimizer`)
updates the moments and weights of the rows present in the gradient only;
rows outside the batch keep their values and moments bit for bit. On dense
gradients it is tf_keras Adam exactly.

The lazy update differs from Adam for rows that were not in the batch:
their moments do not decay in that step. For embeddings that is the point:
a row absent for a while resumes with the momentum it had.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from trainer import config as config_lib
from trainer import layers


def _packed_shape(variable) -> tf.TensorShape:
  """The packed moments' shape: [rows, 2, *row_shape]; [2] for a scalar."""
  shape = variable.shape
  if shape.rank == 0:
    return tf.TensorShape([2])
  return tf.TensorShape([shape[0], 2]).concatenate(shape[1:])


@keras.utils.register_keras_serializable(package=layers.SERIALIZATION_PACKAGE)
class LazyAdam(keras.optimizers.Adam):
  """Adam that updates only the rows of a sparse gradient.

  A variable's two moments live in one optimizer variable, `mv`, of shape
  [rows, 2, *row_shape] (`mv[:, 0]` is m, `mv[:, 1]` is v), so the moments
  of one row sit side by side in memory: a sparse step reads them with one
  gather and writes them with one scatter, where separate m and v tables
  cost two random reads per row (for a table far larger than the caches,
  two cache and TLB misses instead of one). `moments(variable)` returns
  them as separate tensors.

  Args: as tf_keras.optimizers.Adam (amsgrad is not supported).
  """

  def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
               epsilon=1e-7, amsgrad=False, name="LazyAdam", **kwargs):
    if amsgrad:
      raise ValueError("LazyAdam does not support amsgrad")
    # tf.unique has a data-dependent output shape, which XLA cannot compile;
    # tf_keras would otherwise XLA-compile every update step on a GPU.
    kwargs.setdefault("jit_compile", False)
    super().__init__(learning_rate=learning_rate, beta_1=beta_1,
                     beta_2=beta_2, epsilon=epsilon, amsgrad=False, name=name,
                     **kwargs)

  def build(self, var_list):
    """Creates one packed moment variable per model variable.

    Args:
      var_list: the model variables to optimize.
    """
    # Adam.build would create separate m and v variables; skip to the base.
    keras.optimizers.Optimizer.build(self, var_list)
    if getattr(self, "_built", False):
      return
    self._built = True
    self._moments = [
        self.add_variable_from_reference(
            model_variable=var, variable_name="mv", shape=_packed_shape(var))
        for var in var_list]

  def moments(self, variable):
    """The first and second moments of one model variable.

    Args:
      variable: a variable this optimizer updates (of a partitioned
        variable, one of its shards).

    Returns:
      (m, v), tensors of the variable's shape.
    """
    mv = self._moments[self._index_dict[self._var_key(variable)]]
    if variable.shape.rank == 0:
      return mv[0], mv[1]
    return mv[:, 0], mv[:, 1]

  def update_step(self, gradient, variable):
    """Applies one step; sparse gradients update only their rows.

    The arithmetic is tf_keras Adam's dense branch, term for term, so a
    dense gradient gives bit-identical results and a sparse one gives, on
    its rows, what Adam's dense branch gives on them.

    Args:
      gradient: a dense gradient, or a tf.IndexedSlices whose indices are
        unique: tf_keras' apply_gradients sums repeated indices (after the
        replicas' gradients are aggregated) before it calls update_step.
      variable: the variable to update.
    """
    dtype = variable.dtype
    lr = tf.cast(self.learning_rate, dtype)
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
    beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    epsilon = (self.epsilon * tf.sqrt(1 - beta_2_power)
               if self.adaptive_epsilon else self.epsilon)
    mv = self._moments[self._index_dict[self._var_key(variable)]]

    if not isinstance(gradient, tf.IndexedSlices):
      m, v = self.moments(variable)
      m = m + (gradient - m) * (1 - self.beta_1)
      v = v + (tf.square(gradient) - v) * (1 - self.beta_2)
      mv.assign(tf.stack([m, v], axis=0 if variable.shape.rank == 0 else 1))
      variable.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))
      return

    indices, values = gradient.indices, gradient.values
    # [rows, 2, *row_shape]: both moments of the batch rows, then both
    # updated at once with beta_1 on m and beta_2 on v.
    rows = tf.gather(mv, indices)
    decay = tf.reshape(
        tf.convert_to_tensor([1 - self.beta_1, 1 - self.beta_2], dtype),
        [2] + [1] * (variable.shape.rank - 1))
    rows = rows + (tf.stack([values, tf.square(values)], axis=1) - rows) * decay
    mv.scatter_update(tf.IndexedSlices(rows, indices))
    m_rows, v_rows = rows[:, 0], rows[:, 1]
    # The same subtraction as scatter_sub, but gathering the rows and writing
    # them back whole is faster where the rows are not in the cache (large
    # tables), and no slower where they are.
    variable.scatter_update(tf.IndexedSlices(
        tf.gather(variable, indices)
        - (m_rows * alpha) / (tf.sqrt(v_rows) + epsilon), indices))


def make_optimizer(name: str, learning_rate: float, decay: float = 1.0,
                   steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
  """Builds the named optimizer (call inside strategy.scope()).

  Args:
    name: one of config.OPTIMIZERS.
    learning_rate: the initial learning rate.
    decay: the factor the rate is multiplied by per epoch (1.0: constant).
    steps_per_epoch: steps in an epoch (the decay's period).

  Returns:
    A tf_keras optimizer.

  Raises:
    config.ConfigError: an unknown name.
  """
  if decay != 1.0:
    learning_rate = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=decay)
  if name == "lazy_adam":
    return LazyAdam(learning_rate=learning_rate)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate=learning_rate)
  if name == "adagrad":
    return keras.optimizers.Adagrad(learning_rate=learning_rate)
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate=learning_rate)
  raise config_lib.ConfigError(f"optimizer: must be one of "
                               f"{config_lib.OPTIMIZERS}, got {name!r}")
