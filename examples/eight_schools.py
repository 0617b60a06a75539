"""Eight Schools by variational inference with a RealNVP surrogate posterior.

The model (Rubin 1981; the Inference Gym's ``EightSchools``, centered form):

    avg_effect ~ N(0, 10),   log_stddev ~ N(5, 1),
    school_effects[j] ~ N(avg_effect, exp(log_stddev)),   j = 1..8,
    y[j] ~ N(school_effects[j], sigma[j])      (y, sigma observed).

A ``tfd.JointDistributionNamed`` pinned to the observations is the target;
``build_realnvp_surrogate_posterior`` takes its event shape (a dict of a
scalar, a scalar and an 8-vector) and its default event-space bijector, and
``tfp.vi.fit_surrogate_posterior`` fits it.  The posterior means and standard
deviations are printed next to the Inference Gym's ground truth (long MCMC
runs) when ``inference_gym`` is installed.

Run:  python examples/eight_schools.py --steps 3000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

from tfp_realnvp.training import default_optimizer  # noqa: E402
from tfp_realnvp.vi import build_realnvp_surrogate_posterior  # noqa: E402

tfd = tfp.distributions

EFFECTS = np.float32([28, 8, -3, 7, -1, 1, 18, 12])
STDDEVS = np.float32([15, 10, 16, 11, 9, 11, 10, 18])


def eight_schools():
  """The joint distribution pinned to the observed treatment effects."""
  model = tfd.JointDistributionNamed(dict(
      avg_effect=tfd.Normal(0.0, 10.0),
      log_stddev=tfd.Normal(5.0, 1.0),
      school_effects=lambda avg_effect, log_stddev: tfd.Independent(
          tfd.Normal(avg_effect[..., None] * tf.ones(8),
                     tf.exp(log_stddev)[..., None] * tf.ones(8)), 1),
      y=lambda school_effects: tfd.Independent(tfd.Normal(school_effects, STDDEVS), 1)))
  return model.experimental_pin(y=EFFECTS)


def ground_truth():
  """The Inference Gym's posterior means and sds, or None without inference_gym."""
  try:
    import inference_gym.using_tensorflow as gym  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  identity = gym.targets.EightSchools().sample_transformations["identity"]
  return identity.ground_truth_mean, identity.ground_truth_standard_deviation


def run(*, steps: int = 3000, sample_size: int = 256, learning_rate: float = 3e-3,
        num_couplings: int = 8, hidden_units=(64, 64), eval_samples: int = 20000,
        seed: int = 0) -> dict:
  tf_keras.utils.set_random_seed(seed)
  pinned = eight_schools()
  q = build_realnvp_surrogate_posterior(
      pinned.event_shape, pinned.experimental_default_event_space_bijector(),
      num_couplings=num_couplings, hidden_units=hidden_units, seed=seed)
  # Adam: a linear warm-up over the first 10% of the steps, then cosine decay; gradients
  # clipped to a global norm of 10 (one sample deep in a tail can otherwise kick Adam far off).
  optimizer = default_optimizer(steps, learning_rate=learning_rate, warmup_steps=steps // 10)
  start = time.perf_counter()
  losses = tfp.vi.fit_surrogate_posterior(
      pinned.unnormalized_log_prob, q, optimizer, num_steps=steps,
      sample_size=sample_size, seed=(seed, 1))
  seconds = time.perf_counter() - start
  x, log_q = q.experimental_sample_and_log_prob(eval_samples, seed=(seed, 2))
  w = (pinned.unnormalized_log_prob(x) - log_q).numpy().astype(np.float64)
  return {"elbo": float(w.mean()), "elbo_stderr": float(w.std() / np.sqrt(eval_samples)),
          "mean": {k: v.numpy().mean(0) for k, v in x.items()},
          "sd": {k: v.numpy().std(0) for k, v in x.items()},
          "losses": losses.numpy(), "seconds": seconds, "surrogate": q}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--sample-size", type=int, default=256)
  parser.add_argument("--learning-rate", type=float, default=3e-3)
  parser.add_argument("--num-couplings", type=int, default=8)
  parser.add_argument("--hidden-units", type=int, nargs="+", default=[64, 64])
  parser.add_argument("--eval-samples", type=int, default=20000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  r = run(steps=args.steps, sample_size=args.sample_size, learning_rate=args.learning_rate,
          num_couplings=args.num_couplings, hidden_units=tuple(args.hidden_units),
          eval_samples=args.eval_samples, seed=args.seed)
  print(f"fit_surrogate_posterior: {args.steps} steps in {r['seconds']:.1f} s; "
        f"ELBO = {r['elbo']:.3f} +- {r['elbo_stderr']:.3f}")
  truth = ground_truth()
  print(f"{'parameter':<18}{'VI mean':>9}{'VI sd':>8}" +
        (f"{'true mean':>11}{'true sd':>9}" if truth else "   (pip install inference-gym "
                                                         "for the ground truth)"))
  for name in ("avg_effect", "log_stddev", "school_effects"):
    mean, sd = np.atleast_1d(r["mean"][name]), np.atleast_1d(r["sd"][name])
    for j in range(mean.size):
      label = name if mean.size == 1 else f"{name}[{j}]"
      line = f"{label:<18}{mean[j]:9.2f}{sd[j]:8.2f}"
      if truth:
        line += f"{np.atleast_1d(truth[0][name])[j]:11.2f}{np.atleast_1d(truth[1][name])[j]:9.2f}"
      print(line)
  return r


if __name__ == "__main__":
  main()
