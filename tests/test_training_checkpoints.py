"""Checkpoints: resume in one call after a kill at any stage, a full disk, old checkpoints."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_realnvp import RealNVP, datasets, fit
from tfp_realnvp.training.step import TrainingSteps

_X = datasets.moons(2000, seed=0)


def _run(checkpoint_dir, steps=100, **kwargs):
  tf_keras.utils.set_random_seed(3)
  flow = RealNVP(2, num_couplings=2, hidden_units=(16,))
  history = fit(flow, _X, steps=steps, batch_size=100, eval_every=20, ema_decay=0.9,
                validation_data=0.1, checkpoint_dir=checkpoint_dir, progress=False, seed=3,
                **kwargs)
  return [v.numpy() for v in flow.trainable_variables], history


@pytest.fixture(scope="module")
def straight():
  return _run(None)


def _assert_same_weights(a, b):
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, atol=1e-6)


def test_fit_resumes_from_its_checkpoint_and_does_only_the_remaining_steps(tmp_path, straight):
  _, first = _run(tmp_path, steps=60)  # an earlier call that ended at step 60
  assert first.step[-1] == 60
  # A new call with a larger budget continues where that one stopped.
  _, resumed = _run(tmp_path, steps=100)
  assert resumed.resumed_from_step == 60
  assert resumed.step == [20, 40, 60, 80, 100] and len(resumed.train_nll) == 5


def test_moving_average_and_pipeline_state_resume_exactly(tmp_path, straight):
  _run(tmp_path)  # a checkpoint every epoch; drop the last, so the next call resumes at 80
  for path in tmp_path.glob("ckpt-100*"):
    path.unlink()
  state = tmp_path / "checkpoint"
  state.write_text(state.read_text().replace("ckpt-100", "ckpt-80"))
  weights, history = _run(tmp_path)
  assert history.resumed_from_step == 80
  # Equal only if the averages, their update count and the input position came back.
  _assert_same_weights(weights, straight[0])


class _Killed(BaseException):
  """Stands for SIGKILL: nothing after it runs, nothing catches it."""


def _kill_at_third(stage):
  """A replacement that dies at the third checkpoint (step 60) or fourth epoch."""
  calls = {"n": 0}
  original_save, original_steps = tf.train.CheckpointManager.save, TrainingSteps.__call__

  def save(self, checkpoint_number=None, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:
      prefix = pathlib.Path(self.directory) / f"ckpt-{checkpoint_number}"
      if stage == "after history, before checkpoint":
        raise _Killed()
      if stage == "during checkpoint write":
        (prefix.parent / (prefix.name + "_temp")).mkdir()
        (prefix.parent / (prefix.name + "_temp") / "part-00000-of-00001.index").write_bytes(b"\0")
        prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(b"partial")
        raise _Killed()
      original_save(self, checkpoint_number=checkpoint_number, **kwargs)
      raise _Killed()  # after the checkpoint, before the cleanup
    return original_save(self, checkpoint_number=checkpoint_number, **kwargs)

  def steps(self, n):
    calls["n"] += 1
    if calls["n"] == 4:
      raise _Killed()
    return original_steps(self, n)
  return ("save", save) if stage != "mid-step" else ("steps", steps)


@pytest.mark.parametrize("stage", ["mid-step", "after history, before checkpoint",
                                   "during checkpoint write", "after checkpoint"])
def test_a_kill_at_any_stage_resumes_in_one_call_to_the_same_result(tmp_path, monkeypatch,
                                                                    stage, straight):
  kind, replacement = _kill_at_third(stage)
  owner = tf.train.CheckpointManager if kind == "save" else TrainingSteps
  monkeypatch.setattr(owner, "save" if kind == "save" else "__call__", replacement)
  with pytest.raises(_Killed):
    _run(tmp_path)
  monkeypatch.undo()
  weights, history = _run(tmp_path)
  assert history.resumed_from_step == (40 if "before checkpoint" in stage or "during" in stage
                                       else 60)
  assert history.step == [20, 40, 60, 80, 100]
  _assert_same_weights(weights, straight[0])
  assert not list(tmp_path.glob("*_temp*"))


def test_a_checkpoint_of_another_optimizer_is_refused_not_half_restored(tmp_path):
  # Restoring the weights but not Adam's moments and step would restart the schedule's
  # warm-up silently; the current Adam was fit's default before the fused legacy one.
  _run(tmp_path, steps=40, optimizer=tf_keras.optimizers.Adam(1e-3))
  with pytest.raises(ValueError, match="does not match this run.*new checkpoint_dir"):
    _run(tmp_path, steps=100)


def test_a_checkpoint_without_its_history_falls_back_to_the_previous_one(tmp_path, straight):
  # What a kill between the checkpoint and its history left in earlier versions.
  _run(tmp_path)
  (tmp_path / "ckpt-100.history.json").unlink()
  weights, history = _run(tmp_path)
  assert history.resumed_from_step == 80
  _assert_same_weights(weights, straight[0])


def test_a_full_disk_names_the_path_removes_the_partial_checkpoint_and_keeps_the_last(
    tmp_path, monkeypatch, straight):
  original = tf.train.CheckpointManager.save
  calls = {"n": 0}

  def save(self, checkpoint_number=None, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:  # what SaveV2 does when the disk fills mid-write
      temp = pathlib.Path(self.directory) / f"ckpt-{checkpoint_number}_temp"
      temp.mkdir()
      (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"partial")
      raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part-00000-of-00001.data"
                                             "-00000-of-00001.tempstate1; No space left on device")
    return original(self, checkpoint_number=checkpoint_number, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
  with pytest.raises(OSError, match="no space left on device") as info:
    _run(tmp_path)
  assert info.value.errno == errno.ENOSPC and str(tmp_path / "ckpt-60") in str(info.value)
  assert not list(tmp_path.glob("ckpt-60*"))
  monkeypatch.undo()
  weights, history = _run(tmp_path)
  assert history.resumed_from_step == 40
  _assert_same_weights(weights, straight[0])


@pytest.fixture
def tiny_disk(tmp_path):
  """A real 1.2 MiB file system (a checkpoint here is ~430 KiB: the shuffle buffer) (root only)."""
  mount = tmp_path / "tiny"
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs",
                                          str(mount)], capture_output=True).returncode:
    pytest.skip("mounting a small tmpfs needs root")
  yield mount
  subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_reported_and_the_last_checkpoint_resumes(tiny_disk, tmp_path):
  x = datasets.moons(2000, seed=0)
  kwargs = dict(steps=400, batch_size=100, eval_every=20, progress=False, max_checkpoints=50)
  flow = RealNVP(2, num_couplings=2, hidden_units=(32,))
  with pytest.raises(OSError, match="no space left on device") as info:
    fit(flow, x, checkpoint_dir=tiny_disk, **kwargs)
  assert str(tiny_disk) in str(info.value)
  assert not list(tiny_disk.glob("*_temp*"))
  saved = sorted(tiny_disk.glob("ckpt-*.history.json"))
  assert saved  # some checkpoints fit; a resume after freeing space continues from the last
  for path in tiny_disk.iterdir():
    if path.is_file():
      (tmp_path / path.name).write_bytes(path.read_bytes())
  history = fit(RealNVP(2, num_couplings=2, hidden_units=(32,)), x, checkpoint_dir=tmp_path,
                **kwargs)
  assert history.resumed_from_step > 0 and history.step[-1] == 400

def _wait_for_checkpoint(staging, at_least, process, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    histories = list((staging / "checkpoints").glob("ckpt-*.history.json"))
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in histories]
    if steps and max(steps) >= at_least:
      return max(steps)
    if process.poll() is not None:
      raise AssertionError(f"training ended before a checkpoint at step {at_least}")
    time.sleep(0.2)
  raise AssertionError("no checkpoint appeared in time")


def test_sigkill_then_resume_finishes_only_the_remaining_steps(tmp_path):
  args = ["--n-train", "4000", "--n-test", "1000", "--steps", "900", "--batch-size", "50",
          "--couplings", "4", "--hidden", "32,32", "--seed", "2", "--no-progress"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  command = [sys.executable, "-m", "tfp_realnvp", "train", *args]

  straight_out = tmp_path / "straight"
  subprocess.run([*command, "--out", str(straight_out)], check=True, env=env, timeout=600,
                 capture_output=True)
  straight = json.loads((straight_out / "metrics.json").read_text())

  out = tmp_path / "killed"
  staging = tmp_path / ".killed.partial"
  process = subprocess.Popen([*command, "--out", str(out), "--checkpoint-every", "80"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for_checkpoint(staging, 300, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  assert not out.exists()  # never a half-written output folder
  assert (staging / "run_config.json").is_file()

  result = subprocess.run([*command[:-len(args)], "--resume", str(out), "--no-progress"],
                          env=env, timeout=600, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  resumed = json.loads((out / "metrics.json").read_text())
  # (the newest checkpoint whose files are all complete: maybe one before the kill)
  assert 0 < resumed["resumed_from_step"] < 900
  assert resumed["steps"] == 900
  history_steps = resumed["history"]["step"]
  assert history_steps == sorted(set(history_steps))  # each epoch once, none repeated
  assert abs(resumed["test_nll"] - straight["test_nll"]) < 0.02
  assert not staging.exists()
  for name in ("metrics.json", "loss_curve.png", "four_panels.png", "density.png"):
    assert (out / name).is_file()
