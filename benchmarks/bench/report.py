"""The benchmark's report: ``results.json`` (:func:`assemble`), ``results.md``
(:func:`write_markdown`) and ``nll_vs_wall_time.png`` (:func:`plot_nll_vs_wall_time`)."""

from __future__ import annotations

import datetime
import math
import os
import pathlib
import platform

from benchmarks.bench.settings import LABELS, WORKERS, BenchSettings

__all__ = ["SCHEMA_VERSION", "NOTES", "assemble", "write_markdown", "plot_nll_vs_wall_time",
           "machine_info"]

# 2: settings hold the flow's options (``flow``) and training's (``training``) as objects.
SCHEMA_VERSION = 2

#: How each figure was measured (``results.json``'s ``notes``, the end of ``results.md``).
NOTES = {
    "flop_counting": (
        "2*in*out FLOPs per dense layer per point, forward (summed over the rank-2 "
        "weight matrices of the trained variables); x3 for forward+backward; every "
        "coupling network counted once per log_prob. TFP's tfb.RealNVP calls its "
        "network in _inverse and again in _inverse_log_det_jacobian: XLA merges the "
        "forward passes but backpropagates through both, so the matmul FLOPs it executes "
        "are higher (executed_matmul_flops_per_step: sum over the dot ops of the "
        "XLA-optimized HLO of one gradient step, over the XLA step time). Ours "
        "(FusedRealNVP) calls it once. Without XLA nothing merges the two forward "
        "passes, so the built-in then executes more still."),
    "builtin_variables": (
        "tfd.TransformedDistribution tracks none of real_nvp_default_template's "
        "variables (TFP issue 1439); they are collected from the templates after a first "
        "log_prob call and passed to fit(trainable_variables=...)."),
    "standardization": (
        "All contestants see the data through the same fixed per-feature "
        "standardization (ours: RealNVP.adapt; others: equal Shift/Scale bijectors), "
        "so every NLL is in data units."),
    "wall_time": (
        "Wall time of fit from its start, including tracing and compilation and the "
        "validation evaluations; the validation NLL is that of the moving average of "
        "the weights (fit's ema_decay), which fit validates and returns."),
    "optimizer": (
        "Every contestant trains through tfp_realnvp.fit with the same settings: Adam "
        "with warm-up and cosine decay, clip norm, weight averaging, skipped "
        "non-finite steps, all from the package's TrainingOptions (settings.training); "
        "only the learning rate (and the book's batch size) differ."),
    "step_time": (
        "Median over timing_chunks epochs of timing_chunk steps of fit without "
        "validation, after the first (compiling) epoch; learning rate "
        "timing_learning_rate for all, so no step is skipped."),
    "peak_memory": (
        "peak_rss_mb: ru_maxrss of the model's own process after its first training run "
        "(TF runtime, data, one fit); process_peak_rss_mb: at the end of the process "
        "(all runs, the throughput batches); rss_after_import_mb: after importing TF, TFP "
        "and tfp_realnvp."),
    "throughput": (
        "points per second of log_prob and of sample on throughput_points points in one "
        "call, tf.function with XLA and without (graph); median of throughput_repeats "
        "calls after a compiling one."),
}


def _fmt(value, digits: int = 3, suffix: str = "", never: str = "never") -> str:
  if value is None:
    return never
  if isinstance(value, float) and abs(value) >= 1e5:
    return f"{value:.3g}{suffix}"
  return f"{value:.{digits}f}{suffix}"


def _fmt_mw(stats: dict, digits: int = 3, suffix: str = "", never: str = "never") -> str:
  return (f"{_fmt(stats['median'], digits, suffix, never)} / "
          f"{_fmt(stats['worst'], digits, suffix, never)}")


def _si(value, unit: str = "") -> str:
  if value is None:
    return "n/a"
  for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= scale:
      return f"{value / scale:.3g} {prefix}{unit}"
  return f"{value:.3g} {unit}".strip()


# ---------------------------------------------------------------------------
# Worker side: everything below imports TensorFlow lazily.
def machine_info() -> dict:
  info = {"platform": platform.platform(), "machine": platform.machine(),
          "python": platform.python_version(), "cpu_count": os.cpu_count()}
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        info["cpu_model"] = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  try:
    info["affinity_cpus"] = len(os.sched_getaffinity(0))
  except AttributeError:
    pass
  try:
    info["load_average_at_start"] = list(os.getloadavg())
  except OSError:
    pass
  from importlib import metadata
  for package in ("tensorflow", "tensorflow-probability", "tf-keras", "numpy"):
    try:
      info[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      info[package] = None
  return info


def _contestant_entries(settings: BenchSettings, workers: dict, peak: float) -> dict:
  """Each contestant's runs and quality with its model's figures (of its worker)."""
  contestants = {}
  for worker, names in WORKERS.items():
    result = workers[worker]
    model = result["model"]
    flops = model["flops"]
    executed = flops["executed_matmul_flops_per_s"]
    for name in names:
      contestants[name] = dict(
          result["contestants"][name], label=LABELS[name], model_process=worker,
          parameters=model["parameters"],
          variables_tracked_by_distribution=model["variables_tracked_by_distribution"],
          xla=bool(settings.jit_compile and model["xla_compiles"]),
          step_time=model["step_time"], step_time_xla=model["step_time_xla"],
          step_time_graph=model["step_time_graph"], throughput=model["throughput"],
          memory={"peak_rss_mb": result["rss_after_first_run_mb"],
                  "process_peak_rss_mb": result["peak_rss_mb"],
                  "rss_after_import_mb": result["rss_after_import_mb"]},
          flops=dict(flops, fraction_of_machine=flops["train_flops_per_s"] / peak,
                     executed_fraction_of_machine=None if executed is None else executed / peak),
          steps=settings.training.steps)
  return contestants


def _targets(settings: BenchSettings, contestants: dict, sweep: dict) -> dict:
  """The three targets: final gap, time to a gap against the built-in, time per step."""
  ours, best = contestants["ours"], contestants["tfp_builtin_best_lr"]
  ours_t = ours["quality"]["time_to_gap_0.05_s"]["median"]
  best_t = best["quality"]["time_to_gap_0.05_s"]["median"]
  if ours_t is None:
    speedup = None
  elif best_t is None:
    speedup = math.inf
  else:
    speedup = best_t / ours_t
  step_ratio = ours["step_time"]["median_ms"] / best["step_time"]["median_ms"]
  # For readers who would pick another rate: the same ratio against every rate of the
  # sweep, stable or not (medians over seeds, a diverged or never-arriving run the slowest).
  by_rate = []
  for row in sweep["rates"]:
    t = row["quality"]["time_to_gap_0.05_s"]["median"]
    by_rate.append({"learning_rate": row["learning_rate"], "stable": row["stable"],
                    "builtin_median_s": t,
                    "speedup": None if ours_t is None or t is None else t / ours_t})
  targets = {
      "ours_final_gap_at_most_0.01": {
          "median_gap": ours["quality"]["gap"]["median"],
          "worst_gap": ours["quality"]["gap"]["worst"],
          "met": ours["quality"]["gap"]["median"] is not None
          and ours["quality"]["gap"]["median"] <= 0.01},
      "ours_5x_sooner_to_gap_0.05_than_builtin_best_lr": {
          "ours_median_s": ours_t, "builtin_best_lr_median_s": best_t,
          "builtin_reaches_it": best_t is not None,
          "speedup": None if speedup is None or math.isinf(speedup) else speedup,
          "met": speedup is not None and speedup >= 5.0,
          "against_every_sweep_rate": by_rate},
      "ours_not_slower_per_step_than_builtin": {
          "ours_ms": ours["step_time"]["median_ms"], "builtin_ms": best["step_time"]["median_ms"],
          "ratio": step_ratio, "met": step_ratio <= 1.0,
          "same_compile_settings": {"jit_compile": settings.jit_compile}},
  }
  return targets


def assemble(settings: BenchSettings, workers: dict, machine_start: dict,
             machine_end: dict, command: str, total_seconds: float) -> dict:
  """Combines the worker results into the ``results.json`` document."""
  peak = max(machine_start["matmul_flops_per_s"], machine_end["matmul_flops_per_s"])
  contestants = _contestant_entries(settings, workers, peak)
  sweep = workers["builtin"]["sweep"]
  return {
      "schema_version": SCHEMA_VERSION, "mode": settings.mode, "command": command,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "total_seconds": total_seconds,
      "machine": dict(machine_info(), matmul_start=machine_start, matmul_end=machine_end,
                      matmul_flops_per_s=peak),
      "settings": settings.to_json(), "fit_defaults": workers["ours"]["fit_defaults"],
      "worker_seconds": {k: {"total": w["wall_seconds"], **w["phase_seconds"]}
                         for k, w in workers.items()},
      "oracle": {"test_nll": workers["ours"]["oracle_test_nll"],
                 "val_nll": workers["ours"]["oracle_val_nll"]},
      "sweep": sweep, "contestants": contestants,
      "targets": _targets(settings, contestants, sweep), "notes": dict(NOTES),
  }


def _header_and_quality(results: dict) -> list:
  """The run, the machine and the data; the quality table."""
  s, oracle = results["settings"], results["oracle"]
  machine = results["machine"]
  lines = [
      f"# RealNVP benchmarks ({results['mode']} mode)", "",
      f"Command: `{results['command']}`  ",
      f"Machine: {machine.get('cpu_model', machine['machine'])}, {machine.get('affinity_cpus', machine['cpu_count'])} "
      f"CPUs usable, {machine['platform']}; TensorFlow {machine.get('tensorflow')}, "
      f"TFP {machine.get('tensorflow-probability')}.  ",
      f"Dense matmul ({machine['matmul_start']['matmul_size']}^2, float32): "
      f"{_si(machine['matmul_start']['matmul_flops_per_s'], 'FLOP/s')} at the start, "
      f"{_si(machine['matmul_end']['matmul_flops_per_s'], 'FLOP/s')} at the end.  ",
      f"Data: two moons, noise {s['noise']}, {s['n_train']} training points per seed, "
      f"{s['n_val']} validation and {s['n_test']} test points (the same for all); "
      f"seeds {s['seeds']}; {s['training']['steps']} steps for every contestant; validation every "
      f"{s['eval_every']} steps.  ",
      f"Oracle NLL (true density): test {oracle['test_nll']:.4f} nats, validation "
      f"{oracle['val_nll']:.4f} nats.  ",
      f"Total run time: {results['total_seconds'] / 60:.1f} min.", "",
      "## Quality (median / worst over seeds)", "",
      "| contestant | LR | batch | test NLL | oracle NLL | gap (nats) | time to gap ≤ 0.05 | "
      "steps to gap ≤ 0.05 | time to gap ≤ 0.02 | steps to gap ≤ 0.02 | diverged runs | "
      "runs with NaN steps |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  none_stable = not results["sweep"]["any_stable"]
  for name, c in results["contestants"].items():
    q = c["quality"]
    label = c["label"]
    if name == "tfp_builtin_best_lr" and none_stable:
      label += " (no rate was stable: the fewest diverged seeds)"
    lines.append(
        f"| {label} | {c['learning_rate']:g} | {c['batch_size']} | "
        f"{_fmt_mw(q['test_nll'], 3, never='n/a')} | {oracle['test_nll']:.3f} | "
        f"{_fmt_mw(q['gap'], 4, never='n/a')} | {_fmt_mw(q['time_to_gap_0.05_s'], 1, ' s')} | "
        f"{_fmt_mw(q['steps_to_gap_0.05'], 0)} | {_fmt_mw(q['time_to_gap_0.02_s'], 1, ' s')} | "
        f"{_fmt_mw(q['steps_to_gap_0.02'], 0)} | {q['diverged_runs']}/{len(q['seeds'])} | "
        f"{q['runs_with_nonfinite_steps']}/{len(q['seeds'])} |")
  return lines


def _speed_table(results: dict) -> list:
  """Step time, throughput, parameters, memory and FLOP/s of each contestant."""
  lines = [
      "", "## Speed and size", "",
      "| contestant | XLA | step (ms) | steps/s | step XLA / graph (ms) | log_prob pts/s "
      "(XLA / graph) | sample pts/s (XLA / graph) | parameters | peak RSS (MiB) | "
      "train FLOP/s (% of matmul) | "
      "executed matmul FLOP/s under XLA (%) |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, c in results["contestants"].items():
    t, th, f = c["step_time"], c["throughput"], c["flops"]
    lines.append(
        f"| {c['label']} | {'on' if c['xla'] else 'off'} | {t['median_ms']:.2f} | "
        f"{t['steps_per_s']:.0f} | {c['step_time_xla']['median_ms']:.2f} / "
        f"{c['step_time_graph']['median_ms']:.2f} | "
        f"{_si(th['log_prob_points_per_s_xla'])} / {_si(th['log_prob_points_per_s_graph'])} | "
        f"{_si(th['sample_points_per_s_xla'])} / {_si(th['sample_points_per_s_graph'])} | "
        f"{c['parameters']:,} | {c['memory']['peak_rss_mb']:.0f} | "
        f"{_si(f['train_flops_per_s'])} ({100 * f['fraction_of_machine']:.1f}%) | "
        + (f"{_si(f['executed_matmul_flops_per_s'])} ({100 * f['executed_fraction_of_machine']:.1f}%) |"
           if f["executed_matmul_flops_per_s"] is not None else "n/a (no XLA) |"))
  return lines


def _sweep_section(results: dict) -> list:
  """The built-in's learning-rate sweep and the rate it chose."""
  sweep = results["sweep"]
  lines = ["", f"## Built-in learning-rate sweep (every rate on seeds {sweep['seeds']}, "
            f"the full {sweep['steps']} steps)",
            "", "Stable: fit finished (no `TrainingDiverged`) with a finite validation NLL on "
            "every seed; skipped non-finite steps are tolerated, which favours the built-in. "
            "Best stable: the stable rate with the lowest median final validation NLL. "
            "Time to a gap is the median over seeds, \"never\" counting as the slowest.", "",
            "| LR | diverged seeds | seeds with non-finite steps | median final val NLL | "
            "test gap (median / worst) | time to gap ≤ 0.05 (median / worst) | "
            "time to gap ≤ 0.02 (median / worst) | stable |",
            "|---|---|---|---|---|---|---|---|"]
  for r in sweep["rates"]:
    q = r["quality"]
    lines.append(f"| {r['learning_rate']:g} | {r['diverged_seeds']}/{r['seeds']} | "
                 f"{r['runs_with_nonfinite_steps']}/{r['seeds']} | "
                 f"{_fmt(r['median_final_val_nll'], 4, never='n/a')} | "
                 f"{_fmt_mw(q['gap'], 4, never='n/a')} | "
                 f"{_fmt_mw(q['time_to_gap_0.05_s'], 1, ' s')} | "
                 f"{_fmt_mw(q['time_to_gap_0.02_s'], 1, ' s')} | "
                 f"{'yes' if r['stable'] else 'no'} |")
  reused = results["contestants"]["tfp_builtin_best_lr"].get("same_runs_as")
  lines.append(f"\nBest stable learning rate: {sweep['best_stable_learning_rate']:g}"
               + ("" if sweep["any_stable"] else
                  " (none was stable: the one with the fewest diverged seeds was used)")
               + (" (our rate: the best-LR row shows the same runs)" if reused else ""))
  return lines


def _our_lr_section(results: dict) -> list:
  """Where the built-in at our learning rate met a non-finite loss."""
  a = results["contestants"]["tfp_builtin_our_lr"]
  nan_runs = [r for r in a["runs"] if r["first_nonfinite"]]
  lines = ["", f"## Built-in at our learning rate ({a['learning_rate']:g})", ""]
  if nan_runs:
    for r in a["runs"]:
      nf = r["first_nonfinite"]
      where = "no non-finite loss" if nf is None else (
          f"first non-finite loss between steps {nf['after_step']} and {nf['by_step']}")
      lines.append(f"- seed {r['seed']}: {where}"
                   + (f"; fit stopped (TrainingDiverged) near step {r['diverged_near_step']}"
                      if r["diverged"] else f"; {r['nonfinite_steps']} steps skipped"))
  else:
    lines.append("No seed produced a non-finite loss.")
  return lines


def _targets_section(results: dict) -> list:
  """The targets, met or missed, and how each figure was measured."""
  s, none_stable = results["settings"], not results["sweep"]["any_stable"]
  t = results["targets"]
  g, v, p = (t["ours_final_gap_at_most_0.01"], t["ours_5x_sooner_to_gap_0.05_than_builtin_best_lr"],
             t["ours_not_slower_per_step_than_builtin"])
  lines = [
      "", "## Targets", "",
      f"- Final gap ≤ 0.01 nats: median {_fmt(g['median_gap'], 4, never='n/a')}, worst "
      f"{_fmt(g['worst_gap'], 4, never='n/a')}: **{'met' if g['met'] else 'missed'}**.",
      f"- Gap ≤ 0.05 at least 5x sooner than the built-in at its best stable LR"
      f"{' (no rate was stable; the one with the fewest diverged seeds)' if none_stable else ''}: ours "
      f"{_fmt(v['ours_median_s'], 1, ' s')}, built-in {_fmt(v['builtin_best_lr_median_s'], 1, ' s')}"
      f" ({'x%.1f' % v['speedup'] if v['speedup'] else ('built-in never gets there' if not v['builtin_reaches_it'] else 'n/a')}): "
      f"**{'met' if v['met'] else 'missed'}**. Against every rate of the sweep: "
      + "; ".join(f"{r['learning_rate']:g}{'' if r['stable'] else ' (unstable)'}: "
                  + (f"x{r['speedup']:.1f}" if r["speedup"] else "never gets there")
                  for r in v["against_every_sweep_rate"]) + ".",
      f"- Not slower per step than the built-in (same couplings, widths, batch, XLA "
      f"{'on' if s['jit_compile'] else 'off'}): {p['ours_ms']:.2f} vs {p['builtin_ms']:.2f} ms "
      f"(ratio {p['ratio']:.2f}): **{'met' if p['met'] else 'missed'}**.",
      "", "## How it was measured", "",
  ]
  lines += [f"- {key.replace('_', ' ')}: {text}" for key, text in results["notes"].items()]
  return lines


def write_markdown(results: dict) -> str:
  """The tables of ``results.md``."""
  lines = (_header_and_quality(results) + _speed_table(results) + _sweep_section(results)
           + _our_lr_section(results) + _targets_section(results))
  return "\n".join(lines) + "\n"


COLORS = {"ours": "tab:blue", "tfp_builtin_our_lr": "tab:red",
          "tfp_builtin_best_lr": "tab:orange", "book": "tab:green"}


def plot_nll_vs_wall_time(results: dict, path) -> None:
  """Validation NLL against wall time, every seed, with the oracle as a line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401

  oracle = results["oracle"]["val_nll"]
  fig, ax = plt.subplots(figsize=(8, 5.6))
  diverged_labelled = False
  finals = [v for c in results["contestants"].values() for run in c["runs"]
            for v in run["history"]["val_nll"][-1:] if v is not None]
  top = max([oracle + 0.6] + [v + 0.1 for v in finals])
  for name, c in results["contestants"].items():
    if c.get("same_runs_as"):  # drawn already, under the other name
      continue
    label = f"{c['label']} (LR {c['learning_rate']:g})"
    twins = [o["label"] for o in results["contestants"].values() if o.get("same_runs_as") == name]
    if twins:
      label += " = " + ", ".join(twins)
    labelled = False
    for run in c["runs"]:
      h = run["history"]
      pairs = [(w, v) for w, v in zip(h["wall_time"], h["val_nll"]) if v is not None]
      if not pairs:  # diverged in its first epoch: nothing to draw
        continue
      ax.plot(*zip(*pairs), color=COLORS[name], alpha=0.75, linewidth=1.2,
              label=None if labelled else label)
      labelled = True
      if run["diverged"]:
        ax.plot(*pairs[-1], marker="x", linestyle="none", color=COLORS[name], markersize=8,
                label="fit stopped: diverged" if not diverged_labelled else None)
        diverged_labelled = True
  ax.axhline(oracle, color="k", linestyle="--", linewidth=1, label=f"oracle ({oracle:.3f})")
  ax.axhline(oracle + 0.05, color="k", linestyle=":", linewidth=0.8, label="oracle + 0.05")
  ax.set_xscale("log")
  ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_ylim(oracle - 0.03, top)
  ax.set_xlabel("wall time of fit (s, log scale; includes compilation)")
  ax.set_ylabel("validation NLL (nats)")
  seeds = len(results["settings"]["seeds"])
  ax.set_title(f"Two moons: validation NLL vs wall time ({seeds} seed{'s' if seeds > 1 else ''} each)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
  fig.tight_layout()
  fig.savefig(os.fspath(path), dpi=120)
  plt.close(fig)
