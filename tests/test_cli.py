"""Tests for tfp_realnvp.cli: flags derived from the options, clear errors, a quiet start."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tfp_realnvp import cli, files
from tfp_realnvp.options import COUPLINGS, PERMUTATIONS, FlowOptions, TrainingOptions

TINY = ["--n-train", "600", "--n-test", "200", "--steps", "20", "--batch-size", "64",
        "--couplings", "2", "--hidden", "8,8", "--no-progress"]


def _run(*args, **kwargs):
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                        env=env, **kwargs)


def test_train_end_to_end_writes_every_file_and_only_our_output(tmp_path):
  out = tmp_path / "run"
  result = _run("-m", "tfp_realnvp", "train", *TINY, "--weight-decay", "0.02", "--ema-decay",
                "none", "--out", str(out))
  assert result.returncode == 0, result.stderr
  for name in ("metrics.json", "loss_curve.png", "four_panels.png", "density.png",
               "model/tfp_realnvp.json", "run_config.json", "history.json"):
    assert (out / name).is_file(), name
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["steps"] == 20
  assert metrics["gap"] == pytest.approx(metrics["test_nll"] - metrics["oracle_nll"])
  assert metrics["config"]["flow"]["hidden_units"] == [8, 8]
  assert metrics["config"]["flow"]["num_couplings"] == 2
  assert metrics["config"]["training"]["weight_decay"] == 0.02
  assert metrics["config"]["training"]["ema_decay"] is None
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging, no lock
  assert '"test_nll"' in result.stdout
  # TensorFlow's start-up noise does not reach the screen
  for noise in ("cuInit", "oneDNN", "cuda", "absl::InitializeLog", "I0000", "E0000"):
    assert noise not in result.stderr, result.stderr


def test_help_does_not_import_tensorflow():
  code = ("import sys\nfrom tfp_realnvp import cli\ntry:\n  cli.main(['train', '--help'])\n"
          "except SystemExit:\n  pass\nprint('TF' if 'tensorflow' in sys.modules else 'no TF')")
  result = _run("-c", code)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().endswith("no TF")
  for flag in ("--n-train", "--noise", "--num-couplings", "--couplings", "--hidden-units",
               "--hidden", "--steps", "--learning-rate", "--ema-decay", "--seed", "--out"):
    assert flag in result.stdout


def test_flags_are_derived_from_the_options():
  parser = cli.build_parser()
  train = parser._subparsers._group_actions[0].choices["train"]  # pylint: disable=protected-access
  actions = {a.dest: a for a in train._actions}  # pylint: disable=protected-access
  for options in (FlowOptions(), TrainingOptions()):
    for field in dataclasses.fields(options):
      if field.metadata["cli"]:
        action = actions[field.name]
        assert action.default == field.default and action.help == field.metadata["help"]
        assert f"--{field.name.replace('_', '-')}" in action.option_strings
  assert tuple(actions["coupling"].choices) == COUPLINGS
  assert tuple(actions["permutation"].choices) == PERMUTATIONS
  assert "--couplings" in actions["num_couplings"].option_strings
  args = parser.parse_args(["train", "--hidden", "4,5", "--log-scale-bound", "none",
                            "--actnorm", "--coupling", "spline"])
  assert args.hidden_units == (4, 5) and args.log_scale_bound is None and args.actnorm


@pytest.mark.parametrize("args", [
    ["train", "--steps", "0"],
    ["train", "--steps", "ten"],
    ["train", "--learning-rate", "-1"],
    ["train", "--hidden", "128,x"],
    ["train", "--hidden", "128,0"],
    ["train", "--validation-fraction", "1.5"],
    ["train", "--weight-decay", "-0.1"],
    ["train", "--warmup-steps", "-10"],
    ["train", "--ema-decay", "1"],
    ["train", "--ema-decay", "fast"],
    ["train", "--learning-rate", "inf"],
    ["train", "--coupling", "nope"],
    ["train", "--dataset", "nope"],
    ["train", "--couplings", "1000000"],
    ["train", "--no-such-flag"],
    [],
])
def test_bad_arguments_exit_2_with_usage_and_leave_nothing(args, capsys, tmp_path):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([*args, "--out", str(tmp_path / "r")] if args else args)
  assert exit_info.value.code == 2
  assert "usage:" in capsys.readouterr().err
  assert os.listdir(tmp_path) == []


def test_overwrite_replaces_only_a_run_folder(tmp_path, capsys):
  out = tmp_path / "run"
  out.mkdir()
  (out / "notes.txt").write_text("precious")
  assert cli.main(["train", *TINY, "--out", str(out)]) == 1
  assert "already exists" in capsys.readouterr().err
  assert cli.main(["train", *TINY, "--out", str(out), "--overwrite"]) == 1
  assert "not a run folder" in capsys.readouterr().err
  assert os.listdir(out) == ["notes.txt"] and len(os.listdir(tmp_path)) == 1
  (out / "notes.txt").unlink()
  assert cli.main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0  # empty: allowed
  assert cli.main(["train", *TINY, "--out", str(out), "--overwrite", "--seed", "1"]) == 0
  assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1


def test_a_second_writer_is_refused(tmp_path, capsys):
  out = tmp_path / "run"
  with files.lock(out):  # stands in for a live run
    for extra in (["--out", str(out)], ["--out", str(out), "--overwrite"],
                  ["--resume", str(out)]):
      assert cli.main(["train", *TINY, *extra]) == 1
      assert "in use by another process" in capsys.readouterr().err
  assert os.listdir(tmp_path) == []


def test_failure_inside_training_is_one_line(tmp_path, capsys):
  code = cli.main(["train", *TINY, "--batch-size", "5000", "--out", str(tmp_path / "r")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 1
  assert len(err) == 1 and "batch_size" in err[0]
  assert os.listdir(tmp_path) == []
