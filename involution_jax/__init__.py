"""involution-jax: involution and RedNet in JAX / Flax.

    from involution_jax import Involution, RedNet, involution, rednet50

The package's rooms, lowest first: `host` (the machine: cache, workdir lock, console) <-
`ops` (the operator, pure JAX) <- `models` (Flax modules) and `data` <- `configs` <-
`weights` (checkpoints, official formats, the zoo, `ModelInfo`) <- `tasks` <- `training`,
`inference` and `nnx` <- `cli` (the commands). See docs/architecture.md.
"""

from involution_jax.models import (
  Involution,
  RedNet,
  create_model,
  rednet26,
  rednet38,
  rednet50,
  rednet101,
  rednet152,
)
from involution_jax.ops import involution

__all__ = [
  "Involution",
  "RedNet",
  "create_model",
  "involution",
  "rednet26",
  "rednet38",
  "rednet50",
  "rednet101",
  "rednet152",
]
