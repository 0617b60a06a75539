"""One worker of tests/test_multiworker.py (run as ``python multiworker_worker.py SPEC``).

SPEC is a JSON object: ``ports`` (every worker's port on 127.0.0.1; empty: a
single process without a strategy), ``index`` (this worker's), ``steps``,
``checkpoint_dir`` (or null), ``result`` (where to write the JSON result) and
``pause_after_checkpoint`` (seconds to sleep after each checkpoint, so that
the test can kill a worker mid-run).  Trains
``RealNVP(2, num_couplings=2, hidden_units=(16,))`` on two moons with
``fit(strategy=MultiWorkerMirroredStrategy(), checkpoint_dir=...)`` and writes
its final weights, history and the step it resumed from.
"""

import json
import os
import sys
import time

SPEC = json.loads(sys.argv[1])
if SPEC["ports"]:
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{port}" for port in SPEC["ports"]]},
      "task": {"type": "worker", "index": SPEC["index"]}})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)  # two workers share the test's CPUs
tf.config.threading.set_inter_op_parallelism_threads(2)

import tfp_realnvp  # noqa: E402
from tfp_realnvp.training import checkpoints as checkpoints_module  # noqa: E402


def _pause_after_each_checkpoint(seconds: float) -> None:
  """A window after each checkpoint in which the test kills a worker mid-run."""
  save = checkpoints_module.Checkpoints.save

  def slow_save(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(seconds)

  checkpoints_module.Checkpoints.save = slow_save


def main() -> int:
  strategy = tf.distribute.MultiWorkerMirroredStrategy() if SPEC["ports"] else None
  if SPEC.get("pause_after_checkpoint"):
    _pause_after_each_checkpoint(SPEC["pause_after_checkpoint"])
  x = tfp_realnvp.datasets.moons(4096, 0.05, seed=0)
  x_val = tfp_realnvp.datasets.moons(1024, 0.05, seed=1)
  tf_keras.utils.set_random_seed(0)
  scope = strategy.scope() if strategy is not None else tf.name_scope("single")
  with scope:
    flow = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(16,), seed=0)
  history = tfp_realnvp.fit(
      flow, x, steps=SPEC["steps"], batch_size=64, eval_every=SPEC["steps"] // 6,
      validation_data=x_val, restore_best_weights=False, checkpoint_dir=SPEC["checkpoint_dir"],
      strategy=strategy, seed=0, progress=False)
  weights = [np.asarray(v.numpy()).tolist() for v in flow.trainable_variables]
  with open(SPEC["result"], "w", encoding="utf-8") as f:
    json.dump({"history": history.as_dict(), "weights": weights}, f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
