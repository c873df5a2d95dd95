"""Deprecated alias of `involution_jax.weights.paddle`:
import from there."""

import warnings

from involution_jax.weights.paddle import *  # noqa: F403

warnings.warn(
  "involution_jax.paddle is deprecated: use involution_jax.weights.paddle",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)
