"""Class-conditional two moons: p(x | moon) with a conditional RealNVP.

The label of ``make_moons`` (0: outer arc, 1: inner arc), one-hot, is the
conditioning vector.  One flow learns both class-conditional densities; the
test NLL of each class is compared with the true per-moon density
(``tfp_realnvp.datasets.moons_arc_log_prob``), and samples are drawn for each
class with ``flow.sample(n, conditional_input=one_hot(k))``.  With several
conditions at once, ``flow.condition(one_hot([0, 1]))`` is a TFP distribution
of batch shape ``[2]`` whose ``sample(n)`` has shape ``[n, 2, 2]``: ``n`` draws
under each condition, as for any batch of TFP distributions.

Training is ``tfp_realnvp.fit(flow, x, conditional_input=one_hot(labels))``:
each batch's rows and their conditions travel together.

Run:  python examples/conditional_moons.py --steps 3000 --plot moons_by_class.png
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import tfp_realnvp  # noqa: E402
from tfp_realnvp.datasets import moons, moons_arc_log_prob  # noqa: E402

NUM_CLASSES = 2


def one_hot(labels) -> np.ndarray:
  return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels)]


def per_class_nll(flow, x, labels, noise: float) -> dict:
  """Test NLL of each class under the flow and under the true arc density."""
  out = {}
  for k in range(NUM_CLASSES):
    xk = x[labels == k]
    cond = one_hot(k)
    model = float(-tf.reduce_mean(flow.log_prob(xk, conditional_input=cond)))
    oracle = float(-np.mean(moons_arc_log_prob(xk, k, noise)))
    # how much the right label explains x better than the wrong one
    wrong = float(-tf.reduce_mean(flow.log_prob(xk, conditional_input=one_hot(1 - k))))
    out[k] = {"n": int(len(xk)), "nll": model, "oracle_nll": oracle, "gap": model - oracle,
              "nll_wrong_label": wrong}
  return out


def plot_samples(flow, x_test, labels, path: str, n: int = 1000, seed=(0, 1)) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True)
  colors = ["tab:blue", "tab:orange"]
  # n draws under each class: shape [n, NUM_CLASSES, 2]
  draws = flow.condition(one_hot(range(NUM_CLASSES))).sample(n, seed=seed).numpy()
  for k in range(NUM_CLASSES):
    pts = x_test[labels == k]
    axes[0].scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=colors[k], label=f"moon {k}")
    axes[1].scatter(draws[:, k, 0], draws[:, k, 1], s=2, alpha=0.5, color=colors[k],
                    label=f"condition(one_hot({k})) samples")
  axes[0].set_title("test data by class")
  axes[1].set_title("flow samples by class")
  for ax in axes:
    ax.legend(loc="lower left", markerscale=4, fontsize=8)
    ax.set_aspect("equal")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run(*, n_train: int = 20000, n_test: int = 5000, noise: float = 0.05, steps: int = 3000,
        batch_size: int = 256, num_couplings: int = 6, hidden_units=(64, 64),
        learning_rate: float = 2e-3, seed: int = 0, plot: str | None = None) -> dict:
  """Trains the class-conditional flow and returns its measurements."""
  tf_keras.utils.set_random_seed(seed)
  x, y = moons(n_train, noise=noise, seed=seed, return_labels=True)
  x_test, y_test = moons(n_test, noise=noise, seed=seed + 1, return_labels=True)
  flow = tfp_realnvp.RealNVP(2, num_couplings=num_couplings, hidden_units=hidden_units,
                             conditional_size=NUM_CLASSES)
  start = time.perf_counter()
  history = tfp_realnvp.fit(flow, x, conditional_input=one_hot(y), steps=steps,
                            batch_size=batch_size, learning_rate=learning_rate,
                            eval_every=100, seed=seed, progress=False)
  losses = history.train_nll
  seconds = time.perf_counter() - start
  result = {"per_class": per_class_nll(flow, x_test, y_test, noise), "losses": losses,
            "train_seconds": seconds, "flow": flow}
  if plot:
    plot_samples(flow, x_test, y_test, plot)
    result["plot"] = plot
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-train", type=int, default=20000)
  parser.add_argument("--n-test", type=int, default=5000)
  parser.add_argument("--noise", type=float, default=0.05)
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--num-couplings", type=int, default=6)
  parser.add_argument("--hidden-units", type=int, nargs="+", default=[64, 64])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--plot", default=None, help="write the per-class sample plot here (PNG)")
  args = parser.parse_args(argv)
  result = run(n_train=args.n_train, n_test=args.n_test, noise=args.noise, steps=args.steps,
               batch_size=args.batch_size, num_couplings=args.num_couplings,
               hidden_units=tuple(args.hidden_units), seed=args.seed, plot=args.plot)
  print(f"trained {args.steps} steps in {result['train_seconds']:.1f} s")
  print("class  n_test  flow NLL  oracle NLL   gap    NLL with wrong label")
  for k, r in result["per_class"].items():
    print(f"{k:>5}  {r['n']:>6}  {r['nll']:8.4f}  {r['oracle_nll']:10.4f}  {r['gap']:6.4f}"
          f"  {r['nll_wrong_label']:10.2f}")
  if args.plot:
    print(f"samples per class plotted to {args.plot}")
  return result


if __name__ == "__main__":
  main()
