"""involution-jax: involution and RedNet in JAX / Flax."""

from involution_jax.layers import Involution
from involution_jax.ops import involution

__all__ = ["Involution", "involution"]
