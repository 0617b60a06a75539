"""The training loop of :func:`fit`: epochs of compiled steps, validation with
early stopping and best-weights restore, checkpoints and reports."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_realnvp.options import TRAINING_DEFAULTS as _D
from tfp_realnvp.options import TrainingOptions, is_int
from tfp_realnvp.training.averaging import WeightAverage
from tfp_realnvp.training.checkpoints import Checkpoints, History
from tfp_realnvp.training.data import event_size, prepare
from tfp_realnvp.training.optimizer import (build_slots, default_optimizer, learning_rate_factor,
                                            learning_rate_schedule)
from tfp_realnvp.training.step import TrainingSteps
from tfp_realnvp.training.summaries import Reporter

__all__ = ["fit", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
  """Raised when too many consecutive steps give a non-finite loss or gradient.

  Attributes:
    history: the :class:`History` of the epochs completed before it.
    step: the step count at the end of the epoch in which it happened (an
      upper bound on the step of the last non-finite loss).
  """

  history: "History | None" = None
  step: int | None = None


def _check_arguments(values: dict) -> None:
  for name in ("steps", "epochs", "eval_every", "checkpoint_every", "early_stopping_patience",
               "max_nonfinite_steps", "max_checkpoints", "image_every"):
    value = values[name]
    optional = name not in ("max_nonfinite_steps", "max_checkpoints", "image_every")
    if (value is not None or not optional) and (not is_int(value) or value < 1):
      raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, "
                       f"got {value!r}")
  if values["steps"] is not None and values["epochs"] is not None:
    raise ValueError("give exactly one of steps= or epochs= (neither: "
                     f"{_D.steps} steps)")
  cut = values["nonfinite_learning_rate_factor"]
  if cut is not None and not 0 < cut < 1:
    raise ValueError(f"nonfinite_learning_rate_factor must be in (0, 1), got {cut!r}")
  TrainingOptions(ema_decay=values["ema_decay"])  # checks it


def _clear_cache(distribution) -> None:
  """Drops the distribution's cached bijector results and those of traced graphs
  (TFP's bijector cache holds their inputs strongly, keeping every graph alive)."""
  clear = getattr(distribution, "clear_cache", None)
  if callable(clear):
    clear()
  storage = tfp.bijectors.Bijector._cache.storage  # pylint: disable=protected-access
  for key in list(storage.keys()):
    if any(tf.is_symbolic_tensor(t) for t in tf.nest.flatten(key())):
      key.cancel()
      storage.pop(key, None)


def fit(distribution, data, *, steps: int | None = None, epochs: int | None = None,
        batch_size: int = _D.batch_size, learning_rate: float = _D.learning_rate,
        optimizer: tf_keras.optimizers.Optimizer | None = None,
        ema_decay: float | None = _D.ema_decay, validation_data=None, conditional_input=None,
        eval_every: int | None = None, early_stopping_patience: int | None = None,
        restore_best_weights: bool = True,
        trainable_variables: Sequence[tf.Variable] | None = None, adapt: bool = True,
        max_nonfinite_steps: int = 20, nonfinite_learning_rate_factor: float | None = None,
        checkpoint_dir=None, checkpoint_every: int | None = None, max_checkpoints: int = 2,
        log_dir=None, image_every: int = 5, strategy: tf.distribute.Strategy | None = None,
        seed: int | None = 0, progress: bool = True, jit_compile: bool = False,
        log_prob_kwargs: dict | None = None) -> History:
  """Fits ``distribution`` to ``data`` by maximum likelihood.

  Minimizes ``-mean(distribution.log_prob(batch))`` over minibatches, skipping
  any step with a non-finite loss or gradient.  Cached bijector results are
  dropped at the end, so samples drawn before are evaluated with the new weights.

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
    data: points ``[n, event_size]``, or a finite or repeated ``tf.data.Dataset`` of points or
      batches, each ``x`` or ``(x, c)``.  NaN, inf and values the dtype cannot hold are refused.
    steps: optimizer steps; give this or ``epochs`` (neither: ``TRAINING_DEFAULTS.steps``).
    epochs: passes over the training data (not for an endless dataset).
    batch_size: points per step (the global batch under a strategy).
    learning_rate: peak learning rate of the default optimizer.
    optimizer: a ``tf_keras`` optimizer; default :func:`default_optimizer` over the run's steps.
    ema_decay: decay of the weight average (``averaging``) that validation, best-weights
      selection and the returned model use; ``None``: no average.
    validation_data: a fraction in (0, 1) of array ``data`` to hold out, ``x_val``, ``(x_val,)``
      or, for a conditional flow, ``(x_val, c_val)``.
    conditional_input: with array data, the conditions ``[n, conditional_size]``.
    eval_every: steps per epoch; default a pass over the data (a tenth of ``steps`` if endless).
    early_stopping_patience: stop after this many epochs without a better validation NLL.
    restore_best_weights: with validation data, end with the best validation epoch's weights.
    trainable_variables: default ``distribution.trainable_variables``.
    adapt: first ``distribution.adapt`` to the training data, if it has one and is not adapted.
    max_nonfinite_steps: consecutive non-finite steps that raise :class:`TrainingDiverged`
      (with the last good weights in place).
    nonfinite_learning_rate_factor: if set, a non-finite step also undoes the step before it
      and multiplies a :func:`default_optimizer`'s learning rate by this factor.
    checkpoint_dir: folder of checkpoints; a call with the same settings resumes from the
      newest complete one and does only the remaining steps.
    checkpoint_every: steps between checkpoints, rounded to epochs (default every epoch).
    max_checkpoints: checkpoints kept.
    log_dir: folder for TensorBoard summaries (``summaries``).
    image_every: epochs between density images in ``log_dir`` (2-D data).
    strategy: a ``tf.distribute`` strategy, in whose scope the distribution (and
      ``optimizer``) was built; only its chief writes checkpoints.
    seed: seed of the validation split and of the shuffling.
    progress: show a ``tqdm`` progress bar.
    jit_compile: compile the step with XLA where it can (not under a strategy).
    log_prob_kwargs: extra keyword arguments for every ``log_prob`` call.

  Returns:
    A :class:`History`.
  """
  start_time = time.perf_counter()
  _check_arguments(locals())
  replicas = 1 if strategy is None else strategy.num_replicas_in_sync
  data = prepare(distribution, data, conditional_input, validation_data,
                 batch_size=batch_size, replicas=replicas, seed=seed)
  total_steps, eval_every, checkpoint_epochs = _plan(
      data, steps, epochs, batch_size, eval_every, checkpoint_every, early_stopping_patience)
  if adapt and hasattr(distribution, "adapt") and not getattr(distribution, "is_adapted", True):
    distribution.adapt(data.x, **({} if data.c is None else {"conditional_input": data.c}))
  variables = _variables(distribution, trainable_variables, strategy)
  log_prob_kwargs = dict(log_prob_kwargs or {})

  def batch_log_prob(batch):
    if data.c is None:
      return distribution.log_prob(batch, **log_prob_kwargs)
    return distribution.log_prob(batch[0], conditional_input=batch[1], **log_prob_kwargs)

  # A distributed iterator cannot be checkpointed: under a strategy, skip `done` batches.
  iterator = iter(data.dataset) if strategy is None else None
  with strategy.scope() if strategy is not None else contextlib.nullcontext():
    if optimizer is None:
      optimizer = default_optimizer(total_steps, learning_rate=learning_rate)
    build_slots(optimizer, variables)
    lr_factor = learning_rate_factor(optimizer)
    average = WeightAverage(variables, ema_decay)
    best = [tf.Variable(v, trainable=False, name="best") for v in variables] \
        if data.x_val is not None and restore_best_weights else []
    train = TrainingSteps(
        iterator, batch_log_prob, variables, optimizer, batch_size=batch_size,
        strategy=strategy, after_apply=average.update, max_nonfinite_steps=max_nonfinite_steps,
        lr_cut=nonfinite_learning_rate_factor, lr_factor=lr_factor,
        jit_compile=jit_compile and strategy is None, dtype=distribution.dtype)
  checkpoints, history, state = _resume(checkpoint_dir, max_checkpoints, dict(
      variables=variables, optimizer=optimizer, lr_factor=lr_factor or [], best=best,
      iterator=iterator if strategy is None else [], **average.checkpoint_state(),
      distribution=distribution if isinstance(distribution, tf.Module) else []),
      writer=strategy is None or strategy.extended.should_checkpoint)
  done = history.resumed_from_step
  if strategy is not None:
    train.iterator = iter(strategy.experimental_distribute_dataset(data.dataset.skip(done)))
  reporter = Reporter(total_steps=total_steps, done=done, progress=progress, log_dir=log_dir,
                      image=_density_image(distribution, data, average, log_prob_kwargs),
                      image_every=image_every)
  try:
    evaluate = _evaluator(batch_log_prob, data, average) if data.x_val is not None else None
    _run_epochs(train, evaluate, history, state, checkpoints, reporter,
                total_steps=total_steps, eval_every=eval_every,
                checkpoint_epochs=checkpoint_epochs, best=best, average=average,
                patience=early_stopping_patience)
  finally:
    reporter.close()
    _clear_cache(distribution)
  _keep_best(history, state, best, average)
  _clear_cache(distribution)
  history.total_time = time.perf_counter() - start_time
  return history


def _plan(data, steps, epochs, batch_size, eval_every, checkpoint_every, patience):
  """``(total steps, steps per epoch, epochs between checkpoints)``."""
  if patience is not None and data.x_val is None:
    raise ValueError("early_stopping_patience needs validation_data")
  if epochs is not None and data.rows is None:
    raise ValueError("epochs= needs a finite dataset; give steps= for an endless one")
  per_pass = None if data.rows is None else data.rows // batch_size
  total_steps = epochs * per_pass if epochs is not None else steps or _D.steps
  eval_every = eval_every or min(per_pass or max(1, total_steps // 10), total_steps)
  return total_steps, eval_every, max(1, round((checkpoint_every or eval_every) / eval_every))


def _variables(distribution, trainable_variables, strategy) -> list:
  variables = list(distribution.trainable_variables if trainable_variables is None
                   else trainable_variables)
  if not variables:
    raise ValueError("the distribution has no trainable variables; pass trainable_variables= "
                     "for models that do not track theirs")
  if strategy is not None:
    outside = [v.name for v in variables if not strategy.extended.variable_created_in_scope(v)]
    if outside:
      raise ValueError(
          f"{len(outside)} variables (e.g. {outside[0]}) were not created under the strategy's "
          "scope; build the distribution inside `with strategy.scope():`")
  return variables


def _resume(checkpoint_dir, max_checkpoints, trackables, writer):
  """The run's checkpoints (``None`` without ``checkpoint_dir``), its history
  and loop state: those of the newest complete checkpoint, if any."""
  state = {"best_val": math.inf, "epochs_since_best": 0, "elapsed": 0.0}
  if checkpoint_dir is None:
    return None, History(), state
  checkpoints = Checkpoints(checkpoint_dir, trackables, max_to_keep=max_checkpoints,
                            writer=writer)
  history, saved = checkpoints.restore() or (History(), {})
  return checkpoints, history, {**state, **saved}


def _evaluator(batch_log_prob, data, average):
  """The validation NLL (nats per point) with the averaged weights."""
  batch_nll = tf.function(lambda batch: -tf.reduce_sum(batch_log_prob(batch)), autograph=False)

  def evaluate() -> float:
    total = 0.0
    with average.swapped_in():
      for start in range(0, data.x_val.shape[0], 8192):
        points = tf.constant(data.x_val[start:start + 8192])
        total += float(batch_nll(points if data.c_val is None
                                 else (points, tf.constant(data.c_val[start:start + 8192]))))
    return total / data.x_val.shape[0]
  return evaluate


def _run_epochs(train, evaluate, history, state, checkpoints, reporter, *, total_steps: int,
                eval_every: int, checkpoint_epochs: int, best, average, patience) -> None:
  """Epochs of ``eval_every`` steps up to ``total_steps``, each validated (unless
  ``evaluate`` is ``None``), recorded in ``history``, reported and checkpointed."""
  done, epoch = history.resumed_from_step, history.epoch[-1] if history.epoch else 0
  earlier_sessions, session_start = state["elapsed"], time.perf_counter()
  while done < total_steps and not history.stopped_early:
    chunk = min(eval_every, total_steps - done)
    loss_sum, skipped = train(chunk)
    if train.diverged:
      error = TrainingDiverged(
          f"{train.max_nonfinite_steps} consecutive steps gave a non-finite loss or gradient "
          f"(near step {done + chunk} of {total_steps}); they were skipped and the weights "
          "are those of the last finite step. Lower the learning rate, set clip_norm in "
          "default_optimizer or nonfinite_learning_rate_factor.")
      error.history, error.step = history, done + chunk
      raise error
    done, epoch = done + chunk, epoch + 1
    taken = chunk - skipped
    val_nll = evaluate() if evaluate is not None else math.nan
    state["elapsed"] = earlier_sessions + time.perf_counter() - session_start
    for name, value in (("epoch", epoch), ("step", done), ("val_nll", val_nll),
                        ("train_nll", loss_sum / taken if taken else math.nan),
                        ("learning_rate", _learning_rate(train.optimizer)),
                        ("wall_time", state["elapsed"]), ("nonfinite_steps", skipped)):
      getattr(history, name).append(value)
    if evaluate is not None:
      _track_best(history, state, best, average, patience)
    reporter.epoch(history, chunk)
    if checkpoints is not None and (epoch % checkpoint_epochs == 0 or done >= total_steps
                                    or history.stopped_early):
      checkpoints.save(history, state)


def _track_best(history, state, best, average, patience) -> None:
  """Keeps the best validation epoch's weights; flags early stopping."""
  if history.val_nll[-1] < state["best_val"]:
    state["best_val"], state["epochs_since_best"] = history.val_nll[-1], 0
    history.best_epoch = history.epoch[-1]
    for saved, v in zip(best, average.averages):
      saved.assign(v)
  else:
    state["epochs_since_best"] += 1
    history.stopped_early = patience is not None and state["epochs_since_best"] >= patience


def _keep_best(history, state, best, average) -> None:
  """Ends with the best validation epoch's weights if kept, else the (averaged) last ones."""
  if best and history.best_epoch is not None:
    for v, saved in zip(average.variables, best):
      v.assign(saved)
    history.best_val_nll = state["best_val"]
  else:
    average.keep()
    history.best_epoch = history.epoch[-1] if history.epoch else 0
    history.best_val_nll = history.val_nll[-1] if history.val_nll else math.nan


def _learning_rate(optimizer) -> float:
  lr = learning_rate_schedule(optimizer)
  return float(tf.convert_to_tensor(lr(optimizer.iterations) if callable(lr) else lr))


def _density_image(distribution, data, average, log_prob_kwargs):
  """A callable drawing the learned density for TensorBoard, for 2-D unconditional data."""
  if event_size(distribution) != 2 or data.c is not None:
    return None

  def image() -> tf.Tensor:
    from tfp_realnvp.plots import density_image  # matplotlib only when images are asked for
    with average.swapped_in():
      return density_image(distribution, data.x, **log_prob_kwargs)
  return image
