import json
import subprocess
import sys

import pytest

from tfp_realnvp import cli

TINY = ["--n-train", "600", "--n-test", "200", "--steps", "20", "--batch-size", "64",
        "--couplings", "2", "--hidden", "8,8", "--no-progress"]


def test_train_end_to_end_writes_every_file(tmp_path, capsys):
  out = tmp_path / "run"
  assert cli.main(["train", *TINY, "--out", str(out)]) == 0
  for name in ("metrics.json", "loss_curve.png", "four_panels.png", "density.png",
               "model/tfp_realnvp.json"):
    assert (out / name).is_file(), name
  metrics = json.loads((out / "metrics.json").read_text())
  for key in ("test_nll", "oracle_nll", "gap", "steps", "wall_time_s", "parameters", "config"):
    assert key in metrics
  assert metrics["steps"] == 20
  assert metrics["gap"] == pytest.approx(metrics["test_nll"] - metrics["oracle_nll"])
  assert metrics["config"]["hidden_units"] == [8, 8]
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
  assert '"test_nll"' in capsys.readouterr().out


def test_refuses_to_overwrite_an_existing_folder(tmp_path, capsys):
  out = tmp_path / "run"
  out.mkdir()
  (out / "keep.txt").write_text("precious")
  assert cli.main(["train", *TINY, "--out", str(out)]) == 1
  assert "already exists" in capsys.readouterr().err
  assert (out / "keep.txt").read_text() == "precious"
  assert cli.main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0
  assert (out / "metrics.json").is_file() and not (out / "keep.txt").exists()


@pytest.mark.parametrize("args", [
    ["train", "--steps", "0"],
    ["train", "--steps", "ten"],
    ["train", "--learning-rate", "-1"],
    ["train", "--hidden", "128,x"],
    ["train", "--validation-fraction", "1.5"],
    ["train", "--weight-decay", "-0.1"],
    ["train", "--ema-decay", "1"],
    ["train", "--ema-decay", "fast"],
    ["train", "--dataset", "nope"],
    ["train", "--no-such-flag"],
    [],
])
def test_bad_arguments_exit_2_with_usage(args, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(args)
  assert exit_info.value.code == 2
  assert "usage:" in capsys.readouterr().err


def test_failure_inside_training_is_one_line(tmp_path, capsys):
  code = cli.main(["train", *TINY, "--batch-size", "5000", "--out", str(tmp_path / "r")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 1
  assert len(err) == 1 and "batch_size" in err[0]
  assert not (tmp_path / "r").exists()


def test_help_documents_the_flags():
  result = subprocess.run([sys.executable, "-m", "tfp_realnvp", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0
  for flag in ("--n-train", "--noise", "--couplings", "--hidden", "--steps", "--batch-size",
               "--learning-rate", "--weight-decay", "--ema-decay", "--seed", "--out"):
    assert flag in result.stdout


def test_optimizer_flags_reach_the_run_config(tmp_path):
  out = tmp_path / "run"
  assert cli.main(["train", *TINY, "--weight-decay", "0.02", "--ema-decay", "none",
                   "--out", str(out)]) == 0
  config = json.loads((out / "metrics.json").read_text())["config"]
  assert config["weight_decay"] == 0.02 and config["ema_decay"] is None
