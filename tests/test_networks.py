import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import ShiftAndLogScale
from tfp_realnvp.networks import MLP, SplineParameters
from helpers import randomize_outputs


def test_weights_exist_at_construction_and_output_starts_at_zero():
  net = ShiftAndLogScale(hidden_units=(16, 8), input_units=3, output_units=2)
  # 3 dense layers, kernel and bias each
  assert len(net.trainable_variables) == 6
  shift, log_scale = net(tf.random.normal([5, 3]), 2)
  np.testing.assert_array_equal(shift.numpy(), 0.0)
  np.testing.assert_array_equal(log_scale.numpy(), 0.0)


def test_log_scale_is_bounded():
  net = ShiftAndLogScale(hidden_units=(8,), input_units=1, output_units=1, log_scale_bound=2.0)
  for v in net.output_layer.trainable_variables:
    v.assign(tf.fill(v.shape, 1e3))
  _, log_scale = net(tf.constant([[5.0], [-5.0], [100.0]]), 1)
  assert np.all(np.abs(log_scale.numpy()) <= 2.0)
  assert np.all(np.isfinite(log_scale.numpy()))


@pytest.mark.parametrize("batch_shape", [[], [4], [3, 5]])
def test_any_batch_shape(batch_shape):
  net = ShiftAndLogScale(hidden_units=(8,), input_units=2, output_units=3)
  randomize_outputs(net)
  x = tf.random.normal(batch_shape + [2])
  shift, log_scale = net(x, 3)
  assert shift.shape == batch_shape + [3]
  assert log_scale.shape == batch_shape + [3]
  # Same as evaluating each row separately.
  flat_shift, _ = net(tf.reshape(x, [-1, 2]), 3)
  np.testing.assert_allclose(tf.reshape(shift, [-1, 3]).numpy(), flat_shift.numpy(), atol=1e-6)


def test_usable_as_tfp_shift_and_log_scale_fn():
  net = ShiftAndLogScale(hidden_units=(8,), input_units=1, output_units=1)
  coupling = tfp.bijectors.RealNVP(num_masked=1, shift_and_log_scale_fn=net)
  x = tf.random.normal([6, 2])
  np.testing.assert_allclose(coupling.forward(x).numpy(), x.numpy())  # identity at init
  assert len(coupling.trainable_variables) == len(net.trainable_variables)


def test_lazy_build_when_sizes_unknown():
  net = ShiftAndLogScale(hidden_units=(8,))
  assert net.trainable_variables == []
  shift, _ = net(tf.zeros([2, 3]), 4)
  assert shift.shape == [2, 4]
  assert len(net.trainable_variables) == 4


def test_conditioning_and_its_errors():
  net = ShiftAndLogScale(hidden_units=(8,), input_units=1, output_units=1, conditional_size=2)
  randomize_outputs(net)
  x = tf.random.normal([4, 1])
  a, _ = net(x, 1, conditional_input=tf.constant([[1.0, 0.0]] * 4))
  b, _ = net(x, 1, conditional_input=tf.constant([0.0, 1.0]))  # broadcast over the batch
  assert a.shape == b.shape == [4, 1]
  assert not np.allclose(a.numpy(), b.numpy())
  with pytest.raises(ValueError, match="no conditional_input"):
    net(x, 1)
  with pytest.raises(ValueError, match="last dimension 2"):
    net(x, 1, conditional_input=tf.zeros([4, 3]))
  plain = ShiftAndLogScale(hidden_units=(8,), input_units=1, output_units=1)
  with pytest.raises(ValueError, match="not conditional"):
    plain(x, 1, conditional_input=tf.zeros([4, 2]))


def test_wrong_input_size_and_bad_arguments():
  net = ShiftAndLogScale(hidden_units=(8,), input_units=2, output_units=2)
  with pytest.raises(ValueError, match="last dimension 2"):
    net(tf.zeros([3, 5]), 2)
  with pytest.raises(ValueError, match="output units"):
    net(tf.zeros([3, 2]), 7)
  with pytest.raises(ValueError, match="hidden_units"):
    ShiftAndLogScale(hidden_units=())
  with pytest.raises(ValueError, match="log_scale_bound"):
    ShiftAndLogScale(log_scale_bound=0.0)


def test_float64():
  net = ShiftAndLogScale(hidden_units=(8,), input_units=1, output_units=1, dtype=tf.float64)
  shift, log_scale = net(np.zeros([2, 1]), 1)
  assert shift.dtype == tf.float64 and log_scale.dtype == tf.float64
  assert all(v.dtype == tf.float64 for v in net.trainable_variables)


def test_spline_network_parameters_at_init():
  net = SplineParameters((8,), input_units=2, output_units=3, num_bins=6, bound=2.5)
  widths, heights, slopes = net(tf.random.normal([4, 2]), 3)
  assert widths.shape == [4, 3, 6] and heights.shape == [4, 3, 6] and slopes.shape == [4, 3, 5]
  np.testing.assert_allclose(widths.numpy(), 5.0 / 6, rtol=1e-6)
  np.testing.assert_allclose(heights.numpy(), 5.0 / 6, rtol=1e-6)
  np.testing.assert_allclose(slopes.numpy(), 1.0, rtol=1e-6)
  for v in net.trainable_variables:
    v.assign(3.0 * tf.random.normal(v.shape))
  widths, heights, slopes = net(tf.random.normal([4, 2]), 3)
  np.testing.assert_allclose(widths.numpy().sum(-1), 5.0, rtol=1e-5)
  assert widths.numpy().min() >= 5.0 * 1e-3 * (1 - 1e-5) and slopes.numpy().min() > 0
  assert net.get_config()["num_bins"] == 6


def test_one_mlp_behind_both_heads_and_finite_for_huge_inputs():
  mlp = MLP((8,), input_units=2, output_units=3, conditional_size=1)
  assert mlp(tf.zeros([4, 2]), conditional_input=tf.ones([1])).shape == [4, 3]
  affine = ShiftAndLogScale((8,), input_units=2, output_units=3, log_scale_bound=None)
  spline = SplineParameters((8,), input_units=2, output_units=3, num_bins=4)
  assert isinstance(affine, MLP) and isinstance(spline, MLP)
  assert affine.output_layer.units == 6 and spline.output_layer.units == 3 * 11
  for net in (affine, spline):
    for v in net.trainable_variables:
      v.assign(tf.random.normal(v.shape, stddev=3.0))
  huge = tf.constant([[1e33, -1e35], [3e38, 0.0]])
  shift, log_scale = affine(huge, 3)
  assert np.all(np.isfinite(shift.numpy()))
  assert np.all(np.abs(log_scale.numpy()) <= 30.0)  # unbounded, but exp() stays finite
  assert all(np.all(np.isfinite(p.numpy())) for p in spline(huge, 3))
