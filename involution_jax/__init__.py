"""involution-jax: involution and RedNet in JAX / Flax.

    from involution_jax import Involution, RedNet, involution, rednet50

The package's layers, lowest first: `ops` (the operator, pure JAX) <- `models`
(Flax modules) and `data` <- checkpoints and weights <- tasks and the training
step <- the trainer and evaluator <- the command-line tools. See
docs/architecture.md.
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
