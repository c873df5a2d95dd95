"""Steering XLA's fusion: values computed once instead of in every consumer."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def computed_once(a: jax.Array) -> jax.Array:
  """`a` itself, as an array XLA computes once rather than in each of its consumers.

  XLA's CPU fusion recomputes cheap elementwise producers in every consumer:
  an involution output (a K*K-tap sum) read by BatchNorm's statistics, its
  normalisation and the backward pass was summed up to 8 times, and each
  residual block re-derived the outputs of all the blocks before it in its
  stage. Division is an op it will not duplicate; here by ones that it cannot
  prove constant (a < -a and -a < a never both hold, not even for NaN), so the
  result is exact. Differentiation sees the identity.
  """
  never = (a < -a) & (-a < a)
  return a / jnp.where(never, 2, 1).astype(a.dtype)


@computed_once.defjvp
def _computed_once_jvp(primals, tangents):
  return computed_once(primals[0]), tangents[0]
