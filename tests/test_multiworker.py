"""fit under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Each worker (tests/multiworker_worker.py, run with this interpreter) sets its
TF_CONFIG, builds ``RealNVP(2, num_couplings=2, hidden_units=(16,))`` under
``MultiWorkerMirroredStrategy().scope()`` and trains it on two moons with
``fit(strategy=...)``; a single process trains the same flow on the same data
without a strategy.  The two workers split each global batch between them, so
their mean gradient is the single process's up to float rounding: the losses
must agree to ``LOSS_TOLERANCE`` nats (measured: about 1e-7) and both workers
must end with identical weights.  The workers share a checkpoint folder that
only the chief writes; a run whose second worker is killed mid-run resumes
from it and ends as the uninterrupted run did (the data position is the step
count; measured: identical validation NLLs).  Ports are chosen free at run
time; every subprocess has a timeout.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "multiworker_worker.py"
STEPS = 300
LOSS_TOLERANCE = 1e-4  # nats; float rounding of a two-way all-reduce, measured ~1e-7
TIMEOUT = 240  # seconds per process (TF start-up dominates on a busy 2-core machine)


def _free_ports(count: int) -> list[int]:
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


@pytest.fixture(scope="module", autouse=True)
def _local_ports_open():
  try:
    _free_ports(2)
  except OSError as error:
    pytest.skip(f"cannot open a TCP port on 127.0.0.1 for the workers: {error}")


def _start(tmp_path, name, ports, index, checkpoint_dir=None, pause=0.0):
  spec = {"ports": ports, "index": index, "steps": STEPS,
          "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
          "result": str(tmp_path / f"{name}.json"), "pause_after_checkpoint": pause}
  log = open(tmp_path / f"{name}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
      [str(HERE.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  process = subprocess.Popen([sys.executable, str(WORKER), json.dumps(spec)], stdout=log,
                             stderr=subprocess.STDOUT, env=env, cwd=HERE.parent)
  process.name, process.log, process.result = name, log, tmp_path / f"{name}.json"
  return process


def _finish(processes, timeout=TIMEOUT) -> list[dict]:
  """Waits for every process (killing all on a timeout); their results, or a failure."""
  deadline = time.monotonic() + timeout
  try:
    for process in processes:
      process.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
      process.log.close()
  failed = [p for p in processes if p.returncode != 0]
  if failed:
    p = failed[0]
    tail = "".join(pathlib.Path(p.log.name).read_text().splitlines(keepends=True)[-12:])
    pytest.fail(f"worker {p.name} exited with {p.returncode} (timeout {timeout} s):\n{tail}")
  return [json.loads(p.result.read_text()) for p in processes]


def _two_workers(tmp_path, prefix, checkpoint_dir=None, pause=0.0):
  ports = _free_ports(2)
  return [_start(tmp_path, f"{prefix}{i}", ports, i, checkpoint_dir, pause) for i in (0, 1)]


def _assert_same_weights(first: dict, second: dict) -> None:
  assert len(first["weights"]) == len(second["weights"]) > 0
  for a, b in zip(first["weights"], second["weights"]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """Two workers sharing a checkpoint folder, and a single process without a strategy."""
  tmp_path = tmp_path_factory.mktemp("uninterrupted")
  processes = _two_workers(tmp_path, "worker", tmp_path / "checkpoints") + [
      _start(tmp_path, "single", [], 0)]
  return tmp_path, _finish(processes)


def test_two_workers_train_as_one_process(uninterrupted):
  tmp_path, (worker0, worker1, single) = uninterrupted
  _assert_same_weights(worker0, worker1)
  h, reference = worker0["history"], single["history"]
  assert h["step"] == reference["step"] and h["step"][-1] == STEPS
  np.testing.assert_allclose(h["train_nll"], reference["train_nll"], atol=LOSS_TOLERANCE)
  np.testing.assert_allclose(h["val_nll"], reference["val_nll"], atol=LOSS_TOLERANCE)
  assert reference["val_nll"][-1] < reference["val_nll"][0] - 0.1  # it did learn
  # Only the chief wrote the shared folder; the other worker left nothing behind.
  written = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  assert f"ckpt-{STEPS}.index" in written and f"ckpt-{STEPS}.history.json" in written
  assert not [name for name in written if name.startswith(".")]


def test_shared_checkpoint_survives_a_killed_worker(tmp_path, uninterrupted):
  checkpoints = tmp_path / "checkpoints"
  # Kill worker 1 (SIGKILL) after the first checkpoint, mid-run.
  processes = _two_workers(tmp_path, "killed", checkpoints, pause=3.0)
  deadline = time.monotonic() + TIMEOUT
  while not list(checkpoints.glob("ckpt-*.index")):
    if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
      _finish(processes, timeout=1)
      pytest.fail("no checkpoint was written before the workers stopped")
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGKILL)
  processes[1].wait(timeout=30)
  try:  # the survivor's collectives fail once its peer stops sending heartbeats
    processes[0].wait(timeout=20)
  except subprocess.TimeoutExpired:
    processes[0].kill()
    processes[0].wait(timeout=30)
  for process in processes:
    process.log.close()
  assert not (tmp_path / "killed0.json").exists()  # it did not finish

  # Both restart from the chief's checkpoint and finish as the uninterrupted run did.
  worker0, worker1 = _finish(_two_workers(tmp_path, "resumed", checkpoints))
  _assert_same_weights(worker0, worker1)
  for result in (worker0, worker1):
    h = result["history"]
    assert 0 < h["resumed_from_step"] < STEPS and h["step"][-1] == STEPS
  full = uninterrupted[1][0]["history"]
  resumed = worker0["history"]
  np.testing.assert_allclose(resumed["val_nll"], full["val_nll"][-len(resumed["val_nll"]):],
                             atol=LOSS_TOLERANCE)
