"""Maximum-likelihood training of any TFP distribution.

:func:`fit` minimizes the mean negative log-likelihood ``-mean(log p(x))``
with a ``tf.function``-compiled step (a graph; XLA on request), a ``tf.data``
pipeline, Adam with warm-up and cosine decay, an exponential moving average
of the weights, an optional validation split with early stopping and
best-weights restore, and a ``tqdm`` progress bar.  It can
also checkpoint and resume (``checkpoint_dir``), write TensorBoard summaries
(``log_dir``) and train under a ``tf.distribute`` strategy (``strategy``).

A step whose loss or gradient is not finite is skipped (the weights and the
optimizer state stay as they were), counted in the history, and optionally
lowers the learning rate; after ``max_nonfinite_steps`` such steps in a row,
:class:`TrainingDiverged` is raised with the last good weights in place.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pathlib
import tempfile
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from tqdm.auto import tqdm

from tfp_realnvp.files import atomic_write_text
from tfp_realnvp.training.optimizer import default_optimizer, learning_rate_factor

__all__ = ["fit", "History", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
  """Raised when too many consecutive steps give a non-finite loss or gradient.

  Attributes:
    history: the :class:`History` of the epochs completed before it.
    step: the step count at the end of the epoch in which it happened (an
      upper bound on the step of the last non-finite loss).
  """

  history: "History | None" = None
  step: int | None = None


@dataclasses.dataclass
class History:
  """What :func:`fit` measured, one entry per epoch (evaluation period).

  Attributes:
    epoch: epoch numbers, from 1.
    step: optimizer steps done at the end of each epoch.
    train_nll: mean training NLL (nats) over the epoch's finite steps.
    val_nll: validation NLL (nats) at the end of each epoch (``nan`` without
      validation data).
    learning_rate: learning rate at the end of each epoch.
    wall_time: seconds of training at the end of each epoch (summed over
      resumed sessions).
    nonfinite_steps: steps skipped during each epoch because the loss or a
      gradient was not finite.
    best_epoch: epoch whose weights the model holds at the end (the best
      validation epoch with ``restore_best_weights``, else the last).
    best_val_nll: validation NLL of ``best_epoch``.
    stopped_early: whether early stopping ended training.
    resumed_from_step: the step a resumed run started from (0 if fresh).
    total_time: seconds spent in this call of ``fit``.
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
  resumed_from_step: int = 0
  total_time: float = 0.0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "History":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_data(data, name: str, event_size: int | None, dtype) -> np.ndarray:
  if isinstance(data, tf.data.Dataset):
    raise TypeError(f"{name} must be an array of shape [n, event_size], not a tf.data.Dataset")
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
        "remove or impute them before training (fit drops nothing silently)")
  return array


def _event_size(distribution) -> int | None:
  shape = distribution.event_shape
  if shape.rank != 1 or shape[0] is None:
    return None
  return int(shape[0])


def _density_image(distribution, points: np.ndarray, log_prob_kwargs: dict) -> tf.Tensor:
  """A PNG heat map of a 2-D density over the range of ``points``, as an image tensor."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  low, high = np.percentile(points, [0.5, 99.5], axis=0)
  pad = (high - low) * 0.15
  xs = np.linspace(low[0] - pad[0], high[0] + pad[0], 120)
  ys = np.linspace(low[1] - pad[1], high[1] + pad[1], 120)
  grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(points.dtype)
  density = np.exp(distribution.log_prob(grid, **log_prob_kwargs).numpy()).reshape(120, 120)
  fig, ax = plt.subplots(figsize=(4, 3.2))
  ax.imshow(density, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap="viridis",
            aspect="auto")
  ax.set_title("learned density")
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=80)
  plt.close(fig)
  return tf.image.decode_png(buf.getvalue(), channels=4)[None]


def _split_validation(x, c, validation_data, rng, event_size, dtype):
  """Returns (x_train, c_train, x_val, c_val)."""
  if validation_data is None:
    return x, c, None, None
  if isinstance(validation_data, float) and not isinstance(validation_data, bool):
    if not 0.0 < validation_data < 1.0:
      raise ValueError(f"a validation fraction must be in (0, 1), got {validation_data}")
    n_val = max(1, int(round(validation_data * x.shape[0])))
    if n_val >= x.shape[0]:
      raise ValueError(
          f"validation fraction {validation_data} leaves no training data out of {x.shape[0]} rows")
    order = rng.permutation(x.shape[0])
    val, train = order[:n_val], order[n_val:]
    return (x[train], None if c is None else c[train], x[val], None if c is None else c[val])
  if c is not None:
    if not (isinstance(validation_data, tuple) and len(validation_data) == 2):
      raise ValueError(
          "with conditional_input, validation_data must be a fraction or a tuple "
          "(x_val, conditional_input_val)")
    x_val = _as_data(validation_data[0], "validation_data[0]", event_size, dtype)
    c_val = _as_data(validation_data[1], "validation_data[1]", c.shape[1], dtype)
    if c_val.shape[0] != x_val.shape[0]:
      raise ValueError(
          f"validation data has {x_val.shape[0]} rows but its conditional_input has {c_val.shape[0]}")
    return x, c, x_val, c_val
  return x, c, _as_data(validation_data, "validation_data", event_size, dtype), None


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
        weight_decay: float = 0.0,
        validation_data=None,
        conditional_input=None,
        eval_every: int | None = None,
        early_stopping_patience: int | None = None,
        restore_best_weights: bool = True,
        trainable_variables: Sequence[tf.Variable] | None = None,
        adapt: bool = True,
        optimizer: tf_keras.optimizers.Optimizer | None = None,
        max_nonfinite_steps: int = 20,
        nonfinite_learning_rate_factor: float | None = None,
        checkpoint_dir=None,
        checkpoint_every: int | None = None,
        max_checkpoints: int = 2,
        log_dir=None,
        image_every: int = 5,
        strategy: tf.distribute.Strategy | None = None,
        seed: int | None = 0,
        progress: bool = True,
        jit_compile: bool = False,
        ema_decay: float | None = 0.99,
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
    batch_size: points per step (the global batch under a strategy), at most
      the number of training points.
    learning_rate: peak learning rate of Adam.
    schedule: ``"cosine"`` (linear warm-up, then cosine decay to
      ``final_learning_rate_fraction * learning_rate``) or ``"constant"``.
    warmup_steps: length of the warm-up of the cosine schedule.
    final_learning_rate_fraction: end of the cosine decay, as a fraction of
      ``learning_rate``.
    clip_norm: clip the global gradient norm to this value (``None``: no clip).
    weight_decay: decoupled weight decay (AdamW) per unit learning rate;
      0 uses plain Adam.
    validation_data: ``None``, a fraction in (0, 1) of ``data`` to hold out,
      or an array of validation points (with ``conditional_input``: a tuple
      ``(x_val, c_val)``).
    conditional_input: for a conditional flow, the conditioning vectors of
      ``data``, shape ``[n, conditional_size]``; each batch's rows are passed
      as ``log_prob(x, conditional_input=c)``.
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
    max_nonfinite_steps: raise :class:`TrainingDiverged` after this many
      consecutive steps with a non-finite loss or gradient.
    nonfinite_learning_rate_factor: if set (e.g. 0.5), a non-finite step also
      rolls the weights back to before the previous step (whose update led
      there) and multiplies the learning rate by this factor.
    checkpoint_dir: folder for ``tf.train.CheckpointManager`` checkpoints
      (weights, optimizer state, step, input-pipeline position, history).  If
      it holds a checkpoint of an earlier call with the same settings,
      training resumes from it and does only the remaining steps.
    checkpoint_every: steps between checkpoints (rounded to whole epochs);
      default every epoch when ``checkpoint_dir`` is set.
    max_checkpoints: checkpoints kept.
    log_dir: folder for TensorBoard summaries: train/validation NLL, learning
      rate and non-finite step count per epoch, and for 2-D data an image of
      the learned density every ``image_every`` epochs.
    image_every: epochs between density images.
    strategy: a ``tf.distribute`` strategy.  Build the distribution under
      ``strategy.scope()``; each global batch is split across replicas and
      the gradients are summed over them.
    seed: seed of the validation split and of the shuffling.
    progress: show a ``tqdm`` progress bar.
    jit_compile: compile the training step with XLA; falls back to a plain
      graph if XLA cannot compile the distribution.  Off by default: on the
      2-core CPU here the plain graph was faster for the default flow, per
      step and in compile time (``benchmarks/`` reports both).  Not used under
      a strategy.
    ema_decay: if set (default 0.99), keep an exponential moving average of the
      weights (Polyak averaging, with the warm-up of
      ``tf.train.ExponentialMovingAverage(num_updates=...)``: after the n-th
      step ``average += (1 - d) * (weight - average)`` with
      ``d = min(ema_decay, (1 + n) / (10 + n))``).  Validation, best-weights
      selection and the returned model use the averaged weights; the optimizer
      keeps stepping the raw ones.  ``None`` turns it off.
    log_prob_kwargs: extra keyword arguments for every ``log_prob`` call.

  Returns:
    A :class:`History`.
  """
  start_time = time.perf_counter()
  event_size = _event_size(distribution)
  dtype = distribution.dtype.as_numpy_dtype if hasattr(distribution.dtype, "as_numpy_dtype") else np.float32
  x = _as_data(data, "data", event_size, dtype)
  c = None
  if conditional_input is not None:
    c = _as_data(conditional_input, "conditional_input", None, dtype)
    if c.shape[0] != x.shape[0]:
      raise ValueError(
          f"data has {x.shape[0]} rows but conditional_input has {c.shape[0]}; "
          "give one conditioning vector per point")

  for label, value in (("steps", steps), ("epochs", epochs)):
    if value is not None and (not _is_int(value) or value < 1):
      raise ValueError(f"{label} must be a positive integer, got {value!r}")
  if (steps is None) == (epochs is None):
    raise ValueError("give exactly one of steps= or epochs=")
  if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating)) \
      or not learning_rate > 0 or not math.isfinite(learning_rate):
    raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
  if not _is_int(batch_size) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if early_stopping_patience is not None and (not _is_int(early_stopping_patience)
                                              or early_stopping_patience < 1):
    raise ValueError(
        f"early_stopping_patience must be a positive integer or None, got {early_stopping_patience!r}")
  if not _is_int(max_nonfinite_steps) or max_nonfinite_steps < 1:
    raise ValueError(f"max_nonfinite_steps must be a positive integer, got {max_nonfinite_steps!r}")
  if nonfinite_learning_rate_factor is not None and not 0 < nonfinite_learning_rate_factor < 1:
    raise ValueError(
        f"nonfinite_learning_rate_factor must be in (0, 1), got {nonfinite_learning_rate_factor!r}")
  if clip_norm is not None and not clip_norm > 0:
    raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
  if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.floating)) \
      or not 0.0 <= weight_decay < 1.0:
    raise ValueError(f"weight_decay must be a number in [0, 1), got {weight_decay!r}")
  if ema_decay is not None and (isinstance(ema_decay, bool) or not 0.0 < ema_decay < 1.0):
    raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay!r}")

  rng = np.random.default_rng(seed)
  x, c, x_val, c_val = _split_validation(x, c, validation_data, rng, event_size, dtype)
  if early_stopping_patience is not None and x_val is None:
    raise ValueError("early_stopping_patience needs validation_data")

  n = x.shape[0]
  if batch_size > n:
    raise ValueError(
        f"batch_size ({batch_size}) is larger than the number of training points ({n})")
  replicas = 1 if strategy is None else strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise ValueError(
        f"batch_size ({batch_size}) must be divisible by the {replicas} replicas of the strategy")
  steps_per_epoch = n // batch_size
  total_steps = steps if steps is not None else epochs * steps_per_epoch
  if eval_every is None:
    eval_every = min(steps_per_epoch, total_steps)
  elif not _is_int(eval_every) or eval_every < 1:
    raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
  if checkpoint_every is not None and (not _is_int(checkpoint_every) or checkpoint_every < 1):
    raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
  checkpoint_epochs = 1 if checkpoint_every is None else max(1, round(checkpoint_every / eval_every))

  if adapt and hasattr(distribution, "adapt") and not getattr(distribution, "is_adapted", True):
    distribution.adapt(x)

  variables = list(distribution.trainable_variables if trainable_variables is None
                   else trainable_variables)
  if not variables:
    raise ValueError(
        "the distribution has no trainable variables; pass trainable_variables= "
        "for models that do not track theirs")
  if strategy is not None:
    outside = [v.name for v in variables if not strategy.extended.variable_created_in_scope(v)]
    if outside:
      raise ValueError(
          f"{len(outside)} variables (e.g. {outside[0]}) were not created under the strategy's "
          "scope; build the distribution inside `with strategy.scope():`")
    jit_compile = False
  scope = strategy.scope() if strategy is not None else _NullScope()

  with scope:
    if optimizer is None:
      optimizer = default_optimizer(
          total_steps, learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
          final_learning_rate_fraction=final_learning_rate_fraction, clip_norm=clip_norm,
          weight_decay=weight_decay)
    lr_factor = learning_rate_factor(optimizer)
    optimizer.build(variables)
    nonfinite_run = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_run")
    best_copies = [tf.Variable(v, trainable=False, name="best") for v in variables] \
        if (x_val is not None and restore_best_weights) else []
    # With a learning-rate cut on divergence, a non-finite step also undoes the
    # step before it, whose update led there.
    rollback = nonfinite_learning_rate_factor is not None
    previous = [tf.Variable(v, trainable=False, name="previous") for v in variables] \
        if rollback else []
    # The moving average by hand: tf.train.ExponentialMovingAverage.apply
    # fails on the mirrored variables of a tf.distribute strategy.
    averages, raw_copies, ema_updates = [], [], None
    if ema_decay is not None:
      ema_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")
      averages = [tf.Variable(v, trainable=False, name="average") for v in variables]
      raw_copies = [tf.Variable(v, trainable=False, name="raw") for v in variables]

  def update_averages():
    """average <- d * average + (1 - d) * weight, d = min(ema_decay, (1 + n) / (10 + n))."""
    n = tf.cast(ema_updates.assign_add(1), tf.float32)
    decay = tf.minimum(tf.constant(ema_decay, tf.float32), (1.0 + n) / (10.0 + n))
    for average, v in zip(averages, variables):
      average.assign_sub(tf.cast(1.0 - decay, average.dtype) * (average - v))
  log_prob_kwargs = dict(log_prob_kwargs or {})

  tensors = x if c is None else (x, c)
  dataset = (tf.data.Dataset.from_tensor_slices(tensors)
             .shuffle(n, seed=seed, reshuffle_each_iteration=True)
             .repeat()
             .batch(batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE))
  iterator = iter(dataset if strategy is None else strategy.experimental_distribute_dataset(dataset))

  def batch_log_prob(batch):
    if c is None:
      return distribution.log_prob(batch, **log_prob_kwargs)
    points, conditions = batch
    return distribution.log_prob(points, conditional_input=conditions, **log_prob_kwargs)

  def loss_and_grads(batch):
    with tf.GradientTape() as tape:
      # Sum over the batch's rows divided by the global batch size: under a
      # strategy, summing the replicas' losses and gradients gives those of
      # the global mean.
      loss = -tf.reduce_sum(batch_log_prob(batch)) / batch_size
    grads = tape.gradient(loss, variables)
    return loss, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]

  def apply_or_skip(loss, grads):
    """Applies the step if it is finite, else skips it (and maybe rolls back)."""
    finite = tf.math.is_finite(loss)
    for g in grads:
      finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))

    def apply():
      for saved, v in zip(previous, variables):
        saved.assign(v)
      optimizer.apply_gradients(zip(grads, variables))
      if averages:
        update_averages()
      return tf.constant(0, tf.int64)

    def skip():
      for saved, v in zip(previous, variables):
        v.assign(saved)
      return tf.constant(1, tf.int64)

    skipped = tf.cond(finite, apply, skip)
    return tf.where(finite, loss, tf.zeros_like(loss)), skipped

  def train_step(batch):
    if strategy is None:
      return apply_or_skip(*loss_and_grads(batch))
    # Gradients per replica, summed, then one update in cross-replica context
    # (the optimizer updates every mirrored copy), so that a non-finite step
    # is skipped by all replicas alike.
    losses, grads = strategy.run(loss_and_grads, args=(batch,))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
    grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
    return apply_or_skip(loss, grads)

  state = {"jit": bool(jit_compile)}

  def make_train_steps():
    # No autograph: the step and the loop are plain Python around explicit
    # tf.cond and tf.while_loop, so there is nothing to convert (and no source
    # generated while tracing).
    step_fn = tf.function(train_step, jit_compile=state["jit"], autograph=False)

    def on_skip():
      updates = [nonfinite_run.assign_add(1)]
      if nonfinite_learning_rate_factor is not None and lr_factor is not None:
        updates.append(lr_factor.assign(lr_factor * nonfinite_learning_rate_factor))
      with tf.control_dependencies(updates):
        return tf.constant(0)

    def on_apply():
      with tf.control_dependencies([nonfinite_run.assign(0)]):
        return tf.constant(0)

    @tf.function(autograph=False)
    def train_steps(num_steps):
      def keep_going(i, loss_sum, skipped_sum):
        return tf.logical_and(i < num_steps, nonfinite_run < max_nonfinite_steps)

      def one_step(i, loss_sum, skipped_sum):
        loss, skipped = step_fn(next(iterator))
        with tf.control_dependencies([tf.cond(skipped > 0, on_skip, on_apply)]):
          return i + 1, loss_sum + loss, skipped_sum + skipped

      start = (tf.constant(0, tf.int64), tf.constant(0.0, dtype=distribution.dtype),
               tf.constant(0, tf.int64))
      _, loss_sum, skipped_sum = tf.while_loop(keep_going, one_step, start)
      return loss_sum, skipped_sum
    return train_steps

  train_steps = make_train_steps()

  @tf.function(autograph=False)
  def batch_nll(batch):
    return -tf.reduce_sum(batch_log_prob(batch))

  def swap_in_averages():
    """Context: the variables hold the moving averages inside it, the raw weights after."""
    return _SwappedWeights(variables, averages, raw_copies)

  def evaluate() -> float:
    total = 0.0
    with swap_in_averages():
      for start in range(0, x_val.shape[0], 8192):
        points = tf.constant(x_val[start:start + 8192])
        total += float(batch_nll(points if c_val is None
                                 else (points, tf.constant(c_val[start:start + 8192]))))
    return total / x_val.shape[0]

  def learning_rate_now() -> float:
    lr = optimizer.learning_rate
    if callable(lr):
      lr = lr(optimizer.iterations)
    return float(tf.convert_to_tensor(lr))

  # -- checkpoints --------------------------------------------------------
  history = History()
  progress_state = {"best_val": math.inf, "epochs_since_best": 0, "elapsed": 0.0}
  manager = None
  if checkpoint_dir is not None:
    checkpoint_dir = pathlib.Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = tf.train.Checkpoint(
        variables=variables, optimizer=optimizer, lr_factor=[] if lr_factor is None else lr_factor, best=best_copies,
        averages=averages, ema_updates=[] if ema_updates is None else ema_updates,
        iterator=iterator, distribution=distribution if isinstance(distribution, tf.Module) else [])
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=max_checkpoints)
    if manager.latest_checkpoint:
      checkpoint.restore(manager.latest_checkpoint).expect_partial()
      saved = _read_history(checkpoint_dir, manager.latest_checkpoint)
      history = History.from_dict(saved["history"])
      progress_state.update(saved["progress"])
      history.resumed_from_step = history.step[-1] if history.step else 0

  def save_checkpoint():
    path = manager.save(checkpoint_number=history.step[-1])
    _write_history(checkpoint_dir, path, history, progress_state)
    kept = {pathlib.Path(p).name for p in manager.checkpoints}
    for stale in checkpoint_dir.glob("*.history.json"):
      if stale.name[:-len(".history.json")] not in kept:
        stale.unlink(missing_ok=True)

  summary_writer = tf.summary.create_file_writer(str(log_dir)) if log_dir is not None else None

  done = history.step[-1] if history.step else 0
  epoch = history.epoch[-1] if history.epoch else 0
  earlier_sessions = progress_state["elapsed"]
  session_start = time.perf_counter()
  bar = tqdm(total=total_steps, initial=done, disable=not progress, unit="step",
             dynamic_ncols=True, desc="fit")
  try:
    while done < total_steps and not history.stopped_early:
      chunk = min(eval_every, total_steps - done)
      try:
        loss_sum, skipped = train_steps(tf.constant(chunk, tf.int64))
      except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        if not state["jit"] or state.get("trained") or "xla" not in str(e).lower():
          raise
        state["jit"] = False  # XLA cannot compile this distribution: use a plain graph
        train_steps = make_train_steps()
        continue
      if int(nonfinite_run.numpy()) >= max_nonfinite_steps:
        raise TrainingDiverged(
            f"{max_nonfinite_steps} consecutive steps gave a non-finite loss or gradient "
            f"(near step {done + chunk} of {total_steps}); they were skipped and the weights "
            "are those of the last finite step. Lower the learning rate, set clip_norm or "
            "nonfinite_learning_rate_factor.")
      state["trained"] = True
      skipped = int(skipped)
      done += chunk
      epoch += 1
      taken = chunk - skipped
      train_nll = float(loss_sum) / taken if taken else math.nan
      val_nll = evaluate() if x_val is not None else math.nan
      elapsed = earlier_sessions + time.perf_counter() - session_start
      history.epoch.append(epoch)
      history.step.append(done)
      history.train_nll.append(train_nll)
      history.val_nll.append(val_nll)
      history.learning_rate.append(learning_rate_now())
      history.wall_time.append(elapsed)
      history.nonfinite_steps.append(skipped)
      bar.update(chunk)
      postfix = {"nll": f"{train_nll:.4f}"}
      if x_val is not None:
        postfix["val"] = f"{val_nll:.4f}"
      if skipped:
        postfix["skipped"] = skipped
      bar.set_postfix(postfix)
      if x_val is not None:
        if val_nll < progress_state["best_val"]:
          progress_state["best_val"] = val_nll
          progress_state["epochs_since_best"] = 0
          history.best_epoch = epoch
          for copy, v in zip(best_copies, averages or variables):
            copy.assign(v)
        else:
          progress_state["epochs_since_best"] += 1
          if early_stopping_patience is not None and \
              progress_state["epochs_since_best"] >= early_stopping_patience:
            history.stopped_early = True
      if summary_writer is not None:
        with summary_writer.as_default(step=done):
          tf.summary.scalar("nll/train", train_nll)
          if x_val is not None:
            tf.summary.scalar("nll/validation", val_nll)
          tf.summary.scalar("learning_rate", history.learning_rate[-1])
          tf.summary.scalar("nonfinite_steps", skipped)
          if event_size == 2 and c is None and (epoch % image_every == 0 or done >= total_steps):
            with swap_in_averages():
              tf.summary.image("density", _density_image(distribution, x, log_prob_kwargs))
        summary_writer.flush()
      if manager is not None and (epoch % checkpoint_epochs == 0 or done >= total_steps
                                  or history.stopped_early):
        progress_state["elapsed"] = elapsed
        save_checkpoint()
  except TrainingDiverged as error:
    error.history, error.step = history, done + chunk
    raise
  finally:
    bar.close()
    if summary_writer is not None:
      summary_writer.close()

  if best_copies and history.best_epoch is not None:
    for v, copy in zip(variables, best_copies):
      v.assign(copy)
    history.best_val_nll = progress_state["best_val"]
  else:
    for v, average in zip(variables, averages):
      v.assign(average)
    history.best_epoch = epoch
    history.best_val_nll = history.val_nll[-1] if history.val_nll else math.nan
  history.total_time = time.perf_counter() - start_time
  return history


class _SwappedWeights:
  """Puts ``replacements`` into ``variables`` for the duration of a ``with``."""

  def __init__(self, variables, replacements, stash):
    self.variables, self.replacements, self.stash = variables, replacements, stash

  def __enter__(self):
    for saved, v, new in zip(self.stash, self.variables, self.replacements):
      saved.assign(v)
      v.assign(new)
    return self

  def __exit__(self, *exc):
    for saved, v in zip(self.stash, self.variables):
      v.assign(saved)
    return False


class _NullScope:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _history_path(checkpoint_dir: pathlib.Path, checkpoint_path: str) -> pathlib.Path:
  return checkpoint_dir / f"{pathlib.Path(checkpoint_path).name}.history.json"


def _write_history(checkpoint_dir, checkpoint_path, history: History, progress_state: dict):
  payload = {"history": history.as_dict(), "progress": progress_state}
  atomic_write_text(_history_path(checkpoint_dir, checkpoint_path),
                     json.dumps(payload, allow_nan=True))


def _read_history(checkpoint_dir, checkpoint_path) -> dict:
  path = _history_path(checkpoint_dir, checkpoint_path)
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise ValueError(
        f"checkpoint {checkpoint_path} has no training history ({path.name}); "
        "it was not written by tfp_realnvp.fit") from None
