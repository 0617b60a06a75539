"""Where fit's training step goes: variants of its compiled loop, timed interleaved.

Each variant is ``fit``'s own loop of steps (``TrainingSteps``, set up as
``fit`` sets it up) on two moons with one setting changed; blocks of steps are
taken in turn, so machine noise hits every variant alike, and each variant's
time per step is reported as a ratio to the first one's in the same round::

  python -m benchmarks.step_profile --threads 1
  python -m benchmarks.step_profile --threads 2 --variants default current_adam xla

Variants: ``default`` (fit's defaults), ``current_adam`` (``tf_keras``'s
current Adam, each variable's update as separate ops, instead of the legacy
Adam's fused kernel), ``no_average`` (no weight average), ``no_clip``, ``xla``
(``jit_compile=True``), ``forward_backward`` (loss and gradients only, no
update).  ``first call`` is the seconds of the first call (tracing and graph
optimization plus 5 steps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
import tf_keras

import tfp_realnvp
from tfp_realnvp.training import default_optimizer
from tfp_realnvp.training.averaging import WeightAverage
from tfp_realnvp.training.data import prepare
from tfp_realnvp.training.optimizer import build_slots, learning_rate_schedule
from tfp_realnvp.training.step import TrainingSteps

VARIANTS = ("default", "current_adam", "no_average", "no_clip", "xla", "forward_backward")


def _loop(name: str, x: np.ndarray, args) -> callable:
  """``run(n)``: n steps of variant ``name``."""
  flow = tfp_realnvp.RealNVP(2, seed=0, coupling=args.coupling, num_couplings=args.couplings,
                             hidden_units=tuple(args.hidden))
  flow.adapt(x)
  variables = list(flow.trainable_variables)
  data = prepare(flow, x, None, None, batch_size=args.batch, replicas=1, seed=0)
  if name == "forward_backward":
    iterator = iter(data.dataset)

    def body(i, total):
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow.log_prob(next(iterator)))
      grads = tape.gradient(loss, variables)
      return i + 1, total + loss + 0.0 * tf.add_n([tf.reduce_sum(g) for g in grads])

    loop = tf.function(lambda n: tf.while_loop(lambda i, t: i < n, body,
                                                (tf.constant(0), tf.constant(0.0)))[1])
    return lambda n: float(loop(tf.constant(n)))
  optimizer = default_optimizer(8000, clip_norm=None if name == "no_clip" else 10.0)
  if name == "current_adam":
    optimizer = tf_keras.optimizers.Adam(learning_rate_schedule(optimizer), global_clipnorm=10.0)
  build_slots(optimizer, variables)
  average = WeightAverage(variables, None if name == "no_average" else 0.99)
  return TrainingSteps(iter(data.dataset), flow.log_prob, variables, optimizer,
                       batch_size=args.batch, strategy=None, after_apply=average.update,
                       max_nonfinite_steps=100, lr_cut=None, lr_factor=None,
                       jit_compile=name == "xla", dtype=tf.float32)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
  parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
  parser.add_argument("--coupling", default="affine")
  parser.add_argument("--couplings", type=int, default=16)
  parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--block", type=int, default=50, help="steps per variant and round")
  args = parser.parse_args(argv)
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  x = np.asarray(tfp_realnvp.datasets.moons(27000, noise=0.05, seed=0), np.float32)
  loops, first = {}, {}
  for name in args.variants:
    loops[name] = _loop(name, x, args)
    start = time.perf_counter()
    loops[name](5)
    first[name] = time.perf_counter() - start
  times = {name: [] for name in loops}
  for _ in range(args.rounds):
    for name, run in loops.items():
      start = time.perf_counter()
      run(args.block)
      times[name].append((time.perf_counter() - start) / args.block * 1e3)
  base = np.array(times[args.variants[0]])
  header = "ratio to " + args.variants[0]
  print(f"{'variant':18s} {'ms/step':>8s} {header:>22s} {'first call':>11s}")
  result = {}
  for name, t in times.items():
    t = np.array(t)
    ratio = t / base
    result[name] = dict(ms=float(np.median(t)), ratio=float(np.median(ratio)),
                        first_call_s=first[name])
    print(f"{name:18s} {np.median(t):8.2f} {np.median(ratio):10.3f} "
          f"({ratio.min():.2f}-{ratio.max():.2f}) {first[name]:10.1f} s")
  return result


if __name__ == "__main__":
  main()
