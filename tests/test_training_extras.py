"""fit's TensorBoard summaries, tf.distribute strategies and conditional data."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfp_realnvp import RealNVP, datasets, fit


def _events(log_dir):
  tags = {}
  for root, _, files in os.walk(log_dir):
    for name in files:
      if "tfevents" not in name:
        continue
      for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
        for value in event.summary.value:
          tags.setdefault(value.tag, []).append(event.step)
  return tags


def test_tensorboard_scalars_and_density_images(tmp_path):
  x = datasets.moons(2000)
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  fit(flow, x, steps=60, batch_size=100, eval_every=20, validation_data=0.1,
      log_dir=tmp_path, image_every=2, progress=False)
  tags = _events(tmp_path)
  for tag in ("nll/train", "nll/validation", "learning_rate", "nonfinite_steps"):
    assert tags.get(tag) == [20, 40, 60], (tag, tags)
  assert tags.get("density") == [40, 60]  # every 2nd epoch and the last


def test_conditional_fit_with_per_point_conditions():
  x, labels = datasets.moons(4000, seed=0, return_labels=True)
  c = np.eye(2, dtype=np.float32)[labels]
  flow = RealNVP(2, num_couplings=4, hidden_units=(32, 32), conditional_size=2)
  history = fit(flow, x, conditional_input=c, steps=400, batch_size=200,
                validation_data=0.1, progress=False)
  assert history.val_nll[-1] < history.val_nll[0]
  right = -float(tf.reduce_mean(flow.log_prob(x[:500], conditional_input=c[:500])))
  wrong = -float(tf.reduce_mean(flow.log_prob(x[:500], conditional_input=c[:500, ::-1])))
  assert right < wrong - 1.0  # the condition carries the class
  with pytest.raises(ValueError, match="one conditioning vector per point"):
    fit(flow, x, conditional_input=c[:10], steps=1, progress=False)
  with pytest.raises(ValueError, match=r"tuple \(x_val, conditional_input_val\)"):
    fit(flow, x, conditional_input=c, validation_data=x[:10], steps=1, progress=False)


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
