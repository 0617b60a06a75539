"""Variational inference with a RealNVP surrogate posterior.

The target is a 2-D banana: a Gaussian ``z ~ N(0, diag(s1^2, s2^2))`` pushed
through the volume-preserving twist ``x = (z1, z2 + b (z1^2 - s1^2))``
(triangular Jacobian with a unit diagonal).  Its unnormalized density

    p~(x) = exp(-x1^2 / (2 s1^2) - (x2 - b (x1^2 - s1^2))^2 / (2 s2^2))

therefore integrates to ``Z = 2 pi s1 s2`` exactly, and its moments are known:
``E[x] = 0``, ``Var x1 = s1^2``, ``Var x2 = s2^2 + 2 b^2 s1^4``,
``Cov(x1, x2) = 0`` and ``E[x1^2 x2] = 2 b s1^4`` (the bend).

``tfp.vi.fit_surrogate_posterior`` fits the flow by maximizing the ELBO
``E_q[log p~(x) - log q(x)] <= log Z``; the gap ``log Z - ELBO`` is
``KL(q || p)``.

Run:  python examples/variational_inference.py --steps 2000
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

import tfp_realnvp  # noqa: E402


class Banana:
  """The twisted Gaussian target, with its exact log Z and moments."""

  def __init__(self, s1: float = 1.0, s2: float = 0.5, b: float = 1.0):
    self.s1, self.s2, self.b = float(s1), float(s2), float(b)

  def unnormalized_log_prob(self, x):
    x1, x2 = x[..., 0], x[..., 1]
    z2 = x2 - self.b * (x1**2 - self.s1**2)
    return -0.5 * (x1 / self.s1) ** 2 - 0.5 * (z2 / self.s2) ** 2

  @property
  def log_z(self) -> float:
    return math.log(2.0 * math.pi * self.s1 * self.s2)

  def moments(self) -> dict:
    s1, s2, b = self.s1, self.s2, self.b
    return {"mean": np.zeros(2),
            "cov": np.array([[s1**2, 0.0], [0.0, s2**2 + 2 * b**2 * s1**4]]),
            "e_x1sq_x2": 2 * b * s1**4}

  def sample(self, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z1 = rng.normal(0.0, self.s1, n)
    z2 = rng.normal(0.0, self.s2, n)
    return np.stack([z1, z2 + self.b * (z1**2 - self.s1**2)], axis=-1)


def sample_moments(x) -> dict:
  x = np.asarray(x, dtype=np.float64)
  return {"mean": x.mean(0), "cov": np.cov(x.T), "e_x1sq_x2": float(np.mean(x[:, 0] ** 2 * x[:, 1]))}


def bend_error(x, target, edges=np.linspace(-2.0, 2.0, 9)) -> float:
  """Largest error of E[x2 | x1 in bin] against the target's b (E[x1^2 | bin] - s1^2).

  The target's conditional mean of x2 given x1 is exactly b (x1^2 - s1^2); this
  checks that the samples bend the same way, bin by bin over x1 in [-2, 2].
  """
  x = np.asarray(x, dtype=np.float64)
  errors = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    inside = x[(x[:, 0] >= lo) & (x[:, 0] < hi)]
    if len(inside) >= 100:
      want = target.b * (np.mean(inside[:, 0] ** 2) - target.s1**2)
      errors.append(abs(np.mean(inside[:, 1]) - want))
  return float(max(errors))


def elbo(flow, target, n: int = 50000, seed=(11, 12)) -> tuple[float, float]:
  """Monte Carlo ELBO and its standard error."""
  x, log_q = flow.experimental_sample_and_log_prob(n, seed=seed)
  w = (target.unnormalized_log_prob(x) - log_q).numpy().astype(np.float64)
  return float(w.mean()), float(w.std() / math.sqrt(n))


def run(*, steps: int = 2000, sample_size: int = 256, learning_rate: float = 3e-3,
        num_couplings: int = 6, hidden_units=(32, 32), s1: float = 1.0, s2: float = 0.5,
        b: float = 1.0, eval_samples: int = 50000, seed: int = 0) -> dict:
  tf_keras.utils.set_random_seed(seed)
  target = Banana(s1, s2, b)
  flow = tfp_realnvp.RealNVP(2, num_couplings=num_couplings, hidden_units=hidden_units)
  schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.01)
  start = time.perf_counter()
  losses = tfp.vi.fit_surrogate_posterior(
      target.unnormalized_log_prob,
      surrogate_posterior=flow,
      optimizer=tf_keras.optimizers.Adam(schedule),
      num_steps=steps,
      sample_size=sample_size,
      seed=(seed, 1))
  seconds = time.perf_counter() - start
  value, stderr = elbo(flow, target, eval_samples)
  samples = flow.sample(eval_samples, seed=(seed, 2)).numpy()
  return {"log_z": target.log_z, "elbo": value, "elbo_stderr": stderr,
          "gap": target.log_z - value, "moments": sample_moments(samples),
          "bend_error": bend_error(samples, target),
          "true_moments": target.moments(), "losses": losses.numpy(),
          "train_seconds": seconds, "flow": flow, "target": target}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--sample-size", type=int, default=256)
  parser.add_argument("--learning-rate", type=float, default=3e-3)
  parser.add_argument("--num-couplings", type=int, default=6)
  parser.add_argument("--hidden-units", type=int, nargs="+", default=[32, 32])
  parser.add_argument("--eval-samples", type=int, default=50000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  r = run(steps=args.steps, sample_size=args.sample_size, learning_rate=args.learning_rate,
          num_couplings=args.num_couplings, hidden_units=tuple(args.hidden_units),
          eval_samples=args.eval_samples, seed=args.seed)
  m, t = r["moments"], r["true_moments"]
  print(f"fit_surrogate_posterior: {args.steps} steps in {r['train_seconds']:.1f} s")
  print(f"log Z = {r['log_z']:.4f}   ELBO = {r['elbo']:.4f} +- {r['elbo_stderr']:.4f}   "
        f"log Z - ELBO = {r['gap']:.4f} nats")
  print(f"mean        flow {np.round(m['mean'], 3)}   true {t['mean']}")
  print(f"cov         flow {np.round(m['cov'], 3).tolist()}   true {t['cov'].tolist()}")
  print(f"E[x1^2 x2]  flow {m['e_x1sq_x2']:.3f}   true {t['e_x1sq_x2']:.3f}")
  print(f"largest error of E[x2 | x1] over x1 in [-2, 2]: {r['bend_error']:.3f}")
  return r


if __name__ == "__main__":
  main()
