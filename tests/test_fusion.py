"""computed_once: exactly the identity, in value and in derivatives."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from involution_jax.ops import computed_once


def test_computed_once_is_exact():
  special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.5, 1e38], np.float32)
  for dtype in (jnp.float32, jnp.bfloat16):
    a = jnp.asarray(special, dtype)
    out = jax.jit(computed_once)(a)
    chex.assert_type(out, dtype)
    np.testing.assert_array_equal(
      np.asarray(out, np.float32).view(np.uint32), np.asarray(a, np.float32).view(np.uint32)
    )


def test_computed_once_differentiates_as_the_identity():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  f = lambda x: jnp.sum(jnp.sin(computed_once(x * 2.0)))
  check_grads(f, (x,), order=2, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2)
  np.testing.assert_array_equal(jax.grad(f)(x), 2.0 * jnp.cos(x * 2.0))
  tangent = jnp.ones_like(x)
  np.testing.assert_array_equal(jax.jvp(computed_once, (x,), (tangent,))[1], tangent)


def test_a_residual_chain_is_not_recomputed_by_each_block():
  # relu(a + relu(b + relu(c + d))): without computed_once XLA re-derives the
  # inner sums inside the fusion of each outer one.
  def chain(a, b, c, d, once):
    wrap = computed_once if once else (lambda v: v)
    inner = wrap(jax.nn.relu(c + d))
    middle = wrap(jax.nn.relu(b + inner))
    return inner @ a, middle @ a, wrap(jax.nn.relu(a + middle)) @ a

  args = [jnp.ones((64, 64))] * 4
  adds = lambda once: (
    jax.jit(lambda *a: chain(*a, once)).lower(*args).compile().as_text().count(" add(")
  )
  assert adds(True) < adds(False)
