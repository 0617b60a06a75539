"""Ours' contestants (run by the main virtual environment): ``tfp_realnvp.RealNVP``.

Training runs are ``tfp_realnvp.fit`` with its defaults (the optimizer,
weight average, non-finite guard and best-weights restore of
``TRAINING_DEFAULTS``).  The start-up's first step is ``fit(steps=1)``.  The
interleaved step timing needs blocks of steps of one model, which ``fit``
(one call, one run) cannot give without tracing its step again each call; it
runs ``fit``'s own compiled loop (``tfp_realnvp.training.step.TrainingSteps``)
set up as ``fit`` sets it up.
"""

from __future__ import annotations

from benchmarks.peers import protocol

THREADS = protocol.setup_process()

import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from benchmarks.bench.settings import fit_defaults  # noqa: E402
from tfp_realnvp import RealNVP, TrainingDiverged, fit  # noqa: E402
from tfp_realnvp.training import default_optimizer  # noqa: E402
from tfp_realnvp.training import loop as fit_loop  # noqa: E402
from tfp_realnvp.training.averaging import WeightAverage  # noqa: E402
from tfp_realnvp.training.data import prepare  # noqa: E402
from tfp_realnvp.training.optimizer import build_slots, learning_rate_factor  # noqa: E402
from tfp_realnvp.training.step import TrainingSteps  # noqa: E402

protocol.mark_imported()
tf.get_logger().setLevel("ERROR")
if THREADS == "1":
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)

PACKAGES = ("tensorflow", "tensorflow-probability", "tf-keras", "numpy")


class OursModel(protocol.Model):
  """``RealNVP`` with the package's defaults but ``settings``' couplings and widths, adapted."""

  def __init__(self, coupling: str, settings: dict, data: protocol.Data, seed: int):
    tf_keras.utils.set_random_seed(seed)
    self.flow = RealNVP(2, seed=seed, coupling=coupling, num_couplings=settings["num_couplings"],
                        hidden_units=tuple(settings["hidden_units"]))
    self.flow.adapt(data.train)
    self.parameters = int(sum(v.shape.num_elements() for v in self.flow.trainable_variables))
    self.settings, self.data, self.seed, self._loop = settings, data, seed, None

  def first_step(self) -> None:
    fit(self.flow, self.data.train, steps=1, batch_size=self.settings["batch_size"],
        seed=self.seed, progress=False)

  def train(self, n: int) -> float:
    if self._loop is None:
      self._loop = self._fit_loop()
    return self._loop(n)[0]

  def _fit_loop(self) -> TrainingSteps:
    """fit's compiled loop of steps, with its default optimizer and weight average."""
    batch, variables = self.settings["batch_size"], list(self.flow.trainable_variables)
    data = prepare(self.flow, self.data.train, None, None, batch_size=batch, replicas=1,
                   seed=self.seed)
    optimizer = default_optimizer(self.settings["steps"])
    build_slots(optimizer, variables)
    average = WeightAverage(variables, self.settings["ema_decay"])
    defaults = fit_defaults()
    return TrainingSteps(
        iter(data.dataset), self.flow.log_prob, variables, optimizer, batch_size=batch,
        strategy=None, after_apply=average.update,
        max_nonfinite_steps=defaults["max_nonfinite_steps"], lr_cut=None,
        lr_factor=learning_rate_factor(optimizer), jit_compile=defaults["jit_compile"],
        dtype=self.flow.dtype)

  def throughput_fns(self, data: protocol.Data) -> dict:
    """``log_prob`` and ``sample`` as ``tf.function`` graphs, and compiled by XLA (``_xla``)."""
    x, n, seed = tf.constant(data.throughput), len(data.throughput), tf.constant([1, 2])
    fns = {}
    for suffix, jit in (("", False), ("_xla", True)):
      log_prob = tf.function(self.flow.log_prob, jit_compile=jit)
      sample = tf.function(lambda s: self.flow.sample(n, seed=s), jit_compile=jit)
      fns["log_prob" + suffix] = lambda f=log_prob: f(x).numpy()
      fns["sample" + suffix] = lambda f=sample: f(seed).numpy()
    return fns


def train_run(model: OursModel, data: protocol.Data, settings: dict, seed: int) -> dict:
  """``fit`` with its defaults, validating every ``eval_every`` steps; the run's record.

  fit's wall times include its validations; each validation is timed (by
  wrapping fit's evaluator) and taken out, so that they are those of the
  training steps only, as the peers'.
  """
  evaluations, make_evaluator = [], fit_loop._evaluator  # pylint: disable=protected-access

  def timed_evaluator(*args):
    evaluate = make_evaluator(*args)

    def timed():
      start = time.perf_counter()
      value = evaluate()
      evaluations.append(time.perf_counter() - start)
      return value
    return timed

  fit_loop._evaluator = timed_evaluator
  diverged = False
  try:
    history = fit(model.flow, data.train, steps=settings["steps"],
                  batch_size=settings["batch_size"], validation_data=data.val,
                  eval_every=settings["eval_every"], seed=seed, progress=False)
  except TrainingDiverged as error:
    history, diverged = error.history, True
  finally:
    fit_loop._evaluator = make_evaluator
  if len(evaluations) != len(history.val_nll):
    raise RuntimeError(f"fit ran {len(history.val_nll)} validations but {len(evaluations)} were "
                       "timed: its evaluator is no longer tfp_realnvp.training.loop._evaluator")
  wall = np.asarray(history.wall_time) - np.cumsum(evaluations)
  test_nll = float(-np.mean(model.flow.log_prob(data.test).numpy()))
  return {"test_nll": protocol.finite(test_nll),
          "steps_done": int(history.step[-1]) if history.step else 0,
          "train_seconds": float(wall[-1]) if len(wall) else 0.0,
          "nonfinite_steps": int(sum(history.nonfinite_steps)), "diverged": diverged,
          "history": {"step": [int(s) for s in history.step],
                      "val_nll": [protocol.finite(v) for v in history.val_nll],
                      "wall_time": [float(w) for w in wall]}}


if __name__ == "__main__":
  protocol.serve(OursModel, PACKAGES, run=train_run)
