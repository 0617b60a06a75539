"""Conditional density estimation end to end with Keras ``model.fit``.

A heteroscedastic toy problem: ``x ~ U(-2, 2)`` and, given ``x``, a 2-D target

    y | x ~ N(mu(x), diag(sigma(x)^2)),
    mu(x) = (sin(2 x), x / 2),   sigma(x) = (0.05 + 0.2 |x|, 0.25 - 0.1 |x|),

so its spread grows with ``|x|`` in one coordinate and shrinks in the other.

A ``tf_keras.Model`` maps ``x`` to a conditioning vector ``h(x)``, and a
conditional RealNVP, an attribute of the model, gives ``p(y | h(x))``.  The
loss is ``-flow.log_prob(y, conditional_input=h)``; because Keras tracks the
flow's variables as the model's, ``model.fit`` trains the encoder and the flow
together.  ``flow.condition(h)`` is ``p(y | x)`` as a TFP distribution of batch
shape ``[m]`` for ``m`` inputs: its ``sample(n)`` has shape ``[n, m, 2]``.

Run:  python examples/keras_conditional.py --epochs 40
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

import tfp_realnvp  # noqa: E402


def mu(x):
  return np.stack([np.sin(2.0 * x), 0.5 * x], axis=-1)


def sigma(x):
  return np.stack([0.05 + 0.2 * np.abs(x), 0.25 - 0.1 * np.abs(x)], axis=-1)


def make_data(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-2.0, 2.0, size=n)
  y = mu(x) + sigma(x) * rng.standard_normal((n, 2))
  return x[:, None].astype(np.float32), y.astype(np.float32)


def true_nll(x, y) -> float:
  """Mean -log p(y | x) under the generating process."""
  x = np.asarray(x, np.float64)[:, 0]
  s = sigma(x)
  z = (np.asarray(y, np.float64) - mu(x)) / s
  return float(np.mean(0.5 * np.sum(z**2, -1) + np.sum(np.log(s), -1) + np.log(2 * np.pi)))


class ConditionalDensityModel(tf_keras.Model):
  """``x -> h(x)``; the flow attribute turns ``h(x)`` into ``p(y | x)``."""

  def __init__(self, conditional_size: int = 8, hidden: int = 64, num_couplings: int = 4,
               flow_hidden_units=(64, 64)):
    super().__init__()
    self.encoder = tf_keras.Sequential([
        tf_keras.layers.Dense(hidden, activation="relu"),
        tf_keras.layers.Dense(hidden, activation="relu"),
        tf_keras.layers.Dense(conditional_size),
    ])
    self.flow = tfp_realnvp.RealNVP(2, num_couplings=num_couplings,
                                    hidden_units=flow_hidden_units,
                                    conditional_size=conditional_size)

  def call(self, x):
    return self.encoder(x)

  def nll(self, y, h):
    """The Keras loss: per-example ``-log p(y | h)``."""
    return -self.flow.log_prob(y, conditional_input=h)

  def conditional(self, x):
    """``p(y | x)`` at the inputs ``x`` (shape ``[m]``): a TFP distribution of batch
    shape ``[m]``, so ``.sample(n)`` has shape ``[n, m, 2]``."""
    return self.flow.condition(self(np.asarray(x, np.float32).reshape(-1, 1)))


def run(*, n_train: int = 20000, n_test: int = 5000, epochs: int = 40, batch_size: int = 256,
        learning_rate: float = 2e-3, conditional_size: int = 8, num_couplings: int = 4,
        flow_hidden_units=(64, 64), seed: int = 0, verbose: int = 0) -> dict:
  tf_keras.utils.set_random_seed(seed)
  x, y = make_data(n_train, seed)
  x_test, y_test = make_data(n_test, seed + 1)
  model = ConditionalDensityModel(conditional_size, num_couplings=num_couplings,
                                  flow_hidden_units=flow_hidden_units)
  model.flow.adapt(y)  # normalize y; the loc/scale are non-trainable model variables
  model(x[:1])
  steps = epochs * (n_train // batch_size)
  model.compile(
      optimizer=tf_keras.optimizers.Adam(
          tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)),
      loss=model.nll)
  start = time.perf_counter()
  history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, shuffle=True)
  seconds = time.perf_counter() - start
  test_nll = float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0))

  # predicted spread of y at a few inputs, from 4000 flow samples each
  probe = np.array([-1.75, -1.0, 0.0, 1.0, 1.75], np.float32)
  draws = model.conditional(probe).sample(4000, seed=(seed, 5)).numpy()  # [4000, 5, 2]
  return {
      "loss": history.history["loss"], "test_nll": test_nll,
      "true_test_nll": true_nll(x_test, y_test), "train_seconds": seconds,
      "probe_x": probe, "predicted_std": draws.std(axis=0), "true_std": sigma(probe),
      "predicted_mean": draws.mean(axis=0), "true_mean": mu(probe),
      "num_model_variables": len(model.trainable_variables),
      "num_flow_variables": len(model.flow.trainable_variables),
      "model": model,
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-train", type=int, default=20000)
  parser.add_argument("--epochs", type=int, default=40)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--num-couplings", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--verbose", type=int, default=0)
  args = parser.parse_args(argv)
  r = run(n_train=args.n_train, epochs=args.epochs, batch_size=args.batch_size,
          num_couplings=args.num_couplings, seed=args.seed, verbose=args.verbose)
  print(f"model.fit: {args.epochs} epochs in {r['train_seconds']:.1f} s; the model has "
        f"{r['num_model_variables']} trainable variables, {r['num_flow_variables']} of them "
        "the flow's")
  print(f"test NLL {r['test_nll']:.4f}   true conditional NLL {r['true_test_nll']:.4f}   "
        f"gap {r['test_nll'] - r['true_test_nll']:.4f}")
  print("   x    predicted std (y1, y2)   true std (y1, y2)")
  for x, p, t in zip(r["probe_x"], r["predicted_std"], r["true_std"]):
    print(f"{x:5.2f}   ({p[0]:.3f}, {p[1]:.3f})           ({t[0]:.3f}, {t[1]:.3f})")
  return r


if __name__ == "__main__":
  main()
