"""The comparison with FlowJAX and zuko (``benchmarks/peers/``).

The pure-Python parts and ours' worker run everywhere; the peers' workers and
snippets only where their virtual environments exist (``make
bench-peers-env``): CI installs neither JAX nor PyTorch.  The whole quick run,
``python -m benchmarks.peers --quick --out DIR``, takes minutes and is not
run here.
"""

import ast
import dataclasses
import json
import math
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed: it lives beside the package
  sys.path.insert(0, str(ROOT))

from benchmarks.bench.settings import BenchSettings  # noqa: E402
from benchmarks.peers import phases, protocol, report, run, summary  # noqa: E402
from benchmarks.peers.data import write_data  # noqa: E402
from benchmarks.peers.processes import Worker, missing_environments  # noqa: E402
from benchmarks.peers.settings import CONTESTANTS, LIBRARIES, PeerSettings  # noqa: E402
from tfp_realnvp.options import FLOW_DEFAULTS, TRAINING_DEFAULTS  # noqa: E402

PEERS = ROOT / "benchmarks" / "peers"


def _needs(library):
  venv = LIBRARIES[library]["venv"]
  return pytest.mark.skipif(bool(missing_environments([library])),
                            reason=f"{venv} does not exist (make bench-peers-env; CI installs "
                                   "neither JAX nor PyTorch)")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """Quick settings, their data files and oracle NLLs."""
  settings = PeerSettings.quick()
  paths, oracle = write_data(settings, tmp_path_factory.mktemp("peers-data"))
  return settings, paths, oracle


# -- pure Python ---------------------------------------------------------------------------

def test_settings_are_the_package_defaults_on_the_bench_data():
  s, bench = PeerSettings.full(), BenchSettings.full()
  assert (s.num_couplings, tuple(s.hidden_units)) == (FLOW_DEFAULTS.num_couplings,
                                                      FLOW_DEFAULTS.hidden_units)
  assert (s.spline_bins, s.spline_bound) == (FLOW_DEFAULTS.spline_bins, FLOW_DEFAULTS.spline_bound)
  t = TRAINING_DEFAULTS
  assert (s.steps, s.batch_size, s.learning_rate, s.warmup_steps, s.clip_norm, s.ema_decay) == (
      t.steps, t.batch_size, t.learning_rate, t.warmup_steps, t.clip_norm, t.ema_decay)
  assert (s.n_train, s.n_val, s.n_test, s.noise, s.seeds) == (
      bench.n_train, bench.n_val, bench.n_test, bench.noise, bench.seeds)
  assert len(s.own_seeds) == 2 and s.eval_every == 250
  assert PeerSettings.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_nll_in_data_units():
  rng = np.random.default_rng(0)
  mean, std = np.array([3.0, -1.0]), np.array([10.0, 0.5])
  x = mean + std * rng.normal(size=(1000, 2))

  def normal_nll(points, loc, scale):
    return float(np.mean(np.sum(0.5 * ((points - loc) / scale) ** 2 + np.log(scale)
                                + 0.5 * np.log(2 * np.pi), axis=1)))

  standardized = normal_nll((x - mean) / std, 0.0, 1.0)
  assert protocol.to_data_units(standardized, std) == pytest.approx(normal_nll(x, mean, std))


def test_learning_rates_are_default_optimizers():
  from tfp_realnvp.training import default_optimizer
  from tfp_realnvp.training.optimizer import learning_rate_schedule
  for steps in (1000, 30):
    settings = dataclasses.asdict(PeerSettings.full(steps=steps))
    table = protocol.learning_rate_table(settings)
    schedule = learning_rate_schedule(default_optimizer(steps))
    for t in sorted({0, 1, 28, 29, 30, 50, 99, 100, 101, 500, steps - 1, steps}):
      if t <= steps:
        assert table[t] == pytest.approx(float(schedule(t)), rel=1e-5, abs=1e-9), (steps, t)


def test_weight_average_decay_is_ours():
  import tensorflow as tf

  from tfp_realnvp.training.averaging import WeightAverage
  weight = tf.Variable(0.0)
  average = WeightAverage([weight], 0.99)
  expected = 0.0
  for n, value in enumerate(np.linspace(1.0, 5.0, 30), start=1):
    weight.assign(value)
    average.update()
    expected -= (1 - protocol.ema_decay(n, 0.99)) * (expected - value)
  assert float(average.averages[0]) == pytest.approx(expected, rel=1e-5)
  assert protocol.ema_decay(1, 0.99) == pytest.approx(2 / 11)
  assert protocol.ema_decay(10_000, 0.99) == 0.99


def test_batches_are_epochs_of_permutations_across_their_ends():
  x = np.arange(10)[:, None]
  batches = protocol.Batches(x, 4, seed=0)
  drawn = np.concatenate([batches.next()[:, 0] for _ in range(5)])  # 20 rows: two epochs
  assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))


def test_parameter_match_step_ratios_and_throughput_ratios():
  match = summary.parameter_match({"ours_spline": 1000, "flowjax_spline": 1033,
                                   "zuko_spline": 1000, "ours_affine": 500,
                                   "flowjax_affine": 530})
  assert match["flowjax_spline"]["relative_to_ours"] == pytest.approx(0.033)
  assert match["flowjax_spline"]["within_tolerance"] and match["zuko_spline"]["within_tolerance"]
  assert not match["flowjax_affine"]["within_tolerance"]
  window = {"rounds": [{"ours_affine": 0.02, "flowjax_affine": 0.01},
                       {"flowjax_affine": 0.01, "ours_affine": 0.01}]}
  times = summary.step_times(window)
  assert times["ours_affine"]["median_ms"] == pytest.approx(15.0)
  assert "ours_over_peer" not in times["ours_affine"]
  assert times["flowjax_affine"]["ours_over_peer"] == {"median": 1.5, "min": 1.0, "max": 2.0}
  rates = summary.throughput_ratios({
      "ours_affine": {"points": 10, "rates": {"log_prob": 4.0, "sample": 2.0}},
      "zuko_affine": {"points": 10, "rates": {"log_prob": 2.0, "sample": 4.0}}})
  assert rates["zuko_affine"]["ours_over_peer"] == {"log_prob": 2.0, "sample": 0.5}


def test_user_lines_skip_docstring_comments_blanks_and_harness():
  source = ('"""A docstring\n\nover lines."""\nimport sys  # a comment\n\n# only a comment\n'
            'data = sys.argv  # harness\nvalue = f(1,\n          2)\nprint(value)\n')
  assert summary.user_lines(source) == 4  # import, the call's two lines, print
  counts = {lib: summary.user_lines((PEERS / "snippets" / v["snippet"]).read_text())
            for lib, v in LIBRARIES.items()}
  assert 0 < counts["ours"] < counts["flowjax"] < counts["zuko"], counts


def _imports(path):
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


def test_peer_workers_import_numpy_and_their_library_only():
  stdlib = set(sys.stdlib_module_names) | {"__future__"}
  allowed = {"protocol.py": {"numpy"},
             "worker_flowjax.py": {"numpy", "jax", "flowjax", "equinox", "optax", "paramax",
                                   "benchmarks"},
             "worker_zuko.py": {"numpy", "torch", "zuko", "benchmarks"},
             "snippets/flowjax.py": {"numpy", "jax", "flowjax"},
             "snippets/zuko.py": {"numpy", "torch", "zuko"}}
  for name, libraries in allowed.items():
    assert _imports(PEERS / name) - stdlib <= libraries, name
  # Their one import from the repository is the protocol, through packages that import nothing.
  for name in ("worker_flowjax.py", "worker_zuko.py"):
    tree = ast.parse((PEERS / name).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in modules if m.startswith("benchmarks")} == {"benchmarks.peers"}
  for package in (ROOT / "benchmarks" / "__init__.py", PEERS / "__init__.py"):
    assert not _imports(package), package


def _fake_results(settings, oracle):
  """Raw phase outputs shaped as the phases return them."""
  names = list(CONTESTANTS)

  def run_(seed, gap, parameters):
    steps = [settings.eval_every * (i + 1) for i in range(3)]
    return {"seed": seed, "test_nll": oracle["test_nll"] + gap, "steps_done": steps[-1],
            "train_seconds": 3.0, "nonfinite_steps": 0, "diverged": False,
            "parameters": parameters,
            "history": {"step": steps, "wall_time": [1.0, 2.0, 3.0],
                        "val_nll": [oracle["val_nll"] + 0.2, oracle["val_nll"] + 0.03, None]}}

  versions = {"ours": ["tensorflow", "tensorflow-probability", "tf-keras", "numpy"],
              "flowjax": ["flowjax", "jax", "jaxlib", "equinox", "optax", "numpy"],
              "zuko": ["zuko", "torch", "numpy"]}
  trained = {n: {"runs": [run_(0, 0.01 * (i + 1), 100 + i)],
                 "startup": {"imported": 1.0, "built": 2.0, "first_step": 3.0 + i},
                 "rss_after_first_run_mb": 300.0, "peak_rss_mb": 310.0,
                 "versions": {"python": "3.11", "packages": {
                     p: "1.0" for p in versions[CONTESTANTS[n][0]]}}}
             for i, n in enumerate(names)}
  window = {"block": 5, "parameters": {n: 100 for n in names},
            "peak_rss_mb": {n: 200.0 for n in names},
            "rounds": [{n: 0.001 * (i + 1) for i, n in enumerate(names)}] * 2}
  rates = {"log_prob": 1e6, "sample": 2e6}
  windows = {"1": dict(window, threads="1"),
             "default": dict(window, threads="default",
                             throughput={n: {"points": 10, "rates": dict(
                                 rates, **({"log_prob_xla": 3e6, "sample_xla": 1e6}
                                           if n.startswith("ours") else {}))}
                                 for n in names})}
  own = {lib: [{"seed": 0, "test_nll": oracle["test_nll"] + 0.02, "wall_seconds": 9.0}]
         for lib in LIBRARIES}
  return report.assemble(
      settings, command="test", total_seconds=60.0, oracle=oracle, trained=trained,
      windows=windows, startup={n: [trained[n]["startup"]] for n in names}, own=own,
      lines={lib: 5 for lib in LIBRARIES}, phase_seconds={"training": 1.0})


def test_report_from_fake_results(tmp_path):
  settings = PeerSettings.quick()
  oracle = {"val_nll": 0.3, "test_nll": 0.27}
  results = _fake_results(settings, oracle)
  json.dumps(results, allow_nan=False)
  ours = results["contestants"]["ours_affine"]
  assert ours["runs"][0]["gap"] == pytest.approx(0.01)
  assert ours["runs"][0]["time_to_gap_0.05_s"] == 2.0
  assert ours["runs"][0]["time_to_gap_0.01_s"] is None
  assert ours["quality"]["gap"] == {"median": pytest.approx(0.01), "worst": pytest.approx(0.01)}
  assert results["step_time"]["1"]["flowjax_affine"]["ours_over_peer"]["median"] == \
      pytest.approx(1 / 3)
  assert results["targets"]["best_gap_affine"]["met"]
  assert not results["targets"]["first_to_gap_affine"]["met"]  # nobody gets there
  assert results["targets"]["step_not_slower_than_flowjax_affine_1_threads"]["met"]
  assert results["own_recipe"]["zuko"]["gap"]["median"] == pytest.approx(0.02)
  markdown = report.write_markdown(results)
  for heading in ("## Quality", "## Time per step", "## Throughput", "## Start-up",
                  "## Peak memory", "## Each library's own recipe", "## Targets",
                  "## How it was measured"):
    assert heading in markdown
  assert "flowjax 1.0" in markdown and "| zuko_spline |" in markdown
  report.plot_nll_vs_wall_time(results, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_bad_arguments(capsys, tmp_path):
  assert run.main(["--out", str(tmp_path / "x"), "--seeds", "0"]) == 1
  assert "--seeds must be at least 1" in capsys.readouterr().err
  assert run.main(["--out", str(tmp_path / "x"), "--contestants", "ours_affine,nope"]) == 1
  assert "nope" in capsys.readouterr().err
  settings, contestants = run.settings_from_args(run.build_parser().parse_args(
      ["--out", "x", "--quick", "--train-threads", "1", "--contestants", "zuko_spline"]))
  assert settings.mode == "quick" and settings.train_threads == "1"
  assert contestants == ["zuko_spline"]


# -- the workers ---------------------------------------------------------------------------

def _round_trip(library, quick, tmp_path, threads):
  """Every request of the protocol, both couplings, in one worker process."""
  settings, paths, _ = quick
  fields = {"settings": settings.to_json(), "data": str(paths[settings.seeds[0]]), "seed": 0}
  with Worker(library, threads, tmp_path / f"{library}.log") as worker:
    start = worker.request("startup", coupling="affine", **fields)
    built = worker.request("build", coupling="affine", **fields)
    steps = worker.request("steps", n=3)
    rates = worker.request("throughput", repeats=1)
    record = worker.request("train_run", coupling="spline", **fields)
    versions = worker.request("versions")
  assert worker.spawned_at < start["imported_at"] <= start["built_at"] <= start["first_step_at"]
  history = record["history"]
  assert record["steps_done"] == settings.steps == history["step"][-1]
  assert len(history["step"]) == len(history["val_nll"]) == len(history["wall_time"]) == 3
  assert all(np.diff(history["wall_time"]) > 0) and math.isfinite(record["test_nll"])
  assert record["train_seconds"] == pytest.approx(history["wall_time"][-1])
  assert built["parameters"] == start["parameters"] and built["warmup_seconds"] > 0
  assert steps["seconds"] > 0 and versions["rss_mb"] > 50
  assert {"log_prob", "sample"} <= set(rates["rates"])
  assert all(v > 0 for v in rates["rates"].values())
  return start, record, versions


def test_ours_worker_round_trip(quick, tmp_path):
  start, record, versions = _round_trip("ours", quick, tmp_path, "default")
  assert start["parameters"] == 212  # 2 couplings of (8, 8): 2 * (2*8 + 8*8+8 + 8*2+2)
  assert record["nonfinite_steps"] == 0 and "tensorflow" in versions["packages"]


@_needs("flowjax")
def test_flowjax_worker_round_trip(quick, tmp_path):
  start, _, versions = _round_trip("flowjax", quick, tmp_path, "default")
  assert start["parameters"] == 212 and "flowjax" in versions["packages"]


@_needs("zuko")
def test_zuko_worker_round_trip(quick, tmp_path):
  start, _, versions = _round_trip("zuko", quick, tmp_path, "1")
  assert start["parameters"] == 212 and versions["packages"]["torch"].startswith("2.13.0")


@pytest.mark.parametrize("library", [
    "ours", pytest.param("flowjax", marks=_needs("flowjax")),
    pytest.param("zuko", marks=_needs("zuko"))])
def test_snippet_runs_and_prints_a_test_nll(library, quick, tmp_path):
  settings, paths, oracle = quick
  (run_,) = phases.own_recipe(settings, library, paths, tmp_path)
  assert math.isfinite(run_["test_nll"]) and run_["test_nll"] > oracle["test_nll"] - 0.5
  assert run_["wall_seconds"] > 0
