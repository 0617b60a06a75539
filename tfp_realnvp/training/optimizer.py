"""The default optimizer of :func:`fit`: Adam with a gradient clip, warm-up and cosine
decay, each knob defaulting to the tuned ``tfp_realnvp.options.TRAINING_DEFAULTS``."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from tfp_realnvp.options import TRAINING_DEFAULTS as _D
from tfp_realnvp.options import TrainingOptions

__all__ = ["default_optimizer", "ScaledLearningRate", "build_slots", "learning_rate_schedule"]


class ScaledLearningRate(tf_keras.optimizers.schedules.LearningRateSchedule):
  """``base(step) * factor``; :func:`fit` lowers the ``factor`` variable after a
  non-finite step (``nonfinite_learning_rate_factor``)."""

  def __init__(self, base, factor: tf.Variable | None = None):
    self.base = base
    self.factor = factor if factor is not None else tf.Variable(
        1.0, trainable=False, dtype=tf.float32, name="learning_rate_factor")

  def __call__(self, step):
    base = self.base(step) if callable(self.base) else self.base
    return tf.cast(base, self.factor.dtype) * self.factor

  def get_config(self):
    return {}


def _schedule(steps: int, learning_rate: float, schedule: str, warmup_steps: int,
              final_fraction: float):
  if schedule == "constant":
    return learning_rate
  cosine = tf_keras.optimizers.schedules.CosineDecay
  warmup_steps = min(warmup_steps, max(steps - 1, 0))
  if warmup_steps:  # from 1% of the peak, linearly up to it
    return cosine(initial_learning_rate=learning_rate * 1e-2,
                  decay_steps=max(steps - warmup_steps, 1), alpha=final_fraction,
                  warmup_target=learning_rate, warmup_steps=warmup_steps)
  return cosine(initial_learning_rate=learning_rate, decay_steps=max(steps, 1),
                alpha=final_fraction)


def default_optimizer(steps: int, *, learning_rate: float = _D.learning_rate,
                      schedule: str = _D.schedule, warmup_steps: int = _D.warmup_steps,
                      final_learning_rate_fraction: float = _D.final_learning_rate_fraction,
                      clip_norm: float | None = _D.clip_norm,
                      weight_decay: float = _D.weight_decay) -> tf_keras.optimizers.Optimizer:
  """The optimizer :func:`fit` uses when given none, for a run of ``steps`` steps.

  With ``schedule="cosine"`` the learning rate after step ``t`` is, for
  ``W = min(warmup_steps, steps - 1)`` and ``r = learning_rate``,

  ```none
  t < W:   r / 100 + (t / W) (r - r / 100)                      (linear warm-up)
  t >= W:  r (f + (1 - f) (1 + cos(pi min(t - W, T) / T)) / 2),  T = steps - W
  ```

  with ``f = final_learning_rate_fraction``; ``"constant"`` keeps ``r``.  The
  learning rate is a :class:`ScaledLearningRate`, so that ``fit`` can lower it
  after a non-finite step.  Under a ``tf.distribute`` strategy, call it inside
  ``strategy.scope()``.

  ```python
  import tfp_realnvp
  from tfp_realnvp.training import default_optimizer
  x = tfp_realnvp.datasets.moons(10000)
  flow = tfp_realnvp.RealNVP(2)
  tfp_realnvp.fit(flow, x, steps=2000,
                  optimizer=default_optimizer(2000, learning_rate=1e-3, warmup_steps=50))
  ```

  Args:
    steps: optimizer steps of the run (the length of the cosine decay).
    learning_rate: peak learning rate.
    schedule: ``"cosine"`` (warm-up, then cosine decay) or ``"constant"``.
    warmup_steps: steps of the linear warm-up (``"cosine"`` only), >= 0.
    final_learning_rate_fraction: end of the cosine decay as a fraction of ``learning_rate``.
    clip_norm: clip the gradients to this global norm (before Adam); ``None``: no clip.
    weight_decay: decoupled weight decay per unit learning rate, in [0, 1) (>0: ``AdamW``).

  Returns:
    ``tf_keras.optimizers.legacy.Adam`` (its fused kernel is faster); under a
    ``tf.distribute`` strategy ``tf_keras.optimizers.Adam``; with
    ``weight_decay`` ``tf_keras.optimizers.AdamW``.
  """
  TrainingOptions(steps=steps, learning_rate=learning_rate, schedule=schedule,
                  warmup_steps=warmup_steps, clip_norm=clip_norm, weight_decay=weight_decay,
                  final_learning_rate_fraction=final_learning_rate_fraction)  # checks them
  rate = ScaledLearningRate(_schedule(int(steps), float(learning_rate), schedule,
                                      int(warmup_steps), float(final_learning_rate_fraction)))
  clip = None if clip_norm is None else float(clip_norm)
  if weight_decay:
    return tf_keras.optimizers.AdamW(learning_rate=rate, weight_decay=float(weight_decay),
                                     global_clipnorm=clip)
  if tf.distribute.has_strategy():
    # The legacy optimizer refuses the cross-replica context where fit applies the summed
    # gradients of all replicas.
    return tf_keras.optimizers.Adam(learning_rate=rate, global_clipnorm=clip)
  # The same Adam with one fused kernel (ResourceApplyAdam) per variable instead of about ten
  # ops: fit's step of 16 couplings took 1/1.15 of the time on one thread and its first call
  # 7.4 s instead of 10.7 (python -m benchmarks.step_profile; README, "Against FlowJAX and zuko").
  return tf_keras.optimizers.legacy.Adam(learning_rate=rate, global_clipnorm=clip)


def build_slots(optimizer, variables) -> None:
  """Creates ``optimizer``'s state for ``variables`` before the first step, so that a
  checkpoint restores into it (``tf_keras`` optimizers, current and legacy)."""
  if isinstance(optimizer, tf_keras.optimizers.legacy.Optimizer):
    optimizer._create_all_weights(variables)  # pylint: disable=protected-access  (no public build)
  else:
    optimizer.build(variables)


def learning_rate_schedule(optimizer):
  """``optimizer``'s learning rate as given: a number or a schedule."""
  if isinstance(optimizer, tf_keras.optimizers.legacy.Optimizer):
    return optimizer.learning_rate  # the hyperparameter as given
  # The current optimizers' public `learning_rate` gives the current value, not the schedule.
  return getattr(optimizer, "_learning_rate", optimizer.learning_rate)


def learning_rate_factor(optimizer) -> tf.Variable | None:
  """The factor variable of ``optimizer``'s :class:`ScaledLearningRate`, if it has one."""
  return getattr(learning_rate_schedule(optimizer), "factor", None)
