"""Maximum-likelihood training of any TFP distribution.

:func:`fit` minimizes the mean negative log-likelihood ``-mean(log p(x))``
with a ``tf.function``-compiled step, a ``tf.data`` pipeline, Adam with
warm-up and cosine decay, an optional validation split with early stopping
and best-weights restore, and a ``tqdm`` progress bar.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from tqdm.auto import tqdm

__all__ = ["fit", "History", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
  """Raised when too many consecutive steps give a non-finite loss or gradient."""


@dataclasses.dataclass
class History:
  """What :func:`fit` measured, one entry per epoch (evaluation period).

  Attributes:
    epoch: epoch numbers, from 1.
    step: optimizer steps done at the end of each epoch.
    train_nll: mean training NLL (nats) over the epoch's steps.
    val_nll: validation NLL (nats) at the end of each epoch (``nan`` without
      validation data).
    learning_rate: learning rate at the end of each epoch.
    wall_time: seconds since the start of training at the end of each epoch.
    nonfinite_steps: steps skipped during each epoch because the loss or a
      gradient was not finite.
    best_epoch: epoch whose weights the model holds at the end (the best
      validation epoch with ``restore_best_weights``, else the last).
    best_val_nll: validation NLL of ``best_epoch``.
    stopped_early: whether early stopping ended training.
    total_time: seconds spent in ``fit``.
  """

  epoch: list[int] = dataclasses.field(default_factory=list)
  step: list[int] = dataclasses.field(default_factory=list)
  train_nll: list[float] = dataclasses.field(default_factory=list)
  val_nll: list[float] = dataclasses.field(default_factory=list)
  learning_rate: list[float] = dataclasses.field(default_factory=list)
  wall_time: list[float] = dataclasses.field(default_factory=list)
  nonfinite_steps: list[int] = dataclasses.field(default_factory=list)
  best_epoch: int | None = None
  best_val_nll: float = math.nan
  stopped_early: bool = False
  total_time: float = 0.0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_data(data, name: str, event_size: int | None, dtype) -> np.ndarray:
  try:
    array = np.asarray(data)
  except Exception as e:  # ragged lists and the like
    raise TypeError(f"{name} must be an array of shape [n, event_size]: {e}") from None
  if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                   or array.dtype == np.bool_):
    raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
  if array.ndim != 2:
    raise ValueError(
        f"{name} must have shape [n, event_size] (rank 2), got shape {array.shape}")
  if array.shape[0] == 0:
    raise ValueError(f"{name} is empty (shape {array.shape})")
  if event_size is not None and array.shape[1] != event_size:
    raise ValueError(
        f"{name} has {array.shape[1]} columns but the distribution's event size "
        f"is {event_size}")
  array = array.astype(dtype)
  bad_rows = int(np.sum(~np.all(np.isfinite(array), axis=1)))
  if bad_rows:
    raise ValueError(
        f"{name} has {bad_rows} of {array.shape[0]} rows containing NaN or inf; "
        "remove or impute them before training")
  return array


def _event_size(distribution) -> int | None:
  shape = distribution.event_shape
  if shape.rank != 1 or shape[0] is None:
    return None
  return int(shape[0])


def _learning_rate_schedule(learning_rate: float, schedule: str, steps: int,
                            warmup_steps: int, final_fraction: float):
  if schedule == "constant":
    return learning_rate
  if schedule != "cosine":
    raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
  warmup_steps = min(warmup_steps, max(steps - 1, 0))
  if warmup_steps:
    return tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * 1e-2, decay_steps=max(steps - warmup_steps, 1),
        alpha=final_fraction, warmup_target=learning_rate, warmup_steps=warmup_steps)
  return tf_keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=learning_rate, decay_steps=max(steps, 1), alpha=final_fraction)


def fit(distribution,
        data,
        *,
        steps: int | None = None,
        epochs: int | None = None,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        schedule: str = "cosine",
        warmup_steps: int = 100,
        final_learning_rate_fraction: float = 0.0,
        clip_norm: float | None = 10.0,
        validation_data=None,
        eval_every: int | None = None,
        early_stopping_patience: int | None = None,
        restore_best_weights: bool = True,
        trainable_variables: Sequence[tf.Variable] | None = None,
        adapt: bool = True,
        optimizer: tf_keras.optimizers.Optimizer | None = None,
        max_nonfinite_steps: int = 20,
        seed: int | None = 0,
        progress: bool = True,
        log_prob_kwargs: dict | None = None) -> History:
  """Fits ``distribution`` to ``data`` by maximum likelihood.

  Minimizes ``-mean(distribution.log_prob(batch))`` over minibatches.

  Example:

  ```python
  import tfp_realnvp
  x = tfp_realnvp.datasets.moons(10000)
  flow = tfp_realnvp.RealNVP(event_size=2)
  history = tfp_realnvp.fit(flow, x, steps=2000, validation_data=0.1,
                            early_stopping_patience=5)
  print(history.val_nll[-1])
  ```

  Args:
    distribution: any TFP distribution with a rank-1 event shape.
    data: training points, shape ``[n, event_size]``.
    steps: number of optimizer steps.  Give ``steps`` or ``epochs``.
    epochs: number of passes over the training data.
    batch_size: points per step, at most the number of training points.
    learning_rate: peak learning rate of Adam.
    schedule: ``"cosine"`` (linear warm-up, then cosine decay to
      ``final_learning_rate_fraction * learning_rate``) or ``"constant"``.
    warmup_steps: length of the warm-up of the cosine schedule.
    final_learning_rate_fraction: end of the cosine decay, as a fraction of
      ``learning_rate``.
    clip_norm: clip the global gradient norm to this value (``None``: no clip).
    validation_data: ``None``, a fraction in (0, 1) of ``data`` to hold out,
      or an array of validation points.
    eval_every: steps per epoch (evaluation period); default one pass over the
      training data.
    early_stopping_patience: stop after this many epochs without a better
      validation NLL (needs validation data); ``None`` never stops early.
    restore_best_weights: with validation data, end with the weights of the
      best validation epoch.
    trainable_variables: the variables to train; default
      ``distribution.trainable_variables``.  Pass them explicitly for models
      that do not track theirs (e.g. ``tfb.real_nvp_default_template``).
    adapt: if the distribution has an ``adapt`` method and is not yet adapted,
      set its normalization from the training data first.
    optimizer: a ``tf_keras`` optimizer to use instead of Adam (its own
      learning rate then applies).
    max_nonfinite_steps: stop with :class:`TrainingDiverged` after this many
      consecutive steps with a non-finite loss or gradient (each is skipped:
      no NaN ever reaches the weights).
    seed: seed of the validation split and of the shuffling.
    progress: show a ``tqdm`` progress bar.
    log_prob_kwargs: extra keyword arguments for ``log_prob``.

  Returns:
    A :class:`History`.
  """
  event_size = _event_size(distribution)
  dtype = distribution.dtype.as_numpy_dtype if hasattr(distribution.dtype, "as_numpy_dtype") else np.float32
  x = _as_data(data, "data", event_size, dtype)

  for label, value in (("steps", steps), ("epochs", epochs)):
    if value is not None and (not _is_int(value) or value < 1):
      raise ValueError(f"{label} must be a positive integer, got {value!r}")
  if (steps is None) == (epochs is None):
    raise ValueError("give exactly one of steps= or epochs=")
  if not isinstance(learning_rate, (int, float, np.floating)) or not learning_rate > 0 \
      or not math.isfinite(learning_rate):
    raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
  if not _is_int(batch_size) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if early_stopping_patience is not None and (not _is_int(early_stopping_patience)
                                              or early_stopping_patience < 1):
    raise ValueError(
        f"early_stopping_patience must be a positive integer or None, got {early_stopping_patience!r}")

  rng = np.random.default_rng(seed)
  if validation_data is None:
    x_val = None
  elif isinstance(validation_data, float) and not isinstance(validation_data, bool):
    if not 0.0 < validation_data < 1.0:
      raise ValueError(f"a validation fraction must be in (0, 1), got {validation_data}")
    order = rng.permutation(x.shape[0])
    n_val = max(1, int(round(validation_data * x.shape[0])))
    if n_val >= x.shape[0]:
      raise ValueError(
          f"validation fraction {validation_data} leaves no training data out of {x.shape[0]} rows")
    x_val, x = x[order[:n_val]], x[order[n_val:]]
  else:
    x_val = _as_data(validation_data, "validation_data", event_size, dtype)
  if early_stopping_patience is not None and x_val is None:
    raise ValueError("early_stopping_patience needs validation_data")

  n = x.shape[0]
  if batch_size > n:
    raise ValueError(
        f"batch_size ({batch_size}) is larger than the number of training points ({n})")
  steps_per_epoch = n // batch_size
  total_steps = steps if steps is not None else epochs * steps_per_epoch
  if eval_every is None:
    eval_every = min(steps_per_epoch, total_steps)
  elif not _is_int(eval_every) or eval_every < 1:
    raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")

  if adapt and hasattr(distribution, "adapt") and not getattr(distribution, "is_adapted", True):
    distribution.adapt(x)

  variables = list(distribution.trainable_variables if trainable_variables is None
                   else trainable_variables)
  if not variables:
    raise ValueError(
        "the distribution has no trainable variables; pass trainable_variables= "
        "for models that do not track theirs")

  if optimizer is None:
    lr = _learning_rate_schedule(float(learning_rate), schedule, total_steps,
                                 int(warmup_steps), float(final_learning_rate_fraction))
    optimizer = tf_keras.optimizers.Adam(learning_rate=lr)
  optimizer.build(variables)
  log_prob_kwargs = dict(log_prob_kwargs or {})

  dataset = (tf.data.Dataset.from_tensor_slices(x)
             .shuffle(n, seed=seed, reshuffle_each_iteration=True)
             .repeat()
             .batch(batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE))
  iterator = iter(dataset)
  nonfinite_run = tf.Variable(0, dtype=tf.int64, trainable=False)

  def train_step(batch):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(distribution.log_prob(batch, **log_prob_kwargs))
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    finite = tf.math.is_finite(loss)
    for g in grads:
      finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))

    def apply():
      clipped = grads if clip_norm is None else tf.clip_by_global_norm(grads, clip_norm)[0]
      optimizer.apply_gradients(zip(clipped, variables))
      nonfinite_run.assign(0)
      return tf.constant(0, tf.int64)

    def skip():
      nonfinite_run.assign_add(1)
      return tf.constant(1, tf.int64)

    skipped = tf.cond(finite, apply, skip)
    return tf.where(finite, loss, tf.zeros_like(loss)), skipped

  @tf.function
  def train_steps(num_steps):
    loss_sum = tf.constant(0.0, dtype=distribution.dtype)
    skipped_sum = tf.constant(0, tf.int64)
    for _ in tf.range(num_steps):
      loss, skipped = train_step(next(iterator))
      loss_sum += loss
      skipped_sum += skipped
      if nonfinite_run >= max_nonfinite_steps:
        break
    return loss_sum, skipped_sum

  @tf.function
  def batch_nll(batch):
    return -tf.reduce_sum(distribution.log_prob(batch, **log_prob_kwargs))

  def evaluate(points) -> float:
    total = 0.0
    for start in range(0, points.shape[0], 8192):
      total += float(batch_nll(tf.constant(points[start:start + 8192])))
    return total / points.shape[0]

  def learning_rate_now() -> float:
    lr = optimizer.learning_rate
    if callable(lr):
      lr = lr(optimizer.iterations)
    return float(tf.convert_to_tensor(lr))

  history = History()
  best_val = math.inf
  best_weights = None
  epochs_since_best = 0
  start = time.perf_counter()
  done = 0
  epoch = 0
  bar = tqdm(total=total_steps, disable=not progress, unit="step", dynamic_ncols=True,
             desc="fit")
  try:
    while done < total_steps:
      chunk = min(eval_every, total_steps - done)
      loss_sum, skipped = train_steps(tf.constant(chunk, tf.int64))
      if int(nonfinite_run.numpy()) >= max_nonfinite_steps:
        raise TrainingDiverged(
            f"{max_nonfinite_steps} consecutive steps gave a non-finite loss or gradient "
            f"(at step {done + chunk} of {total_steps}); the weights were left at the last "
            "finite step. Lower the learning rate or set clip_norm.")
      skipped = int(skipped)
      done += chunk
      epoch += 1
      taken = chunk - skipped
      train_nll = float(loss_sum) / taken if taken else math.nan
      val_nll = evaluate(x_val) if x_val is not None else math.nan
      history.epoch.append(epoch)
      history.step.append(done)
      history.train_nll.append(train_nll)
      history.val_nll.append(val_nll)
      history.learning_rate.append(learning_rate_now())
      history.wall_time.append(time.perf_counter() - start)
      history.nonfinite_steps.append(skipped)
      bar.update(chunk)
      postfix = {"nll": f"{train_nll:.4f}"}
      if x_val is not None:
        postfix["val"] = f"{val_nll:.4f}"
      bar.set_postfix(postfix)
      if x_val is not None:
        if val_nll < best_val:
          best_val = val_nll
          history.best_epoch = epoch
          epochs_since_best = 0
          if restore_best_weights:
            best_weights = [v.numpy() for v in variables]
        else:
          epochs_since_best += 1
          if early_stopping_patience is not None and epochs_since_best >= early_stopping_patience:
            history.stopped_early = True
            break
  finally:
    bar.close()

  if x_val is not None and restore_best_weights and best_weights is not None:
    for v, value in zip(variables, best_weights):
      v.assign(value)
    history.best_val_nll = best_val
  else:
    history.best_epoch = epoch
    history.best_val_nll = history.val_nll[-1] if history.val_nll else math.nan
  history.total_time = time.perf_counter() - start
  return history
