"""The comparison's report: ``results.json`` (:func:`assemble`), ``results.md``
(:func:`write_markdown`) and ``nll_vs_wall_time.png`` (:func:`plot_nll_vs_wall_time`)."""

from __future__ import annotations

import datetime
import os

from benchmarks.bench.report import machine_info
from benchmarks.bench.stats import median_worst
from benchmarks.peers import summary
from benchmarks.peers.settings import CONTESTANTS, GAP_THRESHOLDS, LIBRARIES

__all__ = ["SCHEMA_VERSION", "NOTES", "OWN_RECIPES", "assemble", "write_markdown",
           "plot_nll_vs_wall_time"]

SCHEMA_VERSION = 1

#: Each library's own recipe: what its snippet (benchmarks/peers/snippets/) does.
OWN_RECIPES = {
    "ours": "RealNVP(2) and fit(flow, x) with their defaults (the matched settings, "
            "without validation)",
    "flowjax": "coupling_flow defaults (8 affine couplings, width 50, depth 1, Normal base) "
               "and fit_to_data defaults (Adam 5e-4, batch 100, up to 100 epochs, 10% held "
               "out, patience 5, best weights), standardized by hand",
    "zuko": "RealNVP(2) defaults (3 couplings of (64, 64)), the Train-from-data tutorial's "
            "loop (DataLoader of 64, Adam 1e-3, 8 epochs), standardized by hand",
}

#: How each figure was measured (``results.json``'s ``notes``, the end of ``results.md``).
NOTES = {
    "data": (
        "The parent writes one .npz per seed with the built-in benchmark's points "
        "(benchmarks.bench.contestants.training_data and fixed_sets: the same sizes, noise "
        "and seeds) and the oracle NLLs; every worker reads it. The peers train on the data "
        "standardized by the training set's mean and standard deviation and their NLLs are "
        "converted back to data units (+ sum(log std)); ours standardizes inside the flow "
        "(adapt). Every gap is to the oracle (true density) NLL of the same points, in nats."),
    "matched_training": (
        "Every contestant: the same steps, batch and learning-rate schedule (Adam, linear "
        "warm-up from 1% of the peak, cosine decay; ours' default_optimizer's formula, "
        "one table for optax and torch's LambdaLR), gradients clipped to the global norm, "
        "Adam epsilon 1e-7 (tf_keras's; it adds it to the uncorrected sqrt(v), optax and torch "
        "to the corrected one), the weight average of ours (decay min(0.99, (1+n)/(10+n))) "
        "validated every eval_every steps and its best validation kept and tested. Ours: "
        "tfp_realnvp.fit with its defaults. FlowJAX: its own training step "
        "(flowjax.train.train_utils.step, the one fit_to_data runs) in a loop of steps, since "
        "fit_to_data runs whole epochs of its own split and reports no curve; optax has no "
        "weight average, so it is two lines in the compiled step. zuko: a plain PyTorch loop "
        "(clip_grad_norm_, LambdaLR, AveragedModel). Only ours skips non-finite steps."),
    "architecture": (
        "Couplings and widths of ours' defaults. Affine: tfp_realnvp's soft-bounded "
        "log-scale, FlowJAX's Affine (softplus scale), zuko's MonotonicAffineTransform. "
        "Spline: rational-quadratic splines on [-bound, bound], ours and zuko with `bins` "
        "bins; FlowJAX's RationalQuadraticSpline(knots=bins) has bins + 1 bins (its knots "
        "are inner knots), hence its extra parameters. FlowJAX's coupling_flow and zuko's "
        "NICE/RealNVP alternate the conditioning half as ours' reversals do."),
    "wall_time": (
        "Training wall time from the start of the run (including the first step's tracing "
        "or compilation), without the validations: the peers time their steps only, and "
        "fit's validations are timed and subtracted from its history's times."),
    "step_time": (
        "All contestants' processes are started, built and warmed up; then, round after "
        "round, each in turn (order rotating) takes a block of timing_block steps. Per-step "
        "time: median over rounds; ratios: ours' time over the peer's in the same round, "
        "median (min-max). Once with one thread each (every process pinned to CPU 0; "
        "TensorFlow intra/inter-op threads 1, torch.set_num_threads(1), XLA_FLAGS "
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1, OMP/MKL/OpenBLAS "
        "1), once with each library's default threads. Ours runs fit's compiled step loop "
        "(TrainingSteps, as fit sets it up)."),
    "throughput": (
        "Points per second of log_prob on throughput_points points and of sample of as "
        "many, in one call: the median of throughput_repeats calls after a compiling one; "
        "ours as tf.function graphs (and compiled by XLA, reported apart), FlowJAX under "
        "equinox.filter_jit, zuko as is under torch.no_grad. Default threads, one process "
        "at a time."),
    "startup": (
        "A fresh process per sample, alone on the machine, default threads (the first: "
        "each contestant's training process, before its runs): seconds from just before the "
        "process started until its imports were done, its model built (ours: RealNVP and "
        "adapt) and its first training step finished (ours: fit(steps=1); the peers: their "
        "first compiled step)."),
    "memory": (
        "Peak resident memory (VmHWM; ru_maxrss would carry the parent's peak across fork "
        "and exec) of each contestant's training process after its first run and at its "
        "end, and of its one-thread timing process."),
    "user_lines": (
        "Non-blank, non-comment lines of each library's snippet (benchmarks/peers/snippets/: "
        "load data, build, train, print the test NLL, sample), without its docstring and the "
        "lines marked as the benchmark's plumbing."),
}


def assemble(settings, *, command: str, total_seconds: float, oracle: dict, trained: dict,
             windows: dict, startup: dict, own: dict, lines: dict, phase_seconds: dict) -> dict:
  """The ``results.json`` document from the phases' raw results (see :mod:`phases`)."""
  contestants = {}
  for name, result in trained.items():
    runs = [summary.with_gaps(r, oracle["val_nll"], oracle["test_nll"]) for r in result["runs"]]
    library, coupling = CONTESTANTS[name]
    contestants[name] = {
        "library": library, "coupling": coupling, "runs": runs,
        "quality": summary.quality(runs),
        "memory": {"training_after_first_run_mb": result["rss_after_first_run_mb"],
                   "training_peak_mb": result["peak_rss_mb"],
                   "timing_one_thread_peak_mb": windows["1"]["peak_rss_mb"].get(name)}}
  parameters = summary.parameter_match({n: c["runs"][0]["parameters"]
                                        for n, c in contestants.items()})
  for name, entry in parameters.items():
    contestants[name]["parameters"] = entry
  step_time = {threads: summary.step_times(w) for threads, w in windows.items()}
  own_recipes = {}
  for library, runs in own.items():
    runs = [dict(r, gap=r["test_nll"] - oracle["test_nll"]) for r in runs]
    own_recipes[library] = {
        "recipe": OWN_RECIPES[library], "runs": runs,
        "gap": median_worst([r["gap"] for r in runs]),
        "wall_seconds": median_worst([r["wall_seconds"] for r in runs])}
  versions = {CONTESTANTS[n][0]: r["versions"] for n, r in trained.items()}
  startup = {name: summary.startup(samples) for name, samples in startup.items()}
  return {
      "schema_version": SCHEMA_VERSION, "mode": settings.mode, "command": command,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "total_seconds": total_seconds, "phase_seconds": phase_seconds,
      "machine": machine_info(), "versions": versions,
      "settings": settings.to_json(), "oracle": oracle, "contestants": contestants,
      "step_time": step_time, "step_time_rounds": windows,
      "throughput": summary.throughput_ratios(windows["default"]["throughput"]),
      "startup": startup, "own_recipe": own_recipes, "user_lines": lines,
      "targets": summary.targets(contestants, step_time, startup), "notes": dict(NOTES)}


def _f(value, digits: int = 3, suffix: str = "", none: str = "never") -> str:
  return none if value is None else f"{value:.{digits}f}{suffix}"


def _mw(stats: dict, digits: int = 3, suffix: str = "", none: str = "never") -> str:
  return f"{_f(stats['median'], digits, suffix, none)} / {_f(stats['worst'], digits, suffix, none)}"


def _si(value) -> str:
  for scale, prefix in ((1e6, "M"), (1e3, "k")):
    if abs(value) >= scale:
      return f"{value / scale:.3g}{prefix}"
  return f"{value:.3g}"


def _ratio(entry: dict | None) -> str:
  if entry is None:
    return "—"
  return f"{entry['median']:.2f} ({entry['min']:.2f}–{entry['max']:.2f})"


def _versions(results: dict) -> str:
  names = {"ours": ("tensorflow", "tensorflow-probability", "tf-keras"),
           "flowjax": ("flowjax", "jax", "jaxlib", "equinox", "optax"), "zuko": ("zuko", "torch")}
  parts = []
  for library, v in results["versions"].items():
    packages = ", ".join(f"{p} {v['packages'][p]}" for p in names[library])
    parts.append(f"{LIBRARIES[library]['label']}: {packages} (Python {v['python']})")
  return "; ".join(parts)


def _header(results: dict) -> list:
  s, m, o = results["settings"], results["machine"], results["oracle"]
  return [
      f"# tfp_realnvp against FlowJAX and zuko ({results['mode']} mode)", "",
      f"Command: `{results['command']}`  ",
      f"Machine: {m.get('cpu_model', m['machine'])}, {m.get('affinity_cpus', m['cpu_count'])} "
      f"CPUs usable, {m['platform']}, load average at the start "
      f"{', '.join(f'{x:.2f}' for x in m.get('load_average_at_start', []))}.  ",
      f"Versions: {_versions(results)}.  ",
      f"Data: two moons, noise {s['noise']}, {s['n_train']} training points per seed, "
      f"{s['n_val']} validation and {s['n_test']} test points; oracle NLL: test "
      f"{o['test_nll']:.4f}, validation {o['val_nll']:.4f} nats.  ",
      f"Matched: {s['num_couplings']} couplings of {tuple(s['hidden_units'])}, splines of "
      f"{s['spline_bins']} bins on ±{s['spline_bound']:g}; {s['steps']} steps of "
      f"{s['batch_size']} points, Adam peak {s['learning_rate']:g}, {s['warmup_steps']} warm-up "
      f"steps, cosine decay to {s['final_learning_rate_fraction']:g}, clip norm "
      f"{s['clip_norm']:g}, weight average {s['ema_decay']:g}; validation every "
      f"{s['eval_every']} steps; seeds {s['seeds']}.  ",
      f"Total run time: {results['total_seconds'] / 60:.1f} min.", ""]


def _quality(results: dict) -> list:
  t = GAP_THRESHOLDS
  seeds = len(results["settings"]["seeds"])
  lines = [f"## Quality at the matched architecture (median / worst over {seeds} "
           f"seed{'s' if seeds > 1 else ''})", "",
           f"| contestant | parameters (vs ours) | test gap (nats) | time to gap ≤ {t[0]} | "
           f"steps to gap ≤ {t[0]} | time to gap ≤ {t[1]} | steps to gap ≤ {t[1]} | "
           "training time | diverged |", "|---|---|---|---|---|---|---|---|---|"]
  for name, c in results["contestants"].items():
    q, p = c["quality"], c["parameters"]
    rel = "" if p["relative_to_ours"] is None else f" ({100 * p['relative_to_ours']:+.1f}%)"
    lines.append(
        f"| {name} | {p['parameters']:,}{rel} | {_mw(q['gap'], 4, none='n/a')} | "
        f"{_mw(q[f'time_to_gap_{t[0]}_s'], 1, ' s')} | {_mw(q[f'steps_to_gap_{t[0]}'], 0)} | "
        f"{_mw(q[f'time_to_gap_{t[1]}_s'], 1, ' s')} | {_mw(q[f'steps_to_gap_{t[1]}'], 0)} | "
        f"{_mw(q['train_seconds'], 1, ' s')} | {q['diverged_runs']}/{len(q['seeds'])} |")
  return lines


def _speed(results: dict) -> list:
  st, rounds = results["step_time"], results["step_time_rounds"]
  block, n_rounds = rounds["1"]["block"], len(rounds["1"]["rounds"])
  lines = ["", f"## Time per step, interleaved ({n_rounds} rounds of {block} steps)", "",
           "ms per step (median over rounds); ours' time / the peer's in the same round, "
           "median (min–max): above 1, ours is slower.", "",
           "| contestant | 1 thread (ms) | ours / peer | default threads (ms) | ours / peer |",
           "|---|---|---|---|---|"]
  for name in st["1"]:
    one, default = st["1"][name], st["default"][name]
    lines.append(f"| {name} | {one['median_ms']:.2f} | {_ratio(one.get('ours_over_peer'))} | "
                 f"{default['median_ms']:.2f} | {_ratio(default.get('ours_over_peer'))} |")
  lines += ["", "## Throughput (default threads, one call of "
            f"{next(iter(results['throughput'].values()))['points']:,} points)", "",
            "Points per second; ours' rate / the peer's: above 1, ours is faster. Ours: "
            "tf.function graphs (XLA in brackets).", "",
            "| contestant | log_prob | sample | ours / peer, log_prob | ours / peer, sample |",
            "|---|---|---|---|---|"]
  for name, th in results["throughput"].items():
    xla = f" ({_si(th['log_prob_xla'])})" if "log_prob_xla" in th else ""
    xla_s = f" ({_si(th['sample_xla'])})" if "sample_xla" in th else ""
    ratio = th.get("ours_over_peer")
    ratios = f"{ratio['log_prob']:.2f} | {ratio['sample']:.2f}" if ratio else "— | —"
    lines.append(f"| {name} | {_si(th['log_prob'])}{xla} | {_si(th['sample'])}{xla_s} | "
                 f"{ratios} |")
  return lines


def _startup_and_memory(results: dict) -> list:
  lines = ["", f"## Start-up (seconds from the process's start, median of "
           f"{results['settings']['startup_repeats']})", "",
           "| contestant | imports done | model built | first step done |", "|---|---|---|---|"]
  for name, s in results["startup"].items():
    m = s["median"]
    lines.append(f"| {name} | {m['imported']:.1f} | {m['built']:.1f} | {m['first_step']:.1f} |")
  lines += ["", "## Peak memory (MiB)", "",
            "| contestant | training process, after its first run | at its end | "
            "one-thread timing process |", "|---|---|---|---|"]
  for name, c in results["contestants"].items():
    m = c["memory"]
    lines.append(f"| {name} | {m['training_after_first_run_mb']:.0f} | "
                 f"{m['training_peak_mb']:.0f} | "
                 f"{_f(m['timing_one_thread_peak_mb'], 0, none='—')} |")
  return lines


def _own_recipes(results: dict) -> list:
  own = results["own_recipe"]
  seeds = len(results["settings"]["own_seeds"])
  lines = ["", f"## Each library's own recipe ({seeds} seed{'s' if seeds > 1 else ''}; "
           "median / worst)", "",
           "What a user gets from the documented defaults: the snippets in "
           "`benchmarks/peers/snippets/`, run as programs (wall time: the whole process).", "",
           "| library | recipe | test gap (nats) | process wall time | user lines |",
           "|---|---|---|---|---|"]
  for library, r in own.items():
    lines.append(f"| {LIBRARIES[library]['label']} | {r['recipe']} | "
                 f"{_mw(r['gap'], 4, none='n/a')} | {_mw(r['wall_seconds'], 1, ' s')} | "
                 f"{results['user_lines'][library]} |")
  return lines


def _target_figures(target: dict) -> str:
  """``ours 0.007, flowjax_affine 0.012`` or ``ratio 1.24``: a target's figures, readable."""
  if "medians" in target:
    return ", ".join(f"{name} {'never' if v is None else f'{v:.4g}'}"
                     for name, v in target["medians"].items())
  return ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in target.items() if k != "met")


def _targets(results: dict) -> list:
  lines = ["", "## Targets", ""]
  for key, t in results["targets"].items():
    lines.append(f"- {key.replace('_', ' ')}: {_target_figures(t)}: "
                 f"**{'met' if t['met'] else 'missed'}**")
  lines += ["", "## How it was measured", ""]
  lines += [f"- {key.replace('_', ' ')}: {text}" for key, text in results["notes"].items()]
  return lines


def write_markdown(results: dict) -> str:
  """The tables of ``results.md``."""
  lines = (_header(results) + _quality(results) + _speed(results)
           + _startup_and_memory(results) + _own_recipes(results) + _targets(results))
  return "\n".join(lines) + "\n"


COLORS = {"ours": "tab:blue", "flowjax": "tab:orange", "zuko": "tab:green"}


def plot_nll_vs_wall_time(results: dict, path) -> None:
  """Validation NLL against training wall time, every seed, one panel per coupling."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  oracle = results["oracle"]["val_nll"]
  finals = [v for c in results["contestants"].values() for run in c["runs"]
            for v in run["history"]["val_nll"][-1:] if v is not None]
  top = max([oracle + 0.3] + [v + 0.1 for v in finals])
  couplings = sorted({c["coupling"] for c in results["contestants"].values()})
  fig, axes = plt.subplots(1, len(couplings), figsize=(6 * len(couplings), 5), squeeze=False)
  for ax, coupling in zip(axes[0], couplings):
    for name, c in results["contestants"].items():
      if c["coupling"] != coupling:
        continue
      for i, run in enumerate(c["runs"]):
        pairs = [(w, v) for w, v in zip(run["history"]["wall_time"], run["history"]["val_nll"])
                 if v is not None and w > 0]
        if pairs:
          ax.plot(*zip(*pairs), color=COLORS[c["library"]], alpha=0.7, linewidth=1.2,
                  label=None if i else name)
    for gap, style in ((0.0, "--"), (GAP_THRESHOLDS[0], ":"), (GAP_THRESHOLDS[1], "-.")):
      ax.axhline(oracle + gap, color="k", linestyle=style, linewidth=0.8,
                 label="oracle" if not gap else f"oracle + {gap}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(oracle - 0.02, top)
    ax.set_xlabel("training wall time (s, log scale; without validations)")
    ax.set_ylabel("validation NLL (nats)")
    ax.set_title(f"{coupling} couplings, matched architecture")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.fspath(path), dpi=120)
  plt.close(fig)
