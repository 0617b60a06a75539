"""Smoke test of the benchmark runner (``python -m benchmarks.bench``): quick mode produces
every field (no timing asserts)."""

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed: it lives beside the package
  sys.path.insert(0, str(ROOT))

import benchmarks.bench as bench  # noqa: E402
from benchmarks.bench import run  # noqa: E402
from tfp_realnvp.options import FLOW_DEFAULTS, TRAINING_DEFAULTS  # noqa: E402

QUALITY = ["test_nll", "gap", "time_to_gap_0.05_s", "time_to_gap_0.02_s",
           "steps_to_gap_0.05", "steps_to_gap_0.02"]
RUN = ["seed", "learning_rate", "batch_size", "steps", "steps_done", "test_nll", "gap",
       "final_val_nll", "best_val_nll", "diverged", "diverged_near_step", "first_nonfinite",
       "nonfinite_steps", "train_seconds", "history", "time_to_gap_0.05_s",
       "time_to_gap_0.02_s", "steps_to_gap_0.05", "steps_to_gap_0.02"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "quick"
  assert run.main(["--quick", "--out", str(out), "--no-progress"]) == 0
  return out, json.loads((out / "results.json").read_text())


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_writes_results_table_plot_and_logs(quick_run):
  out, results = quick_run
  for name in ("results.json", "results.md", "nll_vs_wall_time.png", "logs/ours.log",
               "logs/builtin.log", "logs/book.log"):
    assert (out / name).is_file(), name
  assert (out / "nll_vs_wall_time.png").stat().st_size > 10_000
  table = (out / "results.md").read_text()
  for label in bench.LABELS.values():
    assert label in table
  for heading in ("## Quality", "## Speed and size", "## Built-in learning-rate sweep",
                  "## Targets", "## How it was measured"):
    assert heading in table


def test_every_contestant_has_every_figure(quick_run):
  _, results = quick_run
  assert results["mode"] == "quick"
  assert set(results["contestants"]) == set(bench.CONTESTANTS)
  oracle = results["oracle"]
  assert _positive(oracle["test_nll"]) and _positive(oracle["val_nll"])
  seeds = results["settings"]["seeds"]
  for name, c in results["contestants"].items():
    assert c["label"] == bench.LABELS[name]
    assert _positive(c["learning_rate"]) and c["steps"] == results["settings"]["training"]["steps"]
    assert len(c["runs"]) == len(seeds)
    for run in c["runs"]:
      assert set(RUN) <= set(run), set(RUN) - set(run)
      assert run["gap"] == pytest.approx(run["test_nll"] - oracle["test_nll"], abs=1e-6)
      assert len(run["history"]["val_nll"]) == len(run["history"]["wall_time"]) > 0
    for key in QUALITY:
      assert set(c["quality"][key]) == {"median", "worst"}, (name, key)
    assert c["quality"]["gap"]["median"] is not None
    assert isinstance(c["xla"], bool)
    for timing in (c["step_time"], c["step_time_xla"], c["step_time_graph"]):
      assert _positive(timing["median_ms"]) and _positive(timing["steps_per_s"])
    assert c["step_time_xla"]["jit_compile"] is True
    assert c["step_time_graph"]["jit_compile"] is False
    assert c["step_time"]["jit_compile"] == results["settings"]["jit_compile"]
    assert _positive(c["throughput"]["log_prob_points_per_s"])
    assert _positive(c["throughput"]["sample_points_per_s"])
    assert isinstance(c["parameters"], int) and c["parameters"] > 0
    assert _positive(c["memory"]["peak_rss_mb"])
    assert c["memory"]["peak_rss_mb"] >= c["memory"]["rss_after_import_mb"]
    assert c["memory"]["process_peak_rss_mb"] >= c["memory"]["peak_rss_mb"]
    for key in ("log_prob_points_per_s_graph", "sample_points_per_s_graph"):
      assert _positive(c["throughput"][key]), (name, key)
    flops = c["flops"]
    for key in ("mlp_forward_flops_per_point", "train_flops_per_step", "train_flops_per_s",
                "fraction_of_machine", "executed_matmul_flops_per_step",
                "executed_matmul_flops_per_s", "executed_fraction_of_machine"):
      assert _positive(flops[key]), (name, key)
    assert flops["executed_dot_ops"] > 0


def test_machine_sweep_and_targets(quick_run):
  _, results = quick_run
  machine = results["machine"]
  for when in ("matmul_start", "matmul_end"):
    assert _positive(machine[when]["matmul_flops_per_s"])
  assert _positive(machine["matmul_flops_per_s"])
  sweep = results["sweep"]
  rates = [r["learning_rate"] for r in sweep["rates"]]
  assert rates == sorted(set(results["settings"]["sweep_learning_rates"])
                         | {results["settings"]["training"]["learning_rate"]}, reverse=True)
  assert sweep["best_stable_learning_rate"] in rates
  for row in sweep["rates"]:  # every rate is judged on every seed
    assert row["seeds"] == len(results["settings"]["seeds"])
    assert isinstance(row["stable"], bool)
    assert row["stable"] == (row["diverged_seeds"] == 0 and row["median_final_val_nll"] is not None)
  if sweep["any_stable"]:
    stable = [r for r in sweep["rates"] if r["stable"]]
    assert sweep["best_stable_learning_rate"] == min(
        stable, key=lambda r: r["median_final_val_nll"])["learning_rate"]
  sooner = results["targets"]["ours_5x_sooner_to_gap_0.05_than_builtin_best_lr"]
  assert [r["learning_rate"] for r in sooner["against_every_sweep_rate"]] == rates
  assert (results["contestants"]["tfp_builtin_best_lr"]["learning_rate"]
          == sweep["best_stable_learning_rate"])
  assert (results["contestants"]["tfp_builtin_our_lr"]["learning_rate"]
          == results["contestants"]["ours"]["learning_rate"])
  for target in results["targets"].values():
    assert isinstance(target["met"], bool)
  assert set(results["worker_seconds"]) == {"ours", "builtin", "book"}


def test_builtin_variables_are_untracked_but_trained(quick_run):
  _, results = quick_run
  c = results["contestants"]
  assert c["tfp_builtin_our_lr"]["variables_tracked_by_distribution"] == 0  # TFP issue 1439
  assert c["ours"]["variables_tracked_by_distribution"] > 0
  assert c["tfp_builtin_our_lr"]["parameters"] == c["ours"]["parameters"]


def test_builtin_counts_its_network_twice_in_the_executed_flops(quick_run):
  # TFP's RealNVP backpropagates through its network twice; ours once.
  _, results = quick_run
  ours = results["contestants"]["ours"]["flops"]
  builtin = results["contestants"]["tfp_builtin_our_lr"]["flops"]
  assert ours["mlp_forward_flops_per_point"] == builtin["mlp_forward_flops_per_point"]
  assert builtin["executed_matmul_flops_per_step"] > 1.3 * ours["executed_matmul_flops_per_step"]


def test_time_to_gap_and_median_worst():
  history = {"step": [10, 20, 30], "val_nll": [1.0, 0.33, 0.31], "wall_time": [1.0, 2.0, 3.0]}
  assert bench.time_to_gap(history, 0.3, 0.05) == (2.0, 20)
  assert bench.time_to_gap(history, 0.3, 0.02) == (3.0, 30)
  assert bench.time_to_gap(history, 0.3, 0.001) == (None, None)
  assert bench.median_worst([3.0, 1.0, 2.0]) == {"median": 2.0, "worst": 3.0}
  assert bench.median_worst([1.0, None, 2.0]) == {"median": 2.0, "worst": None}  # None: never
  assert bench.median_worst([None, None, 1.0]) == {"median": None, "worst": None}


def test_help_and_bad_arguments(capsys):
  with pytest.raises(SystemExit) as info:
    run.main(["--help"])
  assert info.value.code == 0
  help_text = capsys.readouterr().out
  for flag in ("--out", "--quick", "--seeds", "--steps", "--overwrite"):
    assert flag in help_text
  assert run.main(["--quick", "--seeds", "0", "--out", "unused"]) == 1
  assert "--seeds" in capsys.readouterr().err


def test_runs_as_a_module_from_the_repository_root():
  completed = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
  assert completed.returncode == 0, completed.stderr
  assert "--quick" in completed.stdout


def test_settings_are_the_package_options_and_survive_json():
  full = bench.BenchSettings.full()
  assert full.flow == FLOW_DEFAULTS and full.training == TRAINING_DEFAULTS
  quick = bench.BenchSettings.quick(seeds=2, steps=12)
  assert (quick.flow.num_couplings, quick.training.steps, quick.seeds) == (2, 12, [0, 1])
  assert quick.flow.activation == FLOW_DEFAULTS.activation  # the rest: the package's
  document = json.loads(json.dumps(quick.to_json()))
  assert bench.BenchSettings.from_json(document) == quick


def test_fit_arguments_carry_the_training_options():
  settings = bench.BenchSettings.quick()
  settings = dataclasses.replace(settings, training=dataclasses.replace(
      settings.training, clip_norm=None, weight_decay=0.01, ema_decay=0.9))
  kwargs = bench.fit_kwargs(settings, 3e-4, 100)
  assert set(kwargs) == {"optimizer", "ema_decay"} and kwargs["ema_decay"] == 0.9
  optimizer = kwargs["optimizer"]
  assert optimizer.global_clipnorm is None and optimizer.weight_decay == pytest.approx(0.01)
  # Step 0 of the warm-up: 1% of the peak rate given.
  assert float(optimizer.learning_rate) == pytest.approx(3e-6)
  default = bench.fit_kwargs(bench.BenchSettings.quick(), 3e-4, 100)["optimizer"]
  assert default.global_clipnorm == TRAINING_DEFAULTS.clip_norm


def test_step_profile_times_every_variant_against_the_first():
  from benchmarks import step_profile  # pylint: disable=import-outside-toplevel
  result = step_profile.main(["--rounds", "1", "--block", "2", "--couplings", "2", "--hidden",
                              "8", "--batch", "64"])
  assert set(result) == set(step_profile.VARIANTS)
  assert result["default"]["ratio"] == 1.0
  assert all(r["ms"] > 0 and math.isfinite(r["ratio"]) for r in result.values())
