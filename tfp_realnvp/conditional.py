"""A conditional flow with its condition bound: ``p(x | c)`` as a batched TFP distribution."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import tensor_util

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["ConditionedRealNVP"]


class ConditionedRealNVP(tfd.Distribution):
  """``p(x | c)``: a conditional RealNVP with ``conditional_input=c`` bound.

  What ``RealNVP.condition(c)`` returns, for wherever TFP expects a distribution
  whose parameters depend on other values: a likelihood in a joint
  distribution, a ``DistributionLambda`` output, an amortized surrogate
  posterior, a component of ``tfd.MixtureSameFamily``.  For ``c`` of shape
  ``batch_shape + [conditional_size]`` it has that batch shape and event shape
  ``[event_size]``, as any batched TFP distribution.  Its
  ``trainable_variables`` are the flow's (shared); it is differentiable in
  ``c``, and slicing (``dist[:2]``) slices ``c``.

  Example (a likelihood whose condition depends on a parameter):

  ```python
  flow = tfp_realnvp.RealNVP(2, conditional_size=1, num_couplings=4)

  @tfd.JointDistributionCoroutineAutoBatched
  def model():
    theta = yield tfd.Normal(0.0, 1.0, name="theta")
    yield flow.condition(theta[..., None], name="x")

  draws = model.sample(5, seed=(1, 2))          # theta: [5], x: [5, 2]
  model.log_prob(draws)                         # [5]
  ```

  Args:
    flow: a conditional :class:`~tfp_realnvp.RealNVP`.
    conditional_input: the condition, shape ``[..., conditional_size]``.
    validate_args, name: as for any TFP distribution.
  """

  def __init__(self, flow, conditional_input, validate_args: bool = False,
               name: str = "ConditionedRealNVP"):
    parameters = dict(locals())
    with tf.name_scope(name) as name_scope:
      self._flow = flow
      # A tf.Variable condition stays a reference, read at each call.
      self._conditional_input = tensor_util.convert_nonref_to_tensor(
          conditional_input, dtype=flow.dtype)
      super().__init__(dtype=flow.dtype, reparameterization_type=flow.reparameterization_type,
                       validate_args=validate_args, allow_nan_stats=True,
                       parameters=parameters, name=name_scope.rstrip("/") or name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {"conditional_input": tfp.util.ParameterProperties(event_ndims=1)}

  @property
  def flow(self):
    """The conditional flow whose weights this distribution uses."""
    return self._flow

  def _event_shape(self):
    return tf.TensorShape([self._flow.event_size])

  def _event_shape_tensor(self):
    return tf.constant([self._flow.event_size], tf.int32)

  def _batch_shape(self):
    return self._conditional_input.shape[:-1]

  def _batch_shape_tensor(self):
    return tf.shape(self._conditional_input)[:-1]

  def _sample_n(self, n, seed=None):
    return self._flow.sample(n, conditional_input=self._conditional_input, seed=seed)

  def _log_prob(self, x):
    return self._flow.log_prob(x, conditional_input=self._conditional_input)

  def _sample_and_log_prob(self, sample_shape, seed):
    return self._flow.experimental_sample_and_log_prob(
        sample_shape, seed=seed, conditional_input=self._conditional_input)

  def _default_event_space_bijector(self, *args, **kwargs):
    return tfb.Identity(validate_args=self.validate_args)
