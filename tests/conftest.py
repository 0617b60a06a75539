"""Shared pytest set-up: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
  tf_keras.utils.set_random_seed(1234)
  yield


@pytest.fixture
def rng():
  return np.random.default_rng(0)
