"""Shared test fixtures. The test process simulates 8 CPU devices."""

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled."""
  with jax.enable_x64(True):
    yield
