"""fit's TensorBoard summaries: scalars per epoch, density images for 2-D flows."""

import os

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
