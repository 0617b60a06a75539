"""The compiled step: non-finite steps skipped, rollback and learning-rate cut,
tf.distribute strategies, and no graph kept alive after fit."""

import gc
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import RealNVP, TrainingDiverged, datasets, fit
from tfp_realnvp.training import default_optimizer

tfd = tfp.distributions


def _square_root_model():
  """A Gaussian with scale sqrt(v): a large step sends v negative and log_prob to NaN."""
  v = tf.Variable([1.0, 1.0])
  return tfd.MultivariateNormalDiag(loc=tf.zeros(2),
                                    scale_diag=tfp.util.DeferredTensor(v, tf.sqrt)), v


def _reckless(steps):
  return default_optimizer(steps, learning_rate=5.0, schedule="constant", clip_norm=None)


def test_nonfinite_steps_never_reach_the_weights_and_stop_training():
  dist, v = _square_root_model()
  x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32) * 0.01
  with pytest.raises(TrainingDiverged, match="consecutive steps gave a non-finite"):
    fit(dist, x, steps=500, batch_size=64, optimizer=_reckless(500), trainable_variables=[v],
        max_nonfinite_steps=5, progress=False, jit_compile=False)
  assert np.all(np.isfinite(v.numpy()))


def test_rollback_and_learning_rate_cut_recover_from_divergence():
  dist, v = _square_root_model()
  x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32) * 0.01
  history = fit(dist, x, steps=200, batch_size=64, optimizer=_reckless(200),
                trainable_variables=[v], nonfinite_learning_rate_factor=0.1,
                max_nonfinite_steps=20, eval_every=50, progress=False, jit_compile=False)
  assert sum(history.nonfinite_steps) > 0  # divergence happened and was reported
  assert np.all(np.isfinite(v.numpy())) and np.all(v.numpy() > 0)
  assert all(math.isfinite(t) for t in history.train_nll)
  assert history.learning_rate[-1] < 5.0


def test_a_finite_model_has_no_skipped_steps():
  loc = tf.Variable([0.0, 0.0])
  dist = tfd.MultivariateNormalDiag(loc=loc)
  x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
  history = fit(dist, x, steps=10, batch_size=64, progress=False, trainable_variables=[loc])
  assert np.all(np.isfinite(loc.numpy())) and sum(history.nonfinite_steps) == 0


def test_training_diverged_carries_the_history_so_far():
  scale = tf.Variable([1.0, 1.0])
  dist = tfd.MultivariateNormalDiag(loc=tf.zeros(2), scale_diag=scale)
  x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
  fit(dist, x, steps=20, batch_size=64, eval_every=10, progress=False,
      trainable_variables=[scale])
  scale.assign([0.0, 0.0])  # every log_prob is now non-finite
  with pytest.raises(TrainingDiverged) as info:
    fit(dist, x, steps=100, batch_size=64, eval_every=10, max_nonfinite_steps=5,
        progress=False, trainable_variables=[scale])
  assert info.value.step == 10
  assert info.value.history is not None and info.value.history.step == []


def _live_graphs() -> int:
  gc.collect()
  return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


def test_repeated_fits_keep_no_traced_graph_alive():
  # Each fit traces new graphs; a reference left in a global registry (TFP's
  # bijector cache, tf_keras's gradient aggregation) kept every one alive.
  x = datasets.moons(1000, seed=0)
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  fit(flow, x, steps=4, batch_size=100, validation_data=0.1, progress=False)
  after_first = _live_graphs()
  for _ in range(3):
    fit(flow, x, steps=4, batch_size=100, validation_data=0.1, progress=False)
    fit(RealNVP(2, num_couplings=2, hidden_units=(8,)), x, steps=4, batch_size=100,
        progress=False)
  assert _live_graphs() <= after_first


def test_strategy_needs_variables_built_in_its_scope():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,))
  with pytest.raises(ValueError, match="strategy.scope"):
    fit(flow, datasets.moons(500), steps=2, batch_size=50, strategy=strategy, progress=False)

_MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras
    from tfp_realnvp import RealNVP, datasets, fit

    x = datasets.moons(3000, seed=0)
    common = dict(steps=60, batch_size=200, eval_every=10, learning_rate=1e-3, seed=0,
                  progress=False, validation_data=0.1)

    tf_keras.utils.set_random_seed(0)
    single = RealNVP(2, num_couplings=3, hidden_units=(16, 16))
    h_single = fit(single, x, jit_compile=False, **common)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    tf_keras.utils.set_random_seed(0)
    with strategy.scope():
      mirrored = RealNVP(2, num_couplings=3, hidden_units=(16, 16))
    h_mirrored = fit(mirrored, x, strategy=strategy, **common)
    json.dump({"replicas": strategy.num_replicas_in_sync,
               "single": h_single.train_nll, "mirrored": h_mirrored.train_nll,
               "single_val": h_single.val_nll, "mirrored_val": h_mirrored.val_nll},
              sys.stdout)
""")


def test_mirrored_strategy_matches_single_device_training():
  # Logical devices must be configured before TensorFlow starts: a subprocess.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True,
                          timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  values = json.loads(result.stdout.strip().splitlines()[-1])
  assert values["replicas"] == 2
  np.testing.assert_allclose(values["mirrored"], values["single"], atol=2e-3)
  np.testing.assert_allclose(values["mirrored_val"], values["single_val"], atol=2e-3)
