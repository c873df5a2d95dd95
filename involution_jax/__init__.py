"""involution-jax: involution and RedNet in JAX / Flax.

    from involution_jax import Involution, RedNet, involution, rednet50
"""

from involution_jax.layers import Involution
from involution_jax.ops import involution
from involution_jax.models import create_model
from involution_jax.rednet import RedNet, rednet26, rednet38, rednet50, rednet101, rednet152

__all__ = ["Involution", "RedNet", "create_model", "involution", "rednet26", "rednet38",
           "rednet50", "rednet101", "rednet152"]
