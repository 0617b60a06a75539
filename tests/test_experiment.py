"""Tests for tfp_realnvp.experiment: the run's config, its folder, and kills at every stage."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tfp_realnvp import cli, files
from tfp_realnvp.experiment import MAX_PARAMETERS, TrainConfig, staging_dir, train_experiment
from tfp_realnvp.options import FlowOptions, TrainingOptions

TINY = ["--n-train", "600", "--n-test", "200", "--steps", "60", "--batch-size", "64",
        "--couplings", "2", "--hidden", "8", "--no-progress", "--checkpoint-every", "20"]


def test_config_composes_the_options_and_reads_older_runs():
  config = TrainConfig(seed=3, flow=FlowOptions(num_couplings=2, hidden_units=(8,)),
                       training=TrainingOptions(steps=7))
  assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
  flat = {"dataset": "moons", "n_train": 30000, "n_test": 10000, "noise": 0.05,
          "num_couplings": 16, "hidden_units": [128, 128], "coupling": "affine",
          "permutation": "reverse", "actnorm": False, "log_scale_bound": 3.0, "steps": 8000,
          "batch_size": 512, "learning_rate": 2e-3, "weight_decay": 0.0, "ema_decay": 0.99,
          "validation_fraction": 0.1, "seed": 0, "test_seed": 1000}  # run_config.json of 0.1.0
  assert TrainConfig.from_json(flat) == TrainConfig().resolved()


def test_absurd_sizes_are_refused_before_any_folder(tmp_path):
  config = TrainConfig(flow=FlowOptions(num_couplings=10**6))
  with pytest.raises(ValueError, match=f"more than {MAX_PARAMETERS:,}"):
    train_experiment(config, tmp_path / "run")
  with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
    train_experiment(TrainConfig(training=TrainingOptions(warmup_steps=-10)), tmp_path / "run")
  assert os.listdir(tmp_path) == []


# A child runs `tfp-realnvp train` and SIGKILLs itself at one named point.
_CHILD = textwrap.dedent("""
    import os, shutil, signal, sys
    import tensorflow as tf
    from tfp_realnvp import cli

    stage, out = sys.argv[1], os.path.abspath(sys.argv[2])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    calls = {"save": 0, "history": 0}
    manager_save, checkpoint_write = tf.train.CheckpointManager.save, tf.train.Checkpoint.write
    replace, rename, rmtree = os.replace, os.rename, shutil.rmtree

    def save(self, *args, **kwargs):
      calls["save"] += 1
      if stage == "mid-training" and calls["save"] == 2:
        die()
      result = manager_save(self, *args, **kwargs)
      if stage == "checkpoint-written" and calls["save"] == 2:
        die()
      return result

    def write(self, prefix, *args, **kwargs):
      if stage == "final-save" and ".model.tmp-" in str(prefix):
        die()
      return checkpoint_write(self, prefix, *args, **kwargs)

    def replace_(src, dst, *args, **kwargs):
      name = os.path.basename(dst)
      calls["history"] += name.endswith(".history.json")
      if (stage == "history-write" and calls["history"] == 2) or (stage, name) in (
          ("final-history", "history.json"), ("metrics", "metrics.json")):
        die()
      return replace(src, dst, *args, **kwargs)

    def rename_(src, dst, *args, **kwargs):
      if stage == "commit" and os.path.abspath(dst) == out:
        die()
      return rename(src, dst, *args, **kwargs)

    def rmtree_(path, *args, **kwargs):
      rmtree(path, *args, **kwargs)
      if stage == "checkpoints-removed" and os.path.basename(str(path)) == "checkpoints":
        die()

    tf.train.CheckpointManager.save, tf.train.Checkpoint.write = save, write
    os.replace, os.rename, shutil.rmtree = replace_, rename_, rmtree_
    sys.exit(cli.main(["train", *sys.argv[3:], "--out", out]))
""")

STAGES = ["mid-training", "checkpoint-written", "history-write", "final-save", "final-history",
          "checkpoints-removed", "metrics", "commit"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  out = tmp_path_factory.mktemp("reference") / "run"
  assert cli.main(["train", *TINY, "--out", str(out)]) == 0
  return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_any_stage_is_resumed_by_one_command(stage, tmp_path, uninterrupted):
  (tmp_path / "child.py").write_text(_CHILD)
  out = tmp_path / "run"
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
  child = subprocess.run([sys.executable, str(tmp_path / "child.py"), stage, str(out), *TINY],
                         env=env, capture_output=True, text=True, timeout=300)
  assert child.returncode == -9, child.stderr  # it died where it was told to
  assert not out.exists() and staging_dir(out).is_dir()

  assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["steps"] == 60
  assert metrics["history"]["step"] == uninterrupted["history"]["step"]  # each epoch once
  if stage in STAGES[3:]:  # the trained model was complete: nothing is retrained
    assert metrics["test_nll"] == uninterrupted["test_nll"]
  else:
    assert metrics["test_nll"] == pytest.approx(uninterrupted["test_nll"], abs=0.05)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "run"]
  assert not [p for p in out.rglob(".*")]  # no temporaries in the finished run
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["density.png", "four_panels.png", "history.json", "loss_curve.png", "metrics.json",
       "model", "run_config.json"])


def test_resume_cleans_temporaries_and_refuses_a_finished_run(tmp_path):
  out = tmp_path / "run"
  staging = staging_dir(out)
  staging.mkdir()
  files.atomic_write_json(staging / "run_config.json", TrainConfig(
      n_train=200, n_test=50, flow=FlowOptions(num_couplings=1, hidden_units=(4,)),
      training=TrainingOptions(steps=3, batch_size=32)).to_json())
  (staging / ".model.tmp-abc123").mkdir()
  train_experiment(None, out, resume=True, progress=False)
  assert not (out / ".model.tmp-abc123").exists()
  with pytest.raises(FileExistsError, match="already complete"):
    train_experiment(None, out, resume=True, progress=False)
