"""The compiled training steps of :func:`fit`, which skip non-finite updates."""

from __future__ import annotations

import inspect

import tensorflow as tf

__all__ = ["TrainingSteps"]


class TrainingSteps:
  """``steps(n)`` runs up to ``n`` steps in one graph call and
  returns ``(sum of the finite losses, number of skipped steps)``.

  A step whose loss or gradient is not finite leaves the weights and the
  optimizer as they were; with ``lr_cut`` (a factor in (0, 1)) it also puts
  back the weights from before the previous step and multiplies
  ``lr_factor`` by ``lr_cut``.  The loop stops early once
  ``max_nonfinite_steps`` steps in a row were skipped (``nonfinite_run``).
  Create it under the strategy's scope.
  """

  def __init__(self, iterator, batch_log_prob, variables, optimizer, *, batch_size: int, strategy,
               after_apply, max_nonfinite_steps: int, lr_cut: float | None, lr_factor,
               jit_compile: bool, dtype):
    self.variables, self.optimizer, self.strategy = variables, optimizer, strategy
    self.batch_log_prob, self.batch_size, self.after_apply = batch_log_prob, batch_size, after_apply
    self.max_nonfinite_steps, self.lr_cut, self.lr_factor = max_nonfinite_steps, lr_cut, lr_factor
    self.dtype, self.jit_compile, self._ran, self.iterator = dtype, jit_compile, False, iterator
    takes = inspect.signature(optimizer.apply_gradients).parameters
    self._no_aggregation = ({"skip_gradients_aggregation": True}
                            if "skip_gradients_aggregation" in takes else
                            {"experimental_aggregate_gradients": False}
                            if "experimental_aggregate_gradients" in takes else {})
    self.nonfinite_run = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_run")
    self.previous = [tf.Variable(v, trainable=False, name="previous") for v in variables] \
        if lr_cut is not None else []
    self._loop = self._compile()

  def _loss_and_grads(self, batch):
    with tf.GradientTape() as tape:
      # Divided by the global batch size: the sum over replicas is the global mean.
      loss = -tf.reduce_sum(self.batch_log_prob(batch)) / self.batch_size
    grads = tape.gradient(loss, self.variables)
    return loss, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]

  def _apply_or_skip(self, loss, grads):
    finite = tf.math.is_finite(loss)
    for g in grads:
      finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))

    def apply():
      for saved, v in zip(self.previous, self.variables):
        saved.assign(v)
      # The gradients are already summed over replicas; the optimizer's aggregation
      # would register a custom gradient per trace globally (the graph would leak).
      self.optimizer.apply_gradients(zip(grads, self.variables), **self._no_aggregation)
      self.after_apply()
      return tf.constant(0, tf.int64)

    def skip():
      for saved, v in zip(self.previous, self.variables):
        v.assign(saved)
      return tf.constant(1, tf.int64)

    skipped = tf.cond(finite, apply, skip)
    return tf.where(finite, loss, tf.zeros_like(loss)), skipped

  def _step(self, batch):
    if self.strategy is None:
      return self._apply_or_skip(*self._loss_and_grads(batch))
    # Gradients per replica, summed, then one update in cross-replica context, so
    # that all replicas skip a non-finite step alike.
    s = self.strategy
    losses, grads = s.run(self._loss_and_grads, args=(batch,))
    loss = s.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
    return self._apply_or_skip(loss, [s.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
                                      for g in grads])

  def _count(self, skipped: bool):
    """Counts non-finite steps in a row (and cuts the learning rate on one)."""
    updates = [self.nonfinite_run.assign_add(1) if skipped else self.nonfinite_run.assign(0)]
    if skipped and self.lr_cut is not None and self.lr_factor is not None:
      updates.append(self.lr_factor.assign(self.lr_factor * self.lr_cut))
    with tf.control_dependencies(updates):
      return tf.constant(0)

  def _compile(self):
    # No autograph: the step and loop use explicit tf.cond and tf.while_loop.
    step = tf.function(self._step, jit_compile=self.jit_compile, autograph=False)

    def loop(num_steps):
      def keep_going(i, loss_sum, skipped_sum):
        return tf.logical_and(i < num_steps, self.nonfinite_run < self.max_nonfinite_steps)

      def one_step(i, loss_sum, skipped_sum):
        loss, skipped = step(next(self.iterator))
        counted = tf.cond(skipped > 0, lambda: self._count(True), lambda: self._count(False))
        with tf.control_dependencies([counted]):
          return i + 1, loss_sum + loss, skipped_sum + skipped

      start = (tf.constant(0, tf.int64), tf.constant(0.0, self.dtype), tf.constant(0, tf.int64))
      _, loss_sum, skipped_sum = tf.while_loop(keep_going, one_step, start)
      return loss_sum, skipped_sum
    return tf.function(loop, autograph=False)

  def __call__(self, num_steps: int):
    try:
      result = self._loop(tf.constant(num_steps, tf.int64))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
      if not self.jit_compile or self._ran or "xla" not in str(e).lower():
        raise
      self.jit_compile = False  # XLA cannot compile this distribution: use a plain graph
      self._loop = self._compile()
      return self(num_steps)
    self._ran = True
    return float(result[0]), int(result[1])

  @property
  def diverged(self) -> bool:
    return int(self.nonfinite_run.numpy()) >= self.max_nonfinite_steps
