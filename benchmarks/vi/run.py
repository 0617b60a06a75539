"""Variational inference on Inference Gym targets: RealNVP against TFP's surrogates.

Run from the repository root:

    python -m benchmarks.vi --out DIR [--quick] [--targets A B ...] [--seeds N] [--steps N]

Every contestant is trained by ``tfp.vi.fit_surrogate_posterior`` (graph mode)
with the same optimizer (Adam: a linear warm-up over ``--warmup-fraction`` of
the steps, then cosine decay, gradients clipped to a global norm of
``--clip-norm``; ``tfp_realnvp.training.default_optimizer``), steps, Monte
Carlo sample size per step and seeds:

* ``realnvp_affine`` / ``realnvp_spline``: ``tfp_realnvp.vi.
  build_realnvp_surrogate_posterior`` with its VI defaults (affine, spline).
* ``mean_field`` / ``full_rank``: ``tfp.experimental.vi.
  build_affine_surrogate_posterior`` with ``operators="diag"`` / ``"tril"``.
* ``asvi``: ``build_asvi_surrogate_posterior(model.prior_distribution())``,
  only for targets with a prior (Bayesian models).
* ``iaf``: ``tfb.Invert(tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork))``
  of a standard normal, widths chosen for the parameter count of
  ``realnvp_affine``, in the same structure wrapper
  (``surrogate_posterior_from_flow``).
* ``tfp_realnvp_builtin``: ``tfb.RealNVP`` couplings with
  ``tfb.real_nvp_default_template`` networks and ``tfb.Permute`` reversals,
  same depth and widths as ours; the distribution tracks none of the
  templates' variables, so they are collected after a first call and passed
  to ``fit_surrogate_posterior(trainable_variables=...)``.

Metrics: a fresh ELBO estimate from ``--eval-samples`` samples with its
standard error; against the Gym's ground truth of the ``identity`` sample
transformation, the standardized errors ``|mean - gt_mean| / gt_sd`` and
``|sd / gt_sd - 1|`` (max and RMS over coordinates); the steady-state time per
step measured interleaved over contestants after training (blocks of steps,
round robin, median), as a ratio to ``mean_field`` (when it runs); the first step (and
second) at which the running mean of the training ELBO over a window of 5%
of the steps is within 0.1 nats of the final estimate; divergence (a
non-finite loss or final ELBO).  Wall times start at the end of the first
step (tracing and graph building, ``setup_seconds``, come before).  Output: ``results.json``, ``results.md`` and
``elbo_vs_wall_time.png`` in ``DIR``, rewritten after every target.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

from tfp_realnvp.files import atomic_write_json, atomic_write_text  # noqa: E402
from tfp_realnvp.training import default_optimizer  # noqa: E402
from tfp_realnvp.vi import build_realnvp_surrogate_posterior, surrogate_posterior_from_flow  # noqa: E402,E501

tfb, tfd = tfp.bijectors, tfp.distributions

TARGETS = ("Banana", "NealsFunnel", "EightSchools", "BrownianMotionMissingMiddleObservations",
           "StochasticVolatilitySP500Small", "SyntheticItemResponseTheory")
CONTESTANTS = ("realnvp_affine", "realnvp_spline", "mean_field", "full_rank", "asvi", "iaf",
               "tfp_realnvp_builtin")
OURS = dict(num_couplings=8, hidden_units=(64, 64))


def gym_target(model):
  """``model.unnormalized_log_prob`` as ``fit_surrogate_posterior`` calls it.

  It calls the target with ``**sample`` for a dict sample, ``*sample`` for a
  list or tuple and ``sample`` otherwise; a Gym model takes one structured
  argument.  (A namedtuple sample, like the Gym's ``StructTuple``, arrives
  whole.)
  """
  def target_log_prob_fn(*args, **kwargs):
    if kwargs:
      return model.unnormalized_log_prob(kwargs)
    return model.unnormalized_log_prob(args[0] if len(args) == 1 else list(args))
  return target_log_prob_fn


def _flat_event_size(model) -> int:
  shapes = tf.nest.map_structure(lambda s: tf.TensorShape(s).num_elements(), model.event_shape,
                                 expand_composites=False)
  return int(sum(tf.nest.flatten(shapes)))


def _iaf_width(d: int, params: int) -> int:
  # MADE with two hidden layers of width h: d*h + h + h*h + h + h*2d + 2d.
  a, b, c = 1.0, 3.0 * d + 2.0, 2.0 * d - params
  return max(8, int(round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))))


def build(name: str, model, d: int, seed: int):
  """(surrogate, trainable variables or None) for contestant ``name``."""
  shapes, bij = model.event_shape, model.default_event_space_bijector
  if name in ("realnvp_affine", "realnvp_spline"):
    coupling = "affine" if name == "realnvp_affine" else "spline"
    return build_realnvp_surrogate_posterior(shapes, bij, coupling=coupling, seed=seed,
                                             **OURS), None
  if name in ("mean_field", "full_rank"):
    return tfp.experimental.vi.build_affine_surrogate_posterior(
        shapes, operators="diag" if name == "mean_field" else "tril", bijector=bij,
        seed=(seed, 7)), None
  if name == "asvi":
    return tfp.experimental.vi.build_asvi_surrogate_posterior(
        model.prior_distribution(), seed=(seed, 7)), None
  if name == "iaf":
    ours = build_realnvp_surrogate_posterior(shapes, bij, **OURS)
    params = sum(int(np.prod(v.shape)) for v in ours.trainable_variables)
    made = tfb.AutoregressiveNetwork(params=2, hidden_units=[_iaf_width(d, params)] * 2,
                                     activation="relu")
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(d)),
                                       tfb.Invert(tfb.MaskedAutoregressiveFlow(made)))
    flow.sample(seed=(seed, 1))  # builds the network's variables
    return surrogate_posterior_from_flow(flow, shapes, bij), None
  if name == "tfp_realnvp_builtin":
    forward_order, templates = [], []
    for i in range(OURS["num_couplings"]):
      if i:
        forward_order.append(tfb.Permute(list(range(d))[::-1]))
      templates.append(tfb.real_nvp_default_template(list(OURS["hidden_units"]),
                                                     name=f"template_{seed}_{i}"))
      forward_order.append(tfb.RealNVP(num_masked=d // 2, shift_and_log_scale_fn=templates[-1]))
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(d)),
                                       tfb.Chain(forward_order[::-1]))
    flow.sample(seed=(seed, 1))  # the templates create their variables on first call
    q = surrogate_posterior_from_flow(flow, shapes, bij)
    return q, [v for t in templates for v in t.trainable_variables]
  raise ValueError(f"unknown contestant {name!r}; expected one of {CONTESTANTS}")


def applicable(name: str, model, d: int) -> bool:
  if name == "asvi":
    return hasattr(model, "prior_distribution")
  return d >= 2 or name not in ("iaf", "tfp_realnvp_builtin")


def _flatten_values(x):
  return np.concatenate([np.reshape(np.asarray(v, np.float64), [np.shape(v)[0], -1])
                         for v in tf.nest.flatten(x)], axis=-1)


def evaluate(model, q, target, n: int, seed: int) -> dict:
  """Fresh ELBO (with standard error) and standardized moment errors."""
  # In a graph: eagerly, TFP's built-in RealNVP (tf1 templates) fails after graph training
  # ("real_nvp_default_template/split:1 ... is out of scope").
  x, log_q = tf.function(lambda: q.experimental_sample_and_log_prob(n, seed=(seed, 99)))()
  w = np.asarray(_call(target, x) - log_q, np.float64)
  out = {"elbo": float(np.mean(w)), "elbo_stderr": float(np.std(w) / math.sqrt(n))}
  st = model.sample_transformations["identity"]
  values = _flatten_values(st(x))
  gt_mean = np.concatenate([np.ravel(v) for v in tf.nest.flatten(st.ground_truth_mean)])
  gt_sd = np.concatenate([np.ravel(v) for v in tf.nest.flatten(st.ground_truth_standard_deviation)])
  mean_err = np.abs(values.mean(0) - gt_mean) / gt_sd
  sd_err = np.abs(values.std(0) / gt_sd - 1.0)
  for key, err in (("mean_err", mean_err), ("sd_err", sd_err)):
    out[f"{key}_max"] = float(np.max(err))
    out[f"{key}_rms"] = float(np.sqrt(np.mean(err ** 2)))
  return out


def _call(target, x):
  return target(**x) if isinstance(x, dict) else target(x)


def train(model, q, variables, steps: int, sample_size: int, lr: float, warmup: float,
          clip_norm, seed: int):
  """fit_surrogate_posterior with a wall-clock stamp per step."""
  target = gym_target(model)
  optimizer = default_optimizer(steps, learning_rate=lr, warmup_steps=int(warmup * steps),
                                clip_norm=clip_norm)

  def trace_fn(traceable):
    with tf.control_dependencies([traceable.loss]):
      return traceable.loss, tf.timestamp()

  start = time.time()
  losses, stamps = tfp.vi.fit_surrogate_posterior(
      target, q, optimizer, num_steps=steps, sample_size=sample_size, trace_fn=trace_fn,
      trainable_variables=variables, seed=(seed, 1))
  stamps = stamps.numpy()
  # Wall time from the first step's end; tracing and graph building come before it.
  return -losses.numpy().astype(np.float64), stamps - stamps[0], stamps[0] - start, optimizer


def _time_per_step(models: dict, model, sample_size: int, rounds: int, block: int) -> dict:
  """Interleaved steady-state seconds per step (median over round-robin blocks)."""
  target, steps = gym_target(model), {}
  for name, (q, variables, optimizer) in models.items():
    variables = variables or q.trainable_variables

    @tf.function(autograph=False)
    def run_block(q=q, variables=variables, optimizer=optimizer):
      for i in range(block):
        with tf.GradientTape() as tape:
          loss = tfp.vi.monte_carlo_variational_loss(target, q, sample_size=sample_size,
                                                     seed=(i, 5))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss
    run_block()  # trace and warm up
    steps[name] = run_block
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, fn in steps.items():
      start = time.perf_counter()
      fn().numpy()
      times[name].append((time.perf_counter() - start) / block)
  return {name: float(np.median(t)) for name, t in times.items()}


def _to_within(elbo_trace, stamps, final: float, window: int):
  smooth = np.convolve(elbo_trace, np.ones(window) / window, mode="valid")
  hit = np.nonzero(smooth >= final - 0.1)[0]
  if not len(hit):
    return None, None
  step = int(hit[0]) + window
  return step, float(stamps[step - 1])


def run_target(tname: str, args) -> list[dict]:
  import inference_gym.using_tensorflow as gym  # pylint: disable=import-outside-toplevel
  model = getattr(gym.targets, tname)()
  d = _flat_event_size(model)
  rows, last = [], {}
  names = [c for c in args.contestants if applicable(c, model, d)]
  for seed in range(args.first_seed, args.first_seed + args.seeds):
    for name in names:
      tf_keras.utils.set_random_seed(seed)
      q, variables = build(name, model, d, seed)
      nparams = sum(int(np.prod(v.shape)) for v in (variables or q.trainable_variables))
      elbo_trace, stamps, setup, optimizer = train(
          model, q, variables, args.steps, args.sample_size, args.learning_rate,
          args.warmup_fraction, args.clip_norm, seed)
      row = dict(target=tname, contestant=name, seed=seed, dim=d, params=nparams,
                 steps=args.steps, train_seconds=float(stamps[-1]),
                 setup_seconds=float(setup))
      finite = bool(np.all(np.isfinite(elbo_trace)))
      row.update(evaluate(model, q, gym_target(model), args.eval_samples, seed))
      row["diverged"] = not (finite and np.isfinite(row["elbo"]))
      window = max(1, args.steps // 20)
      row["steps_to_0.1"], row["seconds_to_0.1"] = (
          _to_within(elbo_trace, stamps, row["elbo"], window) if not row["diverged"]
          else (None, None))
      step_idx = np.unique(np.linspace(0, args.steps - 1, 200).astype(int))
      row["median_step_seconds"] = float(np.median(np.diff(stamps[args.steps // 2:])))
      row["trace"] = {"step": step_idx.tolist(), "seconds": stamps[step_idx].tolist(),
                      "elbo": [float(v) if np.isfinite(v) else None
                               for v in elbo_trace[step_idx]]}
      rows.append(row)
      last[name] = (q, variables, optimizer)
      print(f"{tname:>40} {name:>20} seed {seed}: ELBO {row['elbo']:.3f} "
            f"+- {row['elbo_stderr']:.3f}  mean err max {row['mean_err_max']:.3f}  "
            f"sd err max {row['sd_err_max']:.3f}  {row['train_seconds']:.0f} s", flush=True)
  if args.timing_rounds:
    per_step = _time_per_step(last, model, args.sample_size, args.timing_rounds,
                              args.timing_block)
  else:  # not interleaved: median step time over the second half of each training run
    per_step = {name: float(np.median([r["median_step_seconds"] for r in rows
                                       if r["contestant"] == name])) for name in names}
  for row in rows:
    row["seconds_per_step"] = per_step[row["contestant"]]
    row["time_ratio_to_mean_field"] = (per_step[row["contestant"]] / per_step["mean_field"]
                                       if "mean_field" in per_step else None)
  return rows


def _median(rows, key):
  values = [r[key] for r in rows if r.get(key) is not None and not r["diverged"]]
  return float(np.median(values)) if values else None


def summarize(rows: list[dict]) -> list[dict]:
  """Medians over seeds per target and contestant."""
  out = []
  for tname in dict.fromkeys(r["target"] for r in rows):
    for name in dict.fromkeys(r["contestant"] for r in rows if r["target"] == tname):
      group = [r for r in rows if r["target"] == tname and r["contestant"] == name]
      summary = dict(target=tname, contestant=name, seeds=len(group), params=group[0]["params"],
                     diverged=sum(r["diverged"] for r in group))
      for key in ("elbo", "elbo_stderr", "mean_err_max", "mean_err_rms", "sd_err_max",
                  "sd_err_rms", "time_ratio_to_mean_field", "steps_to_0.1", "seconds_to_0.1"):
        summary[key] = _median(group, key)
      out.append(summary)
  return out


def _fmt(v, spec=".3f"):
  return "-" if v is None else format(v, spec)


def markdown(summary: list[dict], settings: dict) -> str:
  lines = ["# Variational inference on Inference Gym targets", "",
           "Command: `" + settings["command"] + "`", "",
           f"Settings: {settings['steps']} steps, {settings['sample_size']} samples per step, "
           f"Adam {settings['learning_rate']} ({settings['warmup_fraction']:.0%} warm-up, then "
           f"cosine decay; gradient norm clipped to {settings['clip_norm']}), "
           f"{settings['seeds']} seed(s), "
           f"final ELBO from {settings['eval_samples']} samples. Medians over seeds; errors "
           "are standardized by the ground-truth sd. Time per step: "
           + ("interleaved blocks after training." if settings["timing_rounds"] else
              "median over the second half of each training run (not interleaved)."), "",
           "| target | contestant | params | ELBO (s.e.) | mean err max / RMS | sd err max / RMS "
           "| time/step vs MF | steps (s) to 0.1 nats | diverged |",
           "|---|---|---|---|---|---|---|---|---|"]
  for s in summary:
    lines.append(
        f"| {s['target']} | {s['contestant']} | {s['params']} | {_fmt(s['elbo'])} "
        f"({_fmt(s['elbo_stderr'])}) | {_fmt(s['mean_err_max'])} / {_fmt(s['mean_err_rms'])} "
        f"| {_fmt(s['sd_err_max'])} / {_fmt(s['sd_err_rms'])} "
        f"| {_fmt(s['time_ratio_to_mean_field'], '.2f')} "
        f"| {_fmt(s['steps_to_0.1'], '.0f')} ({_fmt(s['seconds_to_0.1'], '.0f')}) "
        f"| {s['diverged']}/{s['seeds']} |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  targets = list(dict.fromkeys(r["target"] for r in rows))
  fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
  colors = dict(zip(CONTESTANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
  for ax, tname in zip(axes[0], targets):
    group = [r for r in rows if r["target"] == tname]
    finals = [r["elbo"] for r in group if np.isfinite(r["elbo"])]
    for r in group:
      elbo = np.array([np.nan if v is None else v for v in r["trace"]["elbo"]])
      ax.plot(r["trace"]["seconds"], elbo, color=colors[r["contestant"]], lw=1,
              label=r["contestant"] if r["seed"] == 0 else None)
    if finals:  # the interesting range: from well below the worst final ELBO to the best
      top, low = max(finals), min(finals)
      ax.set_ylim(low - 0.5 * (top - low) - 1.0, top + 0.2 * (top - low) + 0.5)
    ax.set_title(tname, fontsize=9)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("training ELBO (per-step estimate)")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for results.json/.md and the plot")
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: Banana and EightSchools, 30 steps, 2 contestants")
  parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
  parser.add_argument("--contestants", nargs="+", default=list(CONTESTANTS), choices=CONTESTANTS)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--first-seed", type=int, default=0,
                      help="seeds first-seed, ..., first-seed + seeds - 1 (to extend a run)")
  parser.add_argument("--steps", type=int, default=3000)
  # 256 samples and 3e-3: what a sweep of ours on Banana and NealsFunnel favoured (README).
  parser.add_argument("--sample-size", type=int, default=256)
  parser.add_argument("--learning-rate", type=float, default=3e-3)
  # A warm-up keeps every contestant's first, coherent Adam steps from overshooting (without it
  # a relu RealNVP diverged on StochasticVolatilitySP500Small within 12 steps).
  parser.add_argument("--warmup-fraction", type=float, default=0.1)
  # Clipping the global gradient norm before Adam: one sample far in a flow's tail can give a
  # gradient many orders above the others, and Adam then takes several oversized steps along it.
  parser.add_argument("--clip-norm", type=float, default=10.0,
                      help="clip each step's global gradient norm to this (0: no clipping)")
  parser.add_argument("--eval-samples", type=int, default=10000)
  parser.add_argument("--timing-rounds", type=int, default=5,
                      help="0: time per step from the training runs (not interleaved)")
  parser.add_argument("--timing-block", type=int, default=10)
  args = parser.parse_args(argv)
  args.clip_norm = args.clip_norm or None
  if args.quick:
    args.targets, args.contestants = ["Banana", "EightSchools"], ["realnvp_affine", "mean_field"]
    args.seeds, args.steps, args.sample_size, args.eval_samples = 1, 30, 8, 500
    args.timing_rounds, args.timing_block = 2, 2
  os.makedirs(args.out, exist_ok=True)
  settings = dict(vars(args), command="python -m benchmarks.vi " + " ".join(
      sys.argv[1:] if argv is None else argv))
  rows: list[dict] = []
  results = {}
  for tname in args.targets:
    rows += run_target(tname, args)
    results = {"settings": settings, "summary": summarize(rows), "runs": rows}
    atomic_write_json(os.path.join(args.out, "results.json"), results, allow_nan=True)
    atomic_write_text(os.path.join(args.out, "results.md"), markdown(results["summary"], settings))
    plot(rows, os.path.join(args.out, "elbo_vs_wall_time.png"))
  return results
