"""Every example runs as a script (tiny settings), in one fresh interpreter."""

import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# script -> (tiny arguments, lines its output must contain)
RUNS = {
    "conditional_moons.py": (
        ["--n-train", "1000", "--n-test", "400", "--steps", "60", "--num-couplings", "2",
         "--hidden-units", "8", "--plot", "{tmp}/moons.png"],
        ["class  n_test  flow NLL  oracle NLL", "samples per class plotted to"]),
    "variational_inference.py": (
        ["--steps", "60", "--num-couplings", "2", "--hidden-units", "8",
         "--eval-samples", "2000"],
        ["log Z = 1.1447", "ELBO =", "E[x1^2 x2]"]),
    "joint_distribution.py": (
        ["--n", "1000", "--steps", "60", "--num-couplings", "2", "--hidden-units", "8"],
        ["joint sample shapes: sequential [[5, 2], [5, 2]], coroutine [[5, 2], [5, 2]]",
         "trainable variables reachable from the joints"]),
    "eight_schools.py": (
        ["--steps", "40", "--num-couplings", "2", "--hidden-units", "8", "--eval-samples", "2000"],
        ["fit_surrogate_posterior: 40 steps", "ELBO =", "avg_effect", "school_effects[7]"]),
    "custom_training_loop.py": (
        ["--steps", "30", "--num-couplings", "2", "--hidden-units", "8"],
        ["test NLL with normalization:", "test NLL without normalization:"]),
    "keras_conditional.py": (
        ["--n-train", "1000", "--epochs", "1", "--batch-size", "200", "--num-couplings", "2"],
        ["model.fit: 1 epochs", "true conditional NLL", "predicted std"]),
}

_DRIVER = textwrap.dedent("""
    import runpy, sys
    for script, args in {runs!r}:
      print("=== " + script, flush=True)
      sys.argv = [script] + args
      runpy.run_path(script, run_name="__main__")
""")


def test_examples_run_as_scripts(tmp_path):
  assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)
  runs = [(str(EXAMPLES / name), [a.format(tmp=tmp_path) for a in args])
          for name, (args, _) in RUNS.items()]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
  result = subprocess.run([sys.executable, "-c", _DRIVER.format(runs=runs)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  sections = dict(part.split("\n", 1) for part in result.stdout.split("=== ")[1:])
  for name, (_, expected) in RUNS.items():
    output = sections[str(EXAMPLES / name)]
    for line in expected:
      assert line in output, (name, line, output)
  assert (tmp_path / "moons.png").read_bytes()[:4] == b"\x89PNG"
