"""Deprecated alias of `involution_jax.weights.pretrained`:
import from there."""

import warnings

from involution_jax.weights.pretrained import *  # noqa: F403

warnings.warn(
  "involution_jax.pretrained is deprecated: use involution_jax.weights.pretrained",
  DeprecationWarning,
  stacklevel=1 if __name__ == "__main__" else 2,  # with -m: said in __main__
)
